"""The accuracy check: the float Keras model vs the converted model through edge_runner, and the gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from allx.convert.modes import Thresholds
from allx.errors import DataError
from allx.images import read_batches
from allx.train.evaluate import keras_probabilities
from allx.train.metrics import malignant_vs_benign

BATCH = 32
EPSILON = 1e-9  # a drop exactly at the limit passes despite float round-off


@dataclass(frozen=True)
class ModelMetrics:
    """How one model (float or converted) did on the check subset."""

    accuracy: float
    recall: tuple[float | None, ...]  # per class (= per-class accuracy); None for a class with no images
    malignant_sensitivity: float | None  # malignant images called malignant (any subtype); None without Benign
    benign_specificity: float | None  # benign images called benign

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "recall": list(self.recall),
                "malignant_sensitivity": self.malignant_sensitivity, "benign_specificity": self.benign_specificity}


@dataclass(frozen=True)
class ClassCheck:
    label: str
    support: int
    float_recall: float | None
    quantized_recall: float | None

    @property
    def drop_pp(self) -> float | None:
        if self.float_recall is None or self.quantized_recall is None:
            return None
        return (self.float_recall - self.quantized_recall) * 100.0

    def to_dict(self) -> dict:
        return {"label": self.label, "support": self.support, "float_recall": self.float_recall,
                "quantized_recall": self.quantized_recall, "drop_pp": self.drop_pp}


@dataclass(frozen=True)
class CheckReport:
    """Float vs converted model on one subset, and what the gate said."""

    precision: str
    subset: str
    images: int
    labels: tuple[str, ...]
    float: ModelMetrics
    quantized: ModelMetrics
    per_class: tuple[ClassCheck, ...]
    agreement: float
    mean_abs_prob_diff: float
    latency_ms_p50: float
    latency_ms_p95: float
    thresholds: Thresholds
    failures: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # "path: reason" for images that could not be read
    # float top-1 minus top-2 probability, median over the images whose label changed / over all images:
    # near-ties flipping is rounding; confident labels flipping is a damaged model
    flip_margin_median: float | None = None
    margin_median: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def drop_pp(self) -> float:
        return (self.float.accuracy - self.quantized.accuracy) * 100.0

    def to_dict(self) -> dict:
        return {"passed": self.passed, "precision": self.precision, "subset": self.subset, "images": self.images,
                "labels": list(self.labels), "float": self.float.to_dict(), "quantized": self.quantized.to_dict(),
                "drop_pp": self.drop_pp, "agreement": self.agreement, "mean_abs_prob_diff": self.mean_abs_prob_diff,
                "per_class": [c.to_dict() for c in self.per_class],
                "latency_ms": {"p50": self.latency_ms_p50, "p95": self.latency_ms_p95},
                "thresholds": self.thresholds.to_dict(), "failures": list(self.failures),
                "skipped": list(self.skipped), "disagreements": self.disagreements,
                "flip_margin_median": self.flip_margin_median, "margin_median": self.margin_median}

    @property
    def disagreements(self) -> int:
        return int(round((1.0 - self.agreement) * self.images))


@dataclass(frozen=True)
class CheckPredictions:
    """Per-image results behind a CheckReport (written as check_predictions.csv)."""

    paths: tuple[str, ...]
    truth: np.ndarray
    float_probabilities: np.ndarray
    quantized_probabilities: np.ndarray


def run_check(keras_model, edge_model, data_dir: str | Path, relpaths: tuple[str, ...], truth: list[int],
              labels: tuple[str, ...], precision: str, subset: str, thresholds: Thresholds,
              on_progress: Callable[[int, int], None] | None = None) -> tuple[CheckReport, CheckPredictions]:
    """Score every image with both models (pixels read once, by allx.images.load_image) and apply the gate.

    `edge_model` is an edge_runner.model.EdgeModel: the converted model is run by the same code as
    `allx-edge`, never by a separate interpreter loop here.
    """
    kept, kept_truth, skipped, float_probs, quant_probs, latencies = [], [], [], [], [], []
    for batch in read_batches(data_dir, relpaths, edge_model.input_size, BATCH, on_progress):
        skipped.extend(reason for _, reason in batch.unreadable)  # each reason names its file
        if batch.indices:
            float_probs.append(keras_probabilities(keras_model, batch.pixels, len(labels)))
            for image in batch.pixels:
                began = time.perf_counter()
                quant_probs.append(edge_model.predict(image))
                latencies.append((time.perf_counter() - began) * 1000.0)
            kept.extend(relpaths[i] for i in batch.indices)
            kept_truth.extend(truth[i] for i in batch.indices)
    if not kept:
        raise DataError(f"no readable images in the {subset} subset ({len(skipped)} unreadable), expected some to check")
    predictions = CheckPredictions(tuple(kept), np.asarray(kept_truth), np.concatenate(float_probs),
                                   np.stack(quant_probs))
    return summarize(predictions, labels, precision, subset, thresholds, latencies, tuple(skipped)), predictions


def summarize(predictions: CheckPredictions, labels: tuple[str, ...], precision: str, subset: str,
              thresholds: Thresholds, latencies: list[float], skipped: tuple[str, ...]) -> CheckReport:
    truth = predictions.truth
    float_top = predictions.float_probabilities.argmax(axis=1)
    quant_top = predictions.quantized_probabilities.argmax(axis=1)
    float_metrics, quant_metrics = metrics_of(truth, float_top, labels), metrics_of(truth, quant_top, labels)
    supports = np.bincount(truth, minlength=len(labels))
    per_class = tuple(ClassCheck(label, int(supports[i]), float_metrics.recall[i], quant_metrics.recall[i])
                      for i, label in enumerate(labels))
    agreement = float(np.mean(float_top == quant_top))
    mean_abs = float(np.mean(np.abs(predictions.float_probabilities - predictions.quantized_probabilities)))
    top_two = np.sort(predictions.float_probabilities, axis=1)[:, -2:]
    margins = top_two[:, -1] - top_two[:, 0]
    flipped = margins[float_top != quant_top]
    report = CheckReport(precision, subset, len(truth), tuple(labels), float_metrics, quant_metrics, per_class,
                         agreement, mean_abs, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)),
                         thresholds, (), skipped, float(np.median(flipped)) if len(flipped) else None,
                         float(np.median(margins)))
    return gate(report)


def metrics_of(truth: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]) -> ModelMetrics:
    from sklearn.metrics import accuracy_score, recall_score

    present = set(truth.tolist())
    recalls = recall_score(truth, predicted, labels=list(range(len(labels))), average=None, zero_division=0)
    recall = tuple(float(r) if i in present else None for i, r in enumerate(recalls))
    clinical = malignant_vs_benign(truth, predicted, labels)
    return ModelMetrics(float(accuracy_score(truth, predicted)), recall, clinical["malignant_sensitivity"],
                        clinical["benign_specificity"])


def gate(report: CheckReport) -> CheckReport:
    """The same report with `failures` filled: one sentence per limit broken."""
    limits = report.thresholds
    failures = []
    if report.drop_pp > limits.max_drop + EPSILON:
        failures.append(f"overall accuracy dropped {report.drop_pp:.2f} pp (float {report.float.accuracy:.2%} -> "
                        f"{report.precision} {report.quantized.accuracy:.2%}), limit --max-drop {limits.max_drop:g} pp")
    for check in report.per_class:
        if check.drop_pp is not None and check.drop_pp > limits.max_class_drop + EPSILON:
            failures.append(f"class {check.label} recall dropped {check.drop_pp:.2f} pp ({check.float_recall:.2%} -> "
                            f"{check.quantized_recall:.2%}), limit --max-class-drop {limits.max_class_drop:g} pp")
    if report.agreement < limits.min_agreement - EPSILON:
        failures.append(f"top-1 agreement {report.agreement:.4f} with the float model, limit --min-agreement "
                        f"{limits.min_agreement:g}")
    return replace(report, failures=tuple(failures))
