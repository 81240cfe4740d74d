"""The accuracy check: the float Keras model vs the converted model through edge_runner, and the gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allx.errors import DataError, ImageError
from allx.images import load_image
from allx.convert.gate import Fidelity, PairedCount, failures_of, fidelity_of, paired_counts, with_thresholds
from allx.convert.modes import Thresholds

BENIGN = "Benign"  # every other class is a malignant ALL subtype
BATCH = 32


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
    # the gate's evidence (convert.gate): paired right->wrong / wrong->right counts, all classes first
    paired: tuple[PairedCount, ...] = ()
    fidelity: Fidelity | None = None

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
                "flip_margin_median": self.flip_margin_median, "margin_median": self.margin_median,
                "paired": [count.to_dict() for count in self.paired],
                "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
                "verdicts": [count.verdict() for count in self.paired]}

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


@dataclass(frozen=True)
class FidelitySet:
    """The unlabelled images fidelity is measured on (train+val, never test), and the float model's
    probabilities by path, kept across candidates so the float model runs once per image."""

    relpaths: tuple[str, ...]
    subsets: str
    float_cache: dict = field(default_factory=dict)


def run_check(keras_model, edge_model, data_dir: str | Path, relpaths: tuple[str, ...], truth: list[int],
              labels: tuple[str, ...], precision: str, subset: str, thresholds: Thresholds,
              on_progress: Callable[[int, int], None] | None = None,
              fidelity: FidelitySet | None = None) -> tuple[CheckReport, CheckPredictions]:
    """Score every image with both models (pixels read once, by allx.images.load_image) and apply the gate.

    `edge_model` is an edge_runner.model.EdgeModel: the converted model is run by the same code as
    `allx-edge`, never by a separate interpreter loop here. Fidelity is measured on `fidelity` (the
    check images themselves when None).
    """
    cache = {} if fidelity is None else fidelity.float_cache
    extra = () if fidelity is None or not fidelity.relpaths else tuple(p for p in fidelity.relpaths if p not in set(relpaths))
    total = len(relpaths) + len(extra)
    kept, kept_truth, skipped, float_probs, quant_probs, latencies = [], [], [], [], [], []
    for start in range(0, len(relpaths), BATCH):
        pixels, paths, labels_read, unreadable = load_batch(data_dir, relpaths[start:start + BATCH],
                                                            truth[start:start + BATCH], edge_model.input_size)
        skipped.extend(unreadable)
        if len(pixels):
            float_probs.append(cached_probabilities(keras_model, pixels, paths, len(labels), cache))
            for image in pixels:
                began = time.perf_counter()
                quant_probs.append(edge_model.predict(image))
                latencies.append((time.perf_counter() - began) * 1000.0)
            kept.extend(paths)
            kept_truth.extend(labels_read)
        if on_progress:
            on_progress(min(start + BATCH, len(relpaths)), total)
    if not kept:
        raise DataError(f"no readable images in the {subset} subset ({len(skipped)} unreadable), expected some to check")
    predictions = CheckPredictions(tuple(kept), np.asarray(kept_truth), np.concatenate(float_probs),
                                   np.stack(quant_probs))
    changed = predictions.float_probabilities.argmax(axis=1) != predictions.quantized_probabilities.argmax(axis=1)
    if fidelity is None or not fidelity.relpaths:
        counted = (int(changed.sum()), len(kept), subset)
    else:
        in_fidelity = np.isin(np.asarray(kept), np.asarray(fidelity.relpaths))
        more, images = count_disagreements(keras_model, edge_model, data_dir, extra, len(labels), cache,
                                           lambda done: on_progress and on_progress(len(relpaths) + done, total))
        counted = (int(changed[in_fidelity].sum()) + more, int(in_fidelity.sum()) + images, fidelity.subsets)
    return summarize(predictions, labels, precision, subset, thresholds, latencies, tuple(skipped),
                     counted), predictions


def count_disagreements(keras_model, edge_model, data_dir, relpaths: tuple[str, ...], classes: int, cache: dict,
                        on_progress: Callable[[int], None]) -> tuple[int, int]:
    """(images whose top-1 label differs between the float and the converted model, readable images)."""
    disagreements = images = 0
    for start in range(0, len(relpaths), BATCH):
        chunk = relpaths[start:start + BATCH]
        pixels, paths, _, _ = load_batch(data_dir, chunk, [0] * len(chunk), edge_model.input_size)
        if len(pixels):
            float_top = cached_probabilities(keras_model, pixels, paths, classes, cache).argmax(axis=1)
            disagreements += int(np.sum(float_top != edge_model.predict(pixels).argmax(axis=1)))
            images += len(pixels)
        on_progress(start + len(chunk))
    return disagreements, images


def cached_probabilities(model, pixels: np.ndarray, paths: list[str], classes: int, cache: dict) -> np.ndarray:
    """keras_probabilities, computed once per path: every candidate of a conversion is compared to one run."""
    missing = [i for i, path in enumerate(paths) if path not in cache]
    if missing:
        for i, row in zip(missing, keras_probabilities(model, pixels[missing], classes)):
            cache[paths[i]] = row
    return np.stack([cache[path] for path in paths])


def load_batch(data_dir, relpaths, truth, size: tuple[int, int]):
    """(uint8 pixels, their paths, their labels, "path: reason" of the unreadable) via allx.images.load_image."""
    images, paths, labels, unreadable = [], [], [], []
    for relpath, label in zip(relpaths, truth):
        try:
            images.append(load_image(Path(data_dir) / relpath, size))
        except ImageError as err:
            unreadable.append(str(err))
            continue
        paths.append(relpath)
        labels.append(label)
    pixels = np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)
    return pixels, paths, labels, unreadable


def keras_probabilities(model, pixels: np.ndarray, classes: int) -> np.ndarray:
    """The float model's class probabilities for uint8 pixels (the output with `classes` columns)."""
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


def summarize(predictions: CheckPredictions, labels: tuple[str, ...], precision: str, subset: str,
              thresholds: Thresholds, latencies: list[float], skipped: tuple[str, ...],
              fidelity_counts: tuple[int, int, str] | None = None) -> CheckReport:
    """Metrics of both models, the paired counts and fidelity (fidelity_counts: disagreements, images,
    subsets; None: the check images), then the gate."""
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
                         float(np.median(margins)), paired_counts(truth, float_top, quant_top, labels, thresholds),
                         fidelity_of(*(fidelity_counts or (int(np.sum(float_top != quant_top)), len(truth), subset)),
                                     thresholds))
    return gate(report)


def metrics_of(truth: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]) -> ModelMetrics:
    from sklearn.metrics import accuracy_score, recall_score

    present = set(truth.tolist())
    recalls = recall_score(truth, predicted, labels=list(range(len(labels))), average=None, zero_division=0)
    recall = tuple(float(r) if i in present else None for i, r in enumerate(recalls))
    sensitivity = specificity = None
    if BENIGN in labels:
        benign = labels.index(BENIGN)
        true_malignant, called_malignant = truth != benign, predicted != benign
        sensitivity = float(called_malignant[true_malignant].mean()) if true_malignant.any() else None
        specificity = float((~called_malignant)[~true_malignant].mean()) if (~true_malignant).any() else None
    return ModelMetrics(float(accuracy_score(truth, predicted)), recall, sensitivity, specificity)


def gate(report: CheckReport) -> CheckReport:
    """The same report judged against its thresholds, `failures` filled: one sentence in numbers per limit
    broken (convert.gate). A report given other thresholds (replace(report, thresholds=...)) is re-judged."""
    paired, fidelity = with_thresholds(report.paired, report.fidelity, report.thresholds)
    return replace(report, paired=paired, fidelity=fidelity,
                   failures=failures_of(paired, fidelity, report.thresholds))
