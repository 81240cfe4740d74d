"""`allx train` and `allx evaluate`: thin wrappers over train.trainer.train_model and train.evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import handle_errors, progress_bars, stderr, stdout
from allx.layout import SplitKind
from allx.train.evaluate import evaluate_model
from allx.train.trainer import TrainConfig, train_model


@handle_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="Folder of class folders (DATA_DIR/<class>/*.jpg).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write (model.keras, metrics, plots...).")],
    split: Annotated[Optional[Path], typer.Option(help="SPLIT.json to use; default: make one and save it in the run.")] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name: resnet50 (default: frozen ResNet50, Flatten head), efficientnet-lite0 (offline ImageNet weights), mobilenetv2.")] = "resnet50",
    weights: Annotated[Optional[str], typer.Option(help="imagenet | none | PATH to a local weights file. Default: the backbone's default.")] = None,
    head: Annotated[str, typer.Option(help="flatten (Flatten -> Dropout(0.5) -> Dense softmax) or gap (global average pooling).")] = "flatten",
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
):
    """Train the classifier: frozen pretrained backbone, cached features, Flatten -> Dropout(0.5) -> Dense head.

    Writes OUT/model.keras (raw RGB 0..255 in, probabilities out), labels.txt, split.json, history.json,
    curves.png, metrics.json, confusion_matrix.png, MODEL_CARD.md. Ctrl-C keeps the last good checkpoint.
    """

    config = TrainConfig(data_dir=data_dir, out_dir=out, split_path=split, backbone=backbone, weights=weights,
                         head=head, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         fine_tune_layers=fine_tune_layers, fine_tune_epochs=fine_tune_epochs,
                         class_weights=class_weights, image_size=image_size, patience=patience, val=val, test=test)
    with progress_bars(transient=False, lines_when_piped=True, every_step=("head", "fine-tune")) as report:
        result = train_model(config, progress=report)
    if result.skipped:
        stderr.print(f"skipped {len(result.skipped)} unreadable image(s): see {out / 'train_config.json'}")
    metrics = result.metrics
    if "accuracy" in metrics:
        stdout.print(f"test accuracy {metrics['accuracy']:.4f} (n={metrics['n']}, {SplitKind.parse(metrics['split_kind']).words})")
    stdout.print(f"model: {result.model_path}")


@handle_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A model.keras written by `allx train`.")],
    data_dir: Annotated[Path, typer.Argument(help="The data folder the split's paths are relative to.")],
    split: Annotated[Path, typer.Option(help="SPLIT.json (from `allx data split`, a run folder, or hand-written).")],
    subset: Annotated[str, typer.Option(help="train | val | test.")] = "test",
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON document.")] = False,
):
    """Evaluate a model: accuracy, loss, per-class precision/recall/F1, confusion matrix, malignant sensitivity."""

    with progress_bars(transient=False, lines_when_piped=True, every_step=("head", "fine-tune")) as report:
        metrics = evaluate_model(model, data_dir, split, subset, progress=report)
    if json_out:
        typer.echo(json.dumps(metrics, indent=2))
        return
    render_metrics(metrics)


def render_metrics(metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{metrics['subset']} subset: accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}, n={metrics['n']}")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    stdout.print(table)
    sens, spec = metrics["malignant_sensitivity"], metrics["benign_specificity"]
    if sens is not None:
        stdout.print(f"malignant sensitivity {sens:.4f}, benign specificity {spec:.4f}")
    stdout.print(f"split: {SplitKind.parse(metrics['split_kind']).words}")
