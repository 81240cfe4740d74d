"""`allx train` and `allx evaluate`: thin wrappers over train.trainer.train_model and train.evaluate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import handle_errors, import_tensorflow_quietly, progress_bars, stderr, stdout
from allx import layout
from allx.layout import SplitKind
from allx.cli.data import BlockSize, GroupBy, GroupsFile, Neighbours, Similarity
from allx.decision import DEFAULT_TARGET_SENSITIVITY, check_target
from allx.errors import UsageError
from allx.train.cluster import DEFAULT_WORKER_TIMEOUT
from allx.train.background_swap import DEFAULT_COPIES
from allx.train.cv import CVConfig, cross_validate, fold_stage
from allx.train.distribute import uses_cluster
from allx.train.embeddings import SIMILARITY
from allx.train.evaluate import evaluate_model
from allx.train.groups import DEFAULT_BLOCK_SIZE, grouping_options
from allx.train.trainer import TrainConfig, cluster_for, train_model


@handle_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="Folder of class folders (DATA_DIR/<class>/*.jpg).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (model.keras, metrics, plots...).")],
    split: Annotated[Optional[Path], typer.Option(help="SPLIT.json to use; default: make one and save it in the run.")] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name: resnet50 (default: frozen ResNet50; the reference model: --head flatten --features last), efficientnet-lite0 (offline ImageNet weights), mobilenetv2.")] = "resnet50",
    weights: Annotated[Optional[str], typer.Option(help="imagenet | none | PATH to a local weights file. Default: the backbone's default.")] = None,
    head: Annotated[Optional[str], typer.Option(help="flatten (Flatten -> Dropout(0.5) -> Dense softmax), gap (global average pooling) or logreg (logistic regression, solved; C chosen on validation). Default: the backbone's recipe (resnet50 and efficientnet-lite0: logreg; mobilenetv2: flatten).", show_default=False)] = None,
    features: Annotated[Optional[str], typer.Option(help="last (the last feature map) or multiscale (global averages of the middle stages, concatenated). Default: the backbone's recipe (resnet50: last; efficientnet-lite0: multiscale).", show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Maximum head epochs (early stopping on validation loss).")] = 20,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate for the head.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 42,
    fine_tune_layers: Annotated[int, typer.Option(help="Unfreeze the top N backbone layers for a second, low-learning-rate phase on images (0 = off).")] = 0,
    fine_tune_epochs: Annotated[int, typer.Option(help="Epochs of the fine-tuning phase.")] = 5,
    class_weights: Annotated[bool, typer.Option("--class-weights", help="Weight classes inversely to their frequency.")] = False,
    image_size: Annotated[Optional[int], typer.Option(help="Square input size in pixels; default: the backbone's (224).")] = None,
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs.")] = 5,
    val: Annotated[float, typer.Option(help="Validation fraction when making a split.")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction when making a split.")] = 0.15,
    augment: Annotated[Optional[str], typer.Option(help="Training augmentation, a comma-separated subset of dihedral (the 8 "
                                         "rotations/mirrors), stain (HED jitter), crop (small scale/crop), blur (mild); "
                                         "none for none. Default: the backbone's recipe, the winner of benchmarks/recipes.py "
                                         "(resnet50: dihedral; efficientnet-lite0: none).", show_default=False)] = None,
    augment_copies: Annotated[int, typer.Option(help="Jittered views (stain, crop, blur) added to each image's clean views.")] = 2,
    cell_masks: Annotated[Optional[Path], typer.Option(help="Folder of cell masks with the data's file names (e.g. the "
                                                       "Segmented set: cells kept, the rest black). Each training image "
                                                       "also gets composites: its white cells on the cell-free "
                                                       "background of a training image of another class, so the "
                                                       "background names no class. Val and test stay real fields.",
                                                       show_default=False)] = None,
    swap_copies: Annotated[int, typer.Option(help="Background swap composites per training image (with --cell-masks).")]
    = DEFAULT_COPIES,
    strategy: Annotated[str, typer.Option(help="tf.distribute strategy for augmented extraction and fine-tuning: auto "
                                          "(TF_CONFIG -> multiworker, 2+ GPUs -> mirrored, else one device), mirrored, "
                                          "multiworker (the hosts in TF_CONFIG, the same command on each: features "
                                          "sharded, the head fitted once on task 0, which alone writes --out).")]
    = "auto",
    worker_timeout: Annotated[float, typer.Option(help="Seconds a multi-worker run (TF_CONFIG) waits for every "
                                                  "worker to join, and for a silent one, before it stops with exit 2.")]
    = DEFAULT_WORKER_TIMEOUT,
    cv: Annotated[Optional[int], typer.Option("--cv", help="K-fold cross-validation instead of one model: K heads on "
                                              "grouped, stratified folds; writes OUT/cv.json and OUT/cv.png.",
                                              show_default=False)] = None,
    groups: GroupsFile = None,
    group_by: GroupBy = None,
    block_size: BlockSize = DEFAULT_BLOCK_SIZE,
    neighbours: Neighbours = None,
    similarity: Similarity = SIMILARITY,
    target_sensitivity: Annotated[float, typer.Option(help="Malignant sensitivity the operating point must reach: "
                                                      "chosen on cross-fitted train+val predictions for --head "
                                                      "logreg (OUT/operating_point.json, shipped by allx convert), "
                                                      "and per fold with --cv.")]
    = DEFAULT_TARGET_SENSITIVITY,
):
    """Train the classifier: frozen pretrained backbone, cached features, Flatten -> Dropout(0.5) -> Dense head.

    Writes OUT/model.keras (raw RGB 0..255 in, probabilities out), labels.txt, split.json, history.json,
    curves.png, metrics.json, confusion_matrix.png, MODEL_CARD.md, published as a whole when the run ends:
    Ctrl-C or a failure leaves OUT as it was (the interrupted run's last checkpoint is kept in the hidden
    staging folder the message names).
    With --cv K: K models on grouped folds (--groups / --group-by as in `allx data split`); writes
    OUT/cv.json and OUT/cv.png; Ctrl-C keeps the folds finished so far.
    """
    if not (uses_cluster(strategy) and os.environ.get("TF_CONFIG")):  # else TensorFlow runs in a child only
        import_tensorflow_quietly()

    check_target(target_sensitivity)
    if split is not None and (groups is not None or group_by is not None):
        raise UsageError("--split names a finished split: got --groups/--group-by too, expected one or the other "
                         "(make a grouped split with `allx data split --group-by ...`)")
    if cv is not None and cell_masks is not None:
        raise UsageError("--cell-masks with --cv: got both, expected one (background swap trains one model)")
    kind, threshold = grouping_options(group_by, groups, neighbours, similarity)
    config = TrainConfig(data_dir=data_dir, out_dir=out, split_path=split, backbone=backbone, weights=weights,
                         head=head, features=features, target_sensitivity=target_sensitivity, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         fine_tune_layers=fine_tune_layers, fine_tune_epochs=fine_tune_epochs,
                         class_weights=class_weights, image_size=image_size, patience=patience, val=val, test=test,
                         augment=augment, augment_copies=augment_copies, cell_masks=cell_masks,
                         swap_copies=swap_copies, strategy=strategy,
                         worker_timeout=worker_timeout,
                         group_by=kind.value, groups_file=groups, block_size=block_size, similarity=threshold)
    if cv is not None:
        cluster = cluster_for(strategy)
        if cluster is not None and cluster.size > 1:
            raise UsageError(f"--cv with TF_CONFIG's {cluster.size} workers: got a multi-worker cluster, expected one "
                             "process (cross-validation is not sharded across hosts; unset TF_CONFIG)")
        return cross_validate_command(config, cv, target_sensitivity)
    with progress_bars(transient=False, lines_when_piped=True, every_step=("head", "fine-tune")) as report:
        result = train_model(config, progress=report)
    if result.skipped:
        stderr.print(f"skipped {len(result.skipped)} unreadable image(s): see {out / layout.TRAIN_CONFIG}")
    metrics = result.metrics
    if "accuracy" in metrics:
        stdout.print(f"test accuracy {metrics['accuracy']:.4f} (n={metrics['n']}, {SplitKind.parse(metrics['split_kind']).words})")
    if result.model_path is None:
        stdout.print("worker done: the chief (task 0 of TF_CONFIG) writes the run folder", highlight=False)
        return
    stdout.print(f"model: {result.model_path}")


def cross_validate_command(config, folds: int, target_sensitivity: float) -> None:
    cv_config = CVConfig(train=config, folds=folds, group_by=SplitKind(config.group_by), groups_file=config.groups_file,
                         block_size=config.block_size, similarity=config.similarity,
                         target_sensitivity=target_sensitivity)
    epochs = tuple(fold_stage(k, folds) for k in range(folds))
    with progress_bars(transient=False, lines_when_piped=True, every_step=epochs) as report:
        result = cross_validate(cv_config, progress=report)
    render_cv(result)


def render_cv(result) -> None:
    from rich.table import Table

    summary = result.summary
    table = Table(title=f"{result.folds_done}-fold cross-validation (mean, 95% interval over groups, worst fold)")
    for column in ("metric", "mean", "95% interval", "worst fold"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in summary.items():
        if entry["mean"] is None:
            continue
        interval = f"{entry['low']:.3f}-{entry['high']:.3f}" if entry["low"] is not None else "n/a"
        table.add_row(name.replace("_", " "), f"{entry['mean']:.4f}", interval, f"{entry['min']:.4f}")
    stdout.print(table)
    stdout.print(f"wrote {result.path}" + (f" and {result.plot}" if result.plot else ""), highlight=False)


@handle_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A model.keras written by `allx train`.")],
    data_dir: Annotated[Path, typer.Argument(help="The data folder the split's paths are relative to.")],
    split: Annotated[Path, typer.Option(help="SPLIT.json (from `allx data split`, a run folder, or hand-written).")],
    subset: Annotated[str, typer.Option(help="train | val | test.")] = "test",
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON document.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Average the probabilities over the 8 rotations/mirrors of each image.")] = False,
    target_sensitivity: Annotated[Optional[float], typer.Option(
        "--target-sensitivity", help="Report sensitivity and specificity on --subset at the malignant/benign "
        "operating point for this malignant sensitivity (e.g. 0.99): the model's own from training "
        "(operating_point.json, --head logreg) when it is for this target, else one chosen on the val subset.",
        show_default=False)] = None,
):
    """Evaluate a model: accuracy, loss, per-class precision/recall/F1, confusion matrix, malignant sensitivity."""
    import_tensorflow_quietly()

    with progress_bars(transient=False, lines_when_piped=True, every_step=("head", "fine-tune")) as report:
        metrics = evaluate_model(model, data_dir, split, subset, progress=report, target_sensitivity=target_sensitivity,
                                 tta=tta)
    if json_out:
        typer.echo(json.dumps(metrics, indent=2))
        return
    render_metrics(metrics)


def render_metrics(metrics: dict) -> None:
    from rich.table import Table

    averaged = ", averaged over 8 rotations/mirrors" if metrics.get("tta") else ""
    table = Table(title=f"{metrics['subset']} subset{averaged}: accuracy {metrics['accuracy']:.4f}, "
                        f"loss {metrics['loss']:.4f}, n={metrics['n']}")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    stdout.print(table)
    sens, spec = metrics["malignant_sensitivity"], metrics["benign_specificity"]
    if sens is not None:
        stdout.print(f"malignant sensitivity {sens:.4f}, benign specificity {spec:.4f}")
    point = metrics.get("at_operating_point")
    if point:
        stdout.print(f"at the operating point chosen on {point['chosen_on']} for sensitivity >= "
                     f"{point['target_sensitivity']} (1 - p(Benign) >= {point['threshold']:.4f}): {point['subset']} "
                     f"malignant sensitivity {ratio(point['subset_sensitivity'])}, benign specificity "
                     f"{ratio(point['subset_specificity'])} (where chosen: {ratio(point['sensitivity'])}, "
                     f"{ratio(point['specificity'])})", highlight=False)
    stdout.print(f"split: {SplitKind.parse(metrics['split_kind']).words}")


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
