"""`allx evaluate`: a saved model on one subset of a split — accuracy, loss, per-class P/R/F1, confusion
matrix, malignant sensitivity and benign specificity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from allx import layout
from allx.decision import OperatingPoint, check_target, choose_operating_point, sensitivity_specificity
from allx.dihedral import dihedral_views
from allx.errors import DataError, ModelError, UsageError
from allx.images import read_batches
from allx.train.crossfit import read_run_point
from allx.train.metrics import classification_metrics
from allx.train.model_io import load_keras_model
from allx.train.split import read_split

BATCH = 32


def keras_probabilities(model, pixels: np.ndarray, classes: int) -> np.ndarray:
    """The float model's class probabilities for uint8 pixels (the output with `classes` columns).

    The one way allx runs a Keras model on images: `allx evaluate`, training's test metrics after
    fine-tuning and `allx convert`'s float reference all call it.
    """
    # A plain call, not predict_on_batch: that traces a new graph per batch shape and per loaded model.
    outputs = model(pixels.astype(np.float32), training=False)
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        matches = [np.asarray(o) for o in outputs if tuple(o.shape)[-1] == classes]
        if len(matches) != 1:
            raise DataError(f"the Keras model has {len(outputs)} outputs, expected exactly one with {classes} classes")
        outputs = matches[0]
    return np.asarray(outputs, dtype=np.float32)


def predict_images(model, data_dir, relpaths, labels, size, progress=None, tta: bool = False):
    """Probabilities of the readable images; returns (probabilities, their labels, skipped [(path, reason)]).

    With `tta`, each image's probabilities are the mean over its 8 dihedral views (allx.dihedral).
    """
    n_classes = int(model.output_shape[-1])
    rows, kept, skipped = [], [], []
    report = (lambda done, total: progress("evaluate", done, total)) if progress else None
    for batch in read_batches(data_dir, relpaths, size, BATCH, report):
        skipped.extend(batch.unreadable)
        if batch.indices:
            views = dihedral_views(batch.pixels) if tta else [batch.pixels]
            rows.append(np.mean([keras_probabilities(model, view, n_classes) for view in views], axis=0))
            kept.extend(batch.indices)
    probabilities = np.concatenate(rows) if rows else np.zeros((0, n_classes), np.float32)
    return probabilities, np.asarray(labels)[kept], skipped


def evaluate_model(model_path, data_dir, split_path, subset: str = "test", progress=None,
                   target_sensitivity: float | None = None, tta: bool = False) -> dict:
    """Metrics of the model at model_path on `subset` of the split (see train.metrics); `tta` averages
    over the 8 dihedral views of each image.

    With `target_sensitivity`, sensitivity and specificity are reported on `subset` ("at_operating_point")
    at the model's own operating point from training (operating_point.json, train.crossfit) when it is for
    that target, else at the point chosen on the val subset (allx.decision).
    """
    if target_sensitivity is not None:
        check_target(target_sensitivity)
    split = read_split(split_path, data_dir)
    if subset not in ("train", "val", "test"):
        raise UsageError(f"--subset: got {subset!r}, expected train, val or test")
    relpaths = split.subset(subset)
    if not relpaths:
        raise DataError(f"the split's {subset!r} subset is empty")
    model = load_keras_model(model_path)
    check_model_fits(model, split.classes, Path(model_path).parent / layout.LABELS)
    size = tuple(int(d) for d in model.input_shape[1:3])
    if tta and size[0] != size[1]:
        raise DataError(f"--tta needs a square model input, got {size[0]}x{size[1]}")
    probabilities, labels, skipped = predict_images(model, data_dir, relpaths, split.labels(subset), size, progress,
                                                    tta)
    if len(labels) == 0:
        raise DataError(f"no readable images in the {subset!r} subset")
    metrics = classification_metrics(probabilities, labels, split.classes)
    metrics.update(kind=layout.RecordKind.EVALUATION.value, subset=subset, model=str(model_path),
                   skipped=[list(s) for s in skipped], split_kind=split.kind.value, tta=tta)
    if target_sensitivity is not None:
        trained, _ = read_run_point(Path(model_path))
        metrics["at_operating_point"] = at_operating_point(model, data_dir, split, size, probabilities, labels,
                                                           subset, target_sensitivity, progress, tta, trained)
    return metrics


def at_operating_point(model, data_dir, split, size, probabilities, labels, subset: str, target: float,
                       progress=None, tta: bool = False, trained: OperatingPoint | None = None) -> dict:
    """The model's own point from training (`trained`, when it is for `target`), else the point chosen on val
    for `target`; and malignant sensitivity / benign specificity at it on `subset`."""
    if trained is not None and trained.target_sensitivity == target:
        reached = sensitivity_specificity(probabilities, labels, split.classes, trained)
        return {**trained.to_dict(), "subset": subset, "subset_sensitivity": reached["malignant_sensitivity"],
                "subset_specificity": reached["benign_specificity"]}
    if not split.val:
        raise DataError("--target-sensitivity: the split has no val subset, expected one to choose the "
                        "operating point on (never on the subset it is reported on)")
    val_probabilities, val_labels, _ = predict_images(model, data_dir, split.val, split.labels("val"), size, progress,
                                                      tta)
    point = choose_operating_point(val_probabilities, val_labels, split.classes, target, chosen_on="val")
    reached = sensitivity_specificity(probabilities, labels, split.classes, point)
    return {**point.to_dict(), "subset": subset, "subset_sensitivity": reached["malignant_sensitivity"],
            "subset_specificity": reached["benign_specificity"]}


def check_model_fits(model, classes, labels_path: Path) -> None:
    """The model's outputs and labels.txt (when present) must match the split's classes."""
    n_out = int(model.output_shape[-1])
    if n_out != len(classes):
        raise ModelError(f"model has {n_out} outputs, expected {len(classes)} (classes {list(classes)})")
    if labels_path.is_file():
        labels = [line.strip() for line in labels_path.read_text().splitlines() if line.strip()]
        if labels != list(classes):
            raise DataError(f"the split's classes {list(classes)} differ from the model's labels {labels}")
