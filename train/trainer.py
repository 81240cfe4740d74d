"""`allx train`: split -> frozen pretrained backbone -> cached features -> head -> (fine-tune) -> evaluate.

Read top to bottom, this is the whole story of a run. The saved model is always the full end-to-end
Keras model (raw RGB 0..255 in, probabilities out) even though the head was trained on cached features.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from allx import layout
from allx.decision import DEFAULT_TARGET_SENSITIVITY, check_target
from allx.errors import AllxError, DataError, ModelError, UsageError
from allx.files import sha256_file, write_atomic, write_json
from allx.train.augment import Augmentation, parse_augmentation
from allx.train.background_swap import DEFAULT_COPIES, BackgroundSwap, Composites, check_cell_masks, check_copies
from allx.train.backbones import DEFAULT_AUGMENT, check_features, feature_base, get_backbone  # noqa: F401
from allx.train.charts import save_split_charts
from allx.train.cluster import DEFAULT_WORKER_TIMEOUT, read_cluster
from allx.train.distribute import check_strategy, describe_strategy, make_strategy, uses_cluster
from allx.train.evaluate import predict_images
from allx.train.features import (cache_file, cache_key, content_hashes, default_cache_dir, extract_features,
                                 feature_cache_parts)
from allx.train.groups import DEFAULT_BLOCK_SIZE
from allx.train.image_pipeline import image_dataset
from allx.train.metrics import classification_metrics
from allx.train.model_card import write_model_card
from allx.train.model_io import save_keras_model
from allx.train.publish import check_out_dir, discard_staging, make_staging_dir, publish_run
from allx.train.split import make_split, read_split, write_split
from allx.train.view_features import extract_view_features

# Keras, and the modules that import it at their top (head, batches, callbacks, plots), are imported inside
# the functions that need them: `allx --help` and the data commands never pay for TensorFlow.

Progress = Callable[[str, int, int], None]  # (stage, done, total)



class TrainingInterrupted(AllxError):
    exit_code = 130


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    out_dir: Path
    split_path: Path | None = None
    backbone: str = "resnet50"
    weights: str | None = None  # None = the backbone's default
    head: str | None = None  # None: the backbone's default_head (ResNet50 and Lite0: logreg)
    features: str | None = None  # "last" | "multiscale"; None: the backbone's default_features
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-4  # measured: 1e-3 overfits a 62k-wide Flatten head within 2 epochs
    seed: int = 42
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-5
    class_weights: bool = False
    image_size: int | None = None  # None = the backbone's input size
    patience: int = 5
    val: float = 0.15
    test: float = 0.15
    cache_dir: Path | None = None
    augment: str | None = None  # comma-separated subset of train.augment.KINDS, "" / "none"; None: the backbone's
    augment_copies: int = 2  # jittered views added to the clean ones per image (stain, crop, blur)
    cell_masks: Path | None = None  # masks with the data's file names: background swap (train.background_swap)
    swap_copies: int = DEFAULT_COPIES  # composites per training image with cell_masks
    strategy: str = "auto"  # tf.distribute strategy for the image-based phases (train.distribute)
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT  # seconds a multi-worker run waits for a peer (train.cluster)
    group_by: str = "near-duplicate"  # a SplitKind code: how a split made here keeps images together
    groups_file: Path | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    similarity: float | None = None  # join embedding near-neighbours at this cosine similarity (None: not)
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY  # the logreg head's cross-fitted operating point


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path
    metrics: dict
    history: dict
    skipped: tuple = field(default_factory=tuple)


def with_backbone_recipe(config: TrainConfig) -> TrainConfig:
    """The config with --head, --features and --augment filled in from the backbone's registered recipe where not given
    (an unknown backbone name is a ModelError here, before the data is read)."""
    backbone = get_backbone(config.backbone)
    return replace(config, head=config.head or backbone.default_head,
                   features=config.features or backbone.default_features,
                   augment=backbone.default_augment if config.augment is None else config.augment)


def validate_config(config: TrainConfig) -> None:
    """Reject impossible options before any work starts ("got X, expected Y")."""
    from allx.train.head import HEADS

    checks = [
        (config.epochs >= 1, f"--epochs: got {config.epochs}, expected >= 1"),
        (config.batch_size >= 1, f"--batch-size: got {config.batch_size}, expected >= 1"),
        (0 < config.learning_rate < 1, f"--learning-rate: got {config.learning_rate}, expected 0 < lr < 1"),
        (config.fine_tune_layers >= 0, f"--fine-tune-layers: got {config.fine_tune_layers}, expected >= 0"),
        (config.head is None or config.head in HEADS,
         f"--head: got {config.head!r}, expected one of {', '.join(HEADS)}"),
        (config.image_size is None or config.image_size >= 32,
         f"--image-size: got {config.image_size}, expected >= 32"),
        (config.patience >= 1, f"--patience: got {config.patience}, expected >= 1"),
        (config.worker_timeout > 0, f"--worker-timeout: got {config.worker_timeout}, expected > 0 seconds"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    parse_augmentation(config.augment or "", config.augment_copies)
    check_target(config.target_sensitivity)
    if config.features is not None:
        check_features(get_backbone(config.backbone), config.features)
    check_strategy(config.strategy)
    if config.cell_masks is not None:
        check_swap(config)
    if not Path(config.data_dir).is_dir():
        raise DataError(f"data directory not found: got {config.data_dir}, expected a folder of class folders")


def check_swap(config: TrainConfig) -> None:
    """--cell-masks adds cached composite views to the frozen base's training features: one process, no
    fine-tuning on images (which would train on the fields alone again)."""
    check_copies(config.swap_copies)
    if config.fine_tune_layers:
        raise UsageError(f"--cell-masks with --fine-tune-layers {config.fine_tune_layers}: got both, expected one "
                         "(the composites are cached features of the frozen base)")
    if uses_cluster(config.strategy) and os.environ.get("TF_CONFIG"):
        raise UsageError("--cell-masks with a TF_CONFIG cluster: got both, expected one process (composites are "
                         "not sharded across workers)")


def train_model(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Run one training end to end and publish the run folder (see models/README.md) as a whole.

    Everything is written into a hidden staging folder beside --out first (train.publish): a failed or
    interrupted run leaves --out exactly as it was. With a TF_CONFIG cluster of two or more workers,
    train.multiworker runs it (this process becomes one worker of the run).
    """
    config = with_backbone_recipe(config)
    validate_config(config)
    cluster = cluster_for(config.strategy)
    if cluster is not None and cluster.size > 1:
        from allx.train.multiworker import train_multiworker  # (it builds on this module's steps)

        return train_multiworker(config, cluster, progress)
    out_dir = Path(config.out_dir)
    check_out_dir(out_dir)
    staging = make_staging_dir(out_dir)
    try:
        result = train_into(config, staging, progress)
    except (TrainingInterrupted, KeyboardInterrupt):
        if not (staging / layout.MODEL_KERAS).exists():
            discard_staging(staging)
        raise TrainingInterrupted(interrupted_message(staging, out_dir)) from None
    except BaseException:
        discard_staging(staging)
        raise
    publish_run(staging, out_dir)  # a failure here leaves the finished run in the staging folder it names
    return TrainResult(out_dir, out_dir / layout.MODEL_KERAS, result.metrics, result.history, result.skipped)


def train_into(config: TrainConfig, run_dir: Path, progress: Progress | None) -> TrainResult:
    """The whole run, written into `run_dir` (the staging folder)."""
    import keras

    strategy = make_strategy(config.strategy)  # before any other TF operation (multi-worker needs that)
    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone)  # unknown names fail before the data is read
    split = prepare_split(config, run_dir)
    size = (config.image_size, config.image_size) if config.image_size else tuple(backbone.input_size)
    weights = config.weights or backbone.default_weights
    composites = training_composites(config, split, size)  # every mask checked before the backbone is built

    with strategy.scope():  # a no-op on one device; several replicas share each batch otherwise
        # 1. The frozen pretrained backbone, with its preprocessing inside the model.
        pixels, base, feature_map, extractor = build_extractor(backbone, weights, size, config.features)

        # 2. Backbone features once per (data, backbone, weights, size, augmentation), cached on disk;
        #    the training subset as its augmented views (train.view_features).
        #    With --cell-masks the training subset also gets its background swap composites; val and test
        #    stay real fields.
        augmentation = parse_augmentation(config.augment, config.augment_copies)
        features = {name: cached_features(config, extractor, split, name, size, weights, progress, strategy,
                                          augmentation if name == "train" else None,
                                          composites if name == "train" else None)
                    for name in ("train", "val", "test") if split.subset(name)}
        check_some_readable(features)

        # 3. The head, trained on the cached features; the full model is checkpointed on each improvement.
        head = new_head(config, extractor.output_shape[1:], len(split.classes))
        model = full_model(backbone, pixels, head(feature_map))
        write_labels(split.classes, run_dir / layout.LABELS)
        history = fit_head(config, head, model, features, len(split.classes), run_dir, progress)

        # 4. Optional second phase: unfreeze the top layers and fine-tune on (augmented) images.
        if config.fine_tune_layers:
            history["fine_tune"] = fine_tune(config, model, base, split, size, run_dir, progress, features)

    # 5. Save, evaluate on the test subset, and describe the run.
    return finish_run(config, backbone, weights, size, split, (model, head), features, history, run_dir,
                      describe_strategy(strategy))


def cluster_for(strategy: str):
    """The TF_CONFIG cluster this process belongs to when `strategy` runs on several hosts (else None)."""
    return read_cluster(os.environ.get("TF_CONFIG")) if uses_cluster(strategy) else None


def build_extractor(backbone, weights, size, features):
    """(pixels input, frozen base, its feature map, the extractor model): the backbone with its
    preprocessing inside the model, raw RGB 0..255 in."""
    import keras

    pixels = keras.Input(shape=(*size, 3), name="pixels")
    base = feature_base(backbone, weights, (*size, 3), features)
    base.trainable = False
    preprocess = backbone.make_preprocessing()
    feature_map = base(preprocess(pixels), training=False)
    return pixels, base, feature_map, keras.Model(pixels, feature_map, name="extractor")


def full_model(backbone, pixels, probabilities):
    import keras

    return keras.Model(pixels, probabilities, name=f"allx_{backbone.name.replace('-', '_')}")


def check_some_readable(features: dict) -> None:
    if len(features["train"].labels) == 0:
        raise DataError("no readable training images: every image in the train subset failed to load")


def finish_run(config, backbone, weights, size, split, models, features, history, run_dir: Path,
               distribution: dict) -> TrainResult:
    """Save the (model, head) pair, evaluate on the test subset, and describe the run in run_dir."""
    model, head = models
    save_keras_model(model, run_dir / layout.MODEL_KERAS)
    if config.head == "logreg" and not config.fine_tune_layers:
        history["operating_point"] = write_run_point(config, features, split, history, run_dir)
    metrics = evaluate_run(config, model, head, features, split, size, run_dir)
    skipped = tuple(s for fs in features.values() for s in fs.skipped)
    write_run_files(config, backbone, weights, size, split, history, metrics, skipped, run_dir, distribution)
    return TrainResult(run_dir, run_dir / layout.MODEL_KERAS, metrics, history, skipped)


def prepare_split(config: TrainConfig, run_dir: Path):
    """The given split (checked against the data), or a new near-duplicate-aware one saved in the run."""

    if config.split_path:
        split = read_split(config.split_path, config.data_dir)
    else:
        split = make_split(config.data_dir, val=config.val, test=config.test, seed=config.seed,
                           group_by=config.group_by, groups_file=config.groups_file, block_size=config.block_size,
                           similarity=config.similarity)
    if len(split.classes) < 2:
        raise DataError(f"need at least 2 classes, got {len(split.classes)}: {list(split.classes)}")
    if not split.subset("train"):
        raise DataError("the split has no training images")

    meta = {**split.meta, "data_dir": str(Path(config.data_dir).resolve())}
    saved = type(split)(split.classes, split.train, split.val, split.test, meta)
    write_split(saved, run_dir / layout.SPLIT)
    save_split_charts(saved, run_dir / layout.SPLIT)
    return saved


def training_composites(config, split, size) -> Composites | None:
    """The training subset's background swap composites (None without --cell-masks); every training image's
    mask is checked here, before any extraction."""
    if config.cell_masks is None:
        return None
    relpaths = list(split.subset("train"))
    donors = check_cell_masks(config.data_dir, config.cell_masks, relpaths)
    return Composites(BackgroundSwap(Path(config.cell_masks), config.swap_copies), config.data_dir, relpaths,
                      split.labels("train"), size, config.seed, donors)


def cached_features(config, extractor, split, subset, size, weights, progress, strategy=None,
                    augmentation: Augmentation | None = None, composites: Composites | None = None):
    """The subset's backbone features from the cache (extracted on a miss); with an `augmentation` that
    has kinds, every image's augmented views, and with `composites` its background swap composites after
    them (train.view_features)."""
    relpaths, labels = list(split.subset(subset)), split.labels(subset)
    augmentation = augmentation if augmentation and augmentation.kinds else None
    key = feature_cache_key(config, split, subset, size, weights, augmentation, composites)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    report = (lambda done, total: progress(f"features {subset}", done, total)) if progress else None
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if augmentation or composites or replicas > 1:  # (a single view, the image itself, when only the strategy asks)
        return extract_view_features(extractor, Path(config.data_dir), relpaths, labels, size,
                                     augmentation or Augmentation(), cache_file(cache_dir, key), config.seed, report,
                                     strategy, composites=composites)
    return extract_features(extractor, Path(config.data_dir), relpaths, labels, size,
                            cache_file(cache_dir, key), report)


def feature_cache_key(config, split, subset, size, weights, augmentation: Augmentation | None,
                      composites: Composites | None = None) -> str:
    """The cache key of a subset's features (`augmentation` None or with kinds): everything they depend on."""
    relpaths, labels = list(split.subset(subset)), split.labels(subset)
    weights_id = weights if weights in ("imagenet", "none") else weights_file_sha256(weights)
    settings = {"augment": augmentation.key() if augmentation else None,
                "augment_seed": config.seed if augmentation and augmentation.is_random else None}
    if config.features not in (None, "last"):  # (absent for the last map: caches made before stay valid)
        settings["features"] = {"kind": config.features, "taps": list(get_backbone(config.backbone).taps)}
    if composites is not None:  # (absent without them: caches made before stay valid)
        settings["background_swap"] = {**composites.swap.key(content_hashes(composites.swap.masks_dir, relpaths)),
                                       "seed": config.seed}
    return cache_key(feature_cache_parts(config.data_dir, relpaths, labels, split.classes, config.backbone,
                                         weights_id, size, settings, seed=config.seed if weights == "none" else None))


def weights_file_sha256(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights: file not found, got {path}")
    return sha256_file(path)


def new_head(config: TrainConfig, feature_shape, n_classes: int):
    """A fresh head, initialised from config.seed alone: the same seed and features give the same head
    whatever was built before it (a train run, or one fold of --cv)."""
    import keras

    from allx.train.head import build_head

    keras.utils.set_random_seed(config.seed)
    return build_head(feature_shape, n_classes, config.head)


def fit_head(config, head, model, features, n_classes, run_dir, progress) -> dict:
    """The run's head on its cached features (fit_head_on_features), the full model checkpointed on each
    improvement so that Ctrl-C keeps a good one."""
    from allx.train.callbacks import CheckpointFullModel

    val = features.get("val")
    checkpoint = CheckpointFullModel(model, run_dir / layout.MODEL_KERAS, "val_loss" if val else "loss")
    try:
        return fit_head_on_features(config, head, (features["train"].features, features["train"].labels, None),
                                    (val.features, val.labels, None) if val else None, n_classes, "head", progress,
                                    [checkpoint])
    except KeyboardInterrupt:
        raise TrainingInterrupted("interrupted") from None


def fit_head_on_features(config, head, train, val, n_classes, stage, progress, callbacks=()) -> dict:
    """Adam + categorical cross-entropy on cached features; early stopping on val loss, best weights kept.

    The one way a head is trained: `allx train` and every fold of `allx train --cv`. `train` and `val` are
    (features, labels, rows): the rows of a cache to use (None: all), so a fold reads its part of one cache.
    """
    import keras

    from allx.train.batches import feature_batches
    from allx.train.callbacks import EpochProgress

    features, labels, rows = train
    picked = labels if rows is None else labels[rows]
    weights = balanced_class_weights(picked, n_classes) if config.class_weights else None
    if config.head == "logreg":  # solved, not stepped: no epochs, early stopping or checkpoints
        from allx.train.logistic import fit_logistic_head

        return fit_logistic_head(head, train, val, n_classes, weights, progress, stage)
    train_batches = feature_batches(features, labels, n_classes, config.batch_size, shuffle=True, seed=config.seed,
                                    class_weights=weights, rows=rows)
    val_batches = feature_batches(*val[:2], n_classes, config.batch_size, False, rows=val[2]) if val else None
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="categorical_crossentropy",
                 metrics=["accuracy"])
    monitor = "val_loss" if val_batches else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True)
    fitted = head.fit(train_batches, validation_data=val_batches, epochs=config.epochs, shuffle=False,
                      callbacks=[stopper, *callbacks, EpochProgress(stage, config.epochs, progress)], verbose=0)
    return {key: [float(v) for v in values] for key, values in fitted.history.items()}


def balanced_class_weights(labels, n_classes) -> dict[int, float]:
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) for c, w in zip(present, weights)} | {
        c: 1.0 for c in range(n_classes) if c not in present}


def interrupted_message(staging: Path, out_dir: Path) -> str:
    kept = f"{out_dir} was left as it was" if out_dir.exists() else f"{out_dir} was not created"
    checkpoint = staging / layout.MODEL_KERAS
    if checkpoint.exists():
        return f"interrupted; {kept}; the last good checkpoint of this run is kept at {checkpoint}"
    return f"interrupted before the first epoch finished; {kept} and no model was written"


def fine_tune(config, model, base, split, size, run_dir, progress, features) -> dict:
    """Unfreeze the top N backbone layers (BatchNorm stays frozen) and train end to end on images, each
    epoch on one random augmented view of every readable training image (a tf.data pipeline)."""
    import keras

    from allx.train.callbacks import CheckpointFullModel, EpochProgress

    base.trainable = True
    for layer in base.layers[:-config.fine_tune_layers]:
        layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # keep the pretrained statistics (keras-io fine-tuning advice)
    model.compile(optimizer=keras.optimizers.Adam(config.fine_tune_learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    n = len(split.classes)
    augmentation = parse_augmentation(config.augment, config.augment_copies)
    subsets = {name: readable(split, name, features) for name in ("train", "val")}
    train = image_dataset(config.data_dir, *subsets["train"], n, size, config.batch_size, augmentation,
                          shuffle=True, seed=config.seed)
    val = image_dataset(config.data_dir, *subsets["val"], n, size, config.batch_size) if subsets["val"][0] else None
    monitor = "val_loss" if val else "loss"
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=2, restore_best_weights=True),
                 CheckpointFullModel(model, run_dir / layout.MODEL_KERAS, monitor),
                 EpochProgress("fine-tune", config.fine_tune_epochs, progress)]
    try:
        fitted = model.fit(train, validation_data=val, epochs=config.fine_tune_epochs, callbacks=callbacks,
                           shuffle=False, verbose=0)  # tf.data shuffles itself
    except KeyboardInterrupt:
        raise TrainingInterrupted("interrupted") from None
    return {key: [float(v) for v in values] for key, values in fitted.history.items()}


def readable(split, subset, features) -> tuple[list[str], list[int]]:
    """(paths, labels) of the subset's images that feature extraction could read."""
    skipped = {path for path, _ in features[subset].skipped} if subset in features else set()
    pairs = [(p, int(c)) for p, c in zip(split.subset(subset), split.labels(subset)) if p not in skipped]
    return [p for p, _ in pairs], [c for _, c in pairs]


def evaluate_run(config, model, head, features, split, size, run_dir) -> dict:
    """Test-subset metrics. With the base untouched, the head on cached test features computes exactly
    what the full model computes on the images, so that path is used; after fine-tuning, the images."""
    from allx.train.plots import plot_confusion_matrix

    test = features.get("test")
    if test is None:
        return {"note": "the split has no test subset; nothing evaluated"}
    if config.fine_tune_layers:

        probabilities, labels, _ = predict_images(model, config.data_dir, test.paths, test.labels, size)
    else:
        probabilities, labels = head.predict(test.features, batch_size=config.batch_size, verbose=0), test.labels
    metrics = classification_metrics(probabilities, labels, split.classes)
    metrics["kind"] = layout.RecordKind.METRICS.value
    metrics["subset"] = "test"
    metrics["split_kind"] = split.kind.value
    write_json(run_dir / layout.METRICS, metrics)
    plot_confusion_matrix(metrics["confusion_matrix"], split.classes, run_dir / layout.CONFUSION_MATRIX,
                          title=f"Test subset (n={metrics['n']})")
    return metrics


def write_run_point(config, features, split, history, run_dir: Path) -> str:
    """A logreg head's operating point, chosen on cross-fitted train+val predictions (train.crossfit), into
    OPERATING_POINT with the sha256 of the model.keras it belongs to; `allx convert` ships it. Returns
    what was done, for history.json."""
    from allx.train.crossfit import proxy_groups, run_point

    n_classes = len(split.classes)
    try:
        point, how = run_point(features, split.classes, lambda paths: proxy_groups(paths, config.block_size),
                               history["C"][0], config.target_sensitivity,
                               (lambda labels: balanced_class_weights(labels, n_classes)) if config.class_weights
                               else None)
    except ValueError as err:  # e.g. a single group: nothing to cross-fit over
        return f"no cross-fitted operating point: {err}"
    if point is None:
        return "no cross-fitted operating point: the classes have no Benign, or train+val lack a side"
    write_json(run_dir / layout.OPERATING_POINT,
               {"kind": layout.RecordKind.OPERATING_POINT.value, "operating_point": point.to_dict(),
                "grouping": how, "C": history["C"][0],
                "model_sha256": sha256_file(run_dir / layout.MODEL_KERAS)})
    return f"chosen on {point.chosen_on}: sensitivity {point.sensitivity:.4f}, specificity {point.specificity:.4f}"


def write_labels(classes, path: Path) -> None:
    write_atomic(path, "\n".join(classes) + "\n")


def write_run_files(config, backbone, weights, size, split, history, metrics, skipped, run_dir, distribution) -> None:
    from allx.train.plots import plot_curves

    write_json(run_dir / layout.HISTORY, history)
    plot_curves(history, run_dir / layout.CURVES)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    write_json(run_dir / layout.TRAIN_CONFIG, {**settings, "weights": weights, "image_size": list(size),
                                                "weights_source": backbone.weights_source,
                                                "skipped_images": [list(s) for s in skipped],
                                                "distribution": distribution})
    write_model_card(run_dir / layout.MODEL_CARD, config, backbone, weights, size, split, metrics, skipped)
