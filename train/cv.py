"""`allx train DATA --cv K`: K heads on grouped, stratified folds, every image tested exactly once.

A fold is `allx train` with the same options on the fold's subsets: the training recipe's views of every
image (`--augment`, train.view_features) are extracted once into the training cache, then each fold
trains a fresh head (trainer.new_head, trainer.fit_head_on_features: the code `allx train` runs) on the
views of its train part, stops early on its grouped validation part, chooses the malignant/benign
operating point there (allx.decision; for the logreg head on cross-fitted predictions of the train and
val parts, train.crossfit, as `allx train` does), and is scored on its test part only. Validation and test images
are read as themselves (view 0, the image unchanged), as `allx train` evaluates them. cv.json holds each fold's
numbers, the mean over folds with a 95% interval from a bootstrap over groups, and every test image's
probabilities; cv.png draws them. Ctrl-C keeps the folds finished so far.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from allx import __version__, layout
from allx.decision import (DEFAULT_TARGET_SENSITIVITY, benign_index, check_target, choose_operating_point, has_benign,
                           sensitivity_specificity)
from allx.errors import UsageError
from allx.files import write_json
from allx.layout import RecordKind, SplitKind
from allx.train.augment import parse_augmentation
from allx.train.backbones import feature_base, get_backbone
from allx.train.crossfit import INNER_FOLDS, crossfitted_point, crossfitted_probabilities, first_rows
from allx.train.folds import check_folds, grouped_folds
from allx.train.groups import DEFAULT_BLOCK_SIZE, make_groups
from allx.train.metrics import classification_metrics
from allx.train.split import Split
from allx.train.trainer import (TrainConfig, TrainingInterrupted, balanced_class_weights, cached_features,
                                fit_head_on_features, new_head, validate_config, with_backbone_recipe)

Progress = Callable[[str, int, int], None]
BOOTSTRAP = 1000
HEADLINE = ("accuracy", "malignant_sensitivity", "benign_specificity", "op_sensitivity", "op_specificity")


@dataclass(frozen=True)
class CVConfig:
    train: TrainConfig
    folds: int = 5
    group_by: SplitKind = SplitKind.NEAR_DUPLICATE
    groups_file: Path | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    similarity: float | None = None
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    bootstrap: int = BOOTSTRAP


@dataclass(frozen=True)
class CVResult:
    path: Path
    plot: Path | None
    summary: dict
    folds_done: int
    folds: int


def cross_validate(config: CVConfig, progress: Progress | None = None) -> CVResult:
    """Make the groups and folds, train and score one head per fold, write OUT/cv.json and OUT/cv.png."""
    config = replace(config, train=with_backbone_recipe(config.train))
    check_cv_config(config)
    grouping = make_groups(config.train.data_dir, config.group_by, config.groups_file, config.block_size,
                           config.similarity, progress=progress)
    folds = grouped_folds(grouping, config.folds, config.train.seed, config.train.val)
    classes = grouping.classes
    run_dir = Path(config.train.out_dir)  # written only from here on: bad input above leaves nothing behind
    run_dir.mkdir(parents=True, exist_ok=True)
    features = all_features(config.train, classes, [p for g in grouping.groups for p in g], progress)
    row_of = first_rows(features.paths)
    group_of = grouping.group_of()
    done: list[dict] = []
    try:
        for fold in folds:
            done.append(run_fold(config, fold, features, row_of, group_of, progress))
    except KeyboardInterrupt:
        write_cv(config, grouping, folds, done, run_dir, complete=False)
        kept = f"{run_dir / layout.CV} keeps the {len(done)} finished fold(s)" if done else "no fold had finished"
        raise TrainingInterrupted(f"interrupted during fold {len(done) + 1} of {len(folds)}; {kept}") from None
    return write_cv(config, grouping, folds, done, run_dir, complete=True)


def check_cv_config(config: CVConfig) -> None:
    """Every option checked before any image is read."""
    validate_config(config.train)
    get_backbone(config.train.backbone)  # an unknown name fails before the images are hashed
    check_folds(config.folds)
    check_target(config.target_sensitivity)
    if config.train.split_path:
        raise UsageError("--cv makes its own grouped folds: got --split too, expected one or the other")
    if config.train.fine_tune_layers:
        raise UsageError("--cv trains heads on cached features: got --fine-tune-layers "
                        f"{config.train.fine_tune_layers}, expected 0")
    if not isinstance(config.bootstrap, int) or config.bootstrap < 100:
        raise UsageError(f"got {config.bootstrap!r} bootstrap samples, expected a whole number >= 100")


def all_features(config: TrainConfig, classes, paths, progress):
    """The training recipe's views of every grouped image (the image alone without augmentation),
    extracted once into the training cache, as `allx train` extracts its train subset."""
    import keras

    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone)
    size = (config.image_size, config.image_size) if config.image_size else tuple(backbone.input_size)
    weights = config.weights or backbone.default_weights
    pixels = keras.Input(shape=(*size, 3), name="pixels")
    base = feature_base(backbone, weights, (*size, 3), config.features)
    base.trainable = False
    extractor = keras.Model(pixels, base(backbone.make_preprocessing()(pixels), training=False), name="extractor")
    everything = Split(tuple(classes), tuple(sorted(paths)))
    report = (lambda stage, done, total: progress("features", done, total)) if progress else None
    augmentation = parse_augmentation(config.augment, config.augment_copies)
    return cached_features(config, extractor, everything, "train", size, weights, report, augmentation=augmentation)


def run_fold(config: CVConfig, fold: Split, features, row_of, group_of, progress) -> dict:
    """Train a fresh head on the fold's train part (early stopping and operating point on its val part)
    and score it on the fold's test part."""
    index = fold.meta["fold"]
    settings = replace(config.train, seed=config.train.seed + index)  # `allx train --seed SEED+k` on the fold
    started = time.perf_counter()
    parts = {name: rows(fold.subset(name), row_of) for name in ("train", "val", "test")}
    train_views = rows(fold.subset("train"), row_of, all_views=True)
    x = {name: np.asarray(features.features[parts[name]], dtype=np.float32) for name in ("val", "test")}
    y = {name: features.labels[parts[name]] for name in ("val", "test")}
    n_classes = len(fold.classes)
    head = new_head(settings, features.features.shape[1:], n_classes)
    val = (features.features, features.labels, parts["val"]) if len(parts["val"]) else None
    history = fit_head_on_features(settings, head, (features.features, features.labels, train_views), val,
                                   n_classes, fold_stage(index, fold.meta["folds"]), progress)
    monitor = "val_loss" if "val_loss" in history else "loss"
    epochs = {"ran": len(history["loss"]), "best": int(np.argmin(history[monitor])) + 1, "monitor": monitor}
    probabilities = {name: predict(head, x[name], settings.batch_size) for name in ("val", "test") if len(parts[name])}
    metrics = classification_metrics(probabilities["test"], y["test"], fold.classes)
    point = fold_operating_point(probabilities.get("val"), y["val"], fold.classes, config.target_sensitivity)
    if point is not None and settings.head == "logreg":  # (train.crossfit: the same rule `allx train` ships)
        point = fold_crossfit_point(config, settings, fold, features, row_of, group_of, history["C"][0])
    at_point = sensitivity_specificity(probabilities["test"], y["test"], fold.classes, point) if point else {}
    test_paths = [features.paths[r] for r in parts["test"]]
    return {
        "fold": index, "n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"]),
        "train_views": len(train_views),
        "test_groups": len({group_of[p] for p in test_paths}), "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
        "accuracy": metrics["accuracy"], "loss": metrics["loss"],
        "malignant_sensitivity": metrics["malignant_sensitivity"], "benign_specificity": metrics["benign_specificity"],
        "recall": {name: m["recall"] for name, m in metrics["per_class"].items()},
        "confusion_matrix": metrics["confusion_matrix"],
        "operating_point": point.to_dict() if point else None,
        "op_sensitivity": at_point.get("malignant_sensitivity"), "op_specificity": at_point.get("benign_specificity"),
        "test": {"paths": test_paths, "labels": y["test"].tolist(), "groups": [group_of[p] for p in test_paths],
                 "probabilities": np.round(probabilities["test"], 5).tolist()},
    }


def predict(head, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities by calling the head eagerly: a fresh head per fold would retrace predict()'s graph."""
    return np.concatenate([np.asarray(head(features[k:k + 8 * batch_size], training=False))
                           for k in range(0, len(features), 8 * batch_size)])


def rows(paths, row_of, all_views: bool = False) -> np.ndarray:
    """Feature rows of the paths that were read (unreadable images have none), in the fold's order: each
    image's first row (the image itself), or with `all_views` all its views' rows."""
    read = [row_of[p] for p in paths if p in row_of]
    if not all_views:
        return np.array([first for first, _ in read], dtype=np.int64)
    return np.array([first + v for first, views in read for v in range(views)], dtype=np.int64)


def fold_stage(fold: int, folds: int) -> str:
    """The progress stage of a fold's head training (one line per epoch in a log)."""
    return f"fold {fold + 1}/{folds}"


def fold_operating_point(probabilities, labels, classes, target: float):
    """The operating point chosen on the fold's val part; None when val lacks a benign or malignant image
    (or the classes have no Benign)."""
    if probabilities is None or not has_benign(classes):
        return None
    benign = benign_index(classes)
    if not (labels == benign).any() or (labels == benign).all():
        return None
    return choose_operating_point(probabilities, labels, classes, target, chosen_on="fold val")


def fold_crossfit_point(config: CVConfig, settings: TrainConfig, fold: Split, features, row_of, group_of,
                        c: float):
    """The operating point chosen on cross-fitted predictions of the fold's train and val images, grouped
    by the fold's own groups (train.crossfit)."""
    images = [p for p in (*fold.subset("train"), *fold.subset("val")) if p in row_of]
    first = [row_of[p][0] for p in images]
    views = [range(row_of[p][0], row_of[p][0] + row_of[p][1]) for p in images]
    labels = np.asarray(features.labels[first])
    n_classes = len(fold.classes)
    weights = balanced_class_weights(labels, n_classes) if settings.class_weights else None
    probabilities = crossfitted_probabilities(features.features, first, views, labels, [group_of[p] for p in images],
                                              c, n_classes, class_weights=weights)
    return crossfitted_point(probabilities, labels, fold.classes, config.target_sensitivity, "fold train+val",
                             INNER_FOLDS)


# --- summary: mean over folds with a bootstrap-over-groups interval ---------------------------------

def summarise(folds: list[dict], classes, samples: int, seed: int) -> dict:
    """Per metric: each fold's value, their mean, and a 95% percentile interval of that mean when each
    fold's test groups are resampled with replacement (images of one group move together)."""
    rng = np.random.default_rng(seed)
    names = list(HEADLINE) + [f"recall_{c}" for c in classes]
    draws = {name: [] for name in names}
    for fold in folds:
        hits = fold_hits(fold, classes)
        groups = np.unique(fold["test"]["groups"], return_inverse=True)[1]
        counts = rng.multinomial(groups.max() + 1, np.full(groups.max() + 1, 1 / (groups.max() + 1)), size=samples)
        weights = counts[:, groups].astype(np.float64)  # (samples, images): how often each image was drawn
        for name in names:
            hit, mask = hits.get(name, (None, None))
            if hit is None or not mask.any():
                draws[name].append(np.full(samples, np.nan))
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                draws[name].append((weights[:, mask] @ hit[mask]) / weights[:, mask].sum(axis=1))
    summary = {}
    for name in names:
        values = [fold_value(f, name) for f in folds]
        known = [v for v in values if v is not None]
        stacked = np.stack(draws[name])
        with warnings.catch_warnings():  # a metric no fold could measure (e.g. no Benign class) stays None
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(stacked, axis=0)
        low, high = np.nanpercentile(means, [2.5, 97.5]) if np.isfinite(means).any() else (np.nan, np.nan)
        summary[name] = {"folds": values, "mean": float(np.mean(known)) if known else None,
                         "low": none_if_nan(low), "high": none_if_nan(high), "min": min(known) if known else None}
    return summary


def fold_hits(fold: dict, classes) -> dict:
    """metric -> (hit per test image, which images count): the weighted mean of hit over mask is the metric."""
    labels = np.asarray(fold["test"]["labels"])
    probabilities = np.asarray(fold["test"]["probabilities"])
    predicted = probabilities.argmax(axis=1)
    hits = {"accuracy": ((predicted == labels).astype(float), np.ones(len(labels), bool))}
    for k, name in enumerate(classes):
        hits[f"recall_{name}"] = ((predicted == k).astype(float), labels == k)
    if has_benign(classes):
        benign = benign_index(classes)
        malignant = labels != benign
        hits["malignant_sensitivity"] = ((predicted != benign).astype(float), malignant)
        hits["benign_specificity"] = ((predicted == benign).astype(float), ~malignant)
        if fold["operating_point"]:
            called = 1 - probabilities[:, benign] >= fold["operating_point"]["threshold"]
            hits["op_sensitivity"] = (called.astype(float), malignant)
            hits["op_specificity"] = ((~called).astype(float), ~malignant)
    return hits


def fold_value(fold: dict, name: str):
    return fold["recall"].get(name.removeprefix("recall_")) if name.startswith("recall_") else fold.get(name)


def none_if_nan(value):
    return None if not np.isfinite(value) else float(value)


def write_cv(config: CVConfig, grouping, folds, done: list[dict], run_dir: Path, complete: bool) -> CVResult:
    """cv.json (and cv.png when a fold finished): the record scripts read."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config.train).items()}
    summary = summarise(done, grouping.classes, config.bootstrap, config.train.seed) if done else {}
    document = {
        "kind": RecordKind.CV.value, "created_by": f"allx train --cv (allx {__version__})",
        "split_kind": grouping.kind.value, "folds": len(folds), "folds_done": len(done), "complete": complete,
        "classes": list(grouping.classes), "data_dir": str(grouping.root), "grouping": grouping.method,
        "target_sensitivity": config.target_sensitivity, "bootstrap": config.bootstrap,
        "settings": {**settings, "weights": config.train.weights or "default"},
        "summary": summary, "results": done,
    }
    path = write_json(run_dir / layout.CV, document)
    plot = None
    if done:
        from allx.train.plots import plot_cv

        plot = plot_cv(summary, grouping.classes, len(done), grouping.kind, run_dir / layout.CV_PLOT)
    return CVResult(path, plot, summary, len(done), len(folds))
