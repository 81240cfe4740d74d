"""The accuracy check: the float Keras model vs the converted model through edge_runner, and the gate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allx.convert.gate import Fidelity, PairedCount, failures_of, fidelity_of, paired_counts, with_thresholds
from allx.convert.modes import Thresholds
from allx.dihedral import dihedral_view
from allx.errors import DataError
from allx.images import read_batches
from allx.train.evaluate import keras_probabilities
from allx.train.metrics import malignant_vs_benign

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
    views: int = 1  # dihedral views of each image compared (allx.dihedral): more evidence from few images


def run_check(keras_model, edge_model, data_dir: str | Path, relpaths: tuple[str, ...], truth: list[int],
              labels: tuple[str, ...], precision: str, subset: str, thresholds: Thresholds,
              on_progress: Callable[[int, int], None] | None = None,
              fidelity: FidelitySet | None = None) -> tuple[CheckReport, CheckPredictions]:
    """Score every image with both models (pixels read once, by allx.images.load_image) and apply the gate.

    `edge_model` is an edge_runner.model.EdgeModel: the converted model is run by the same code as
    `allx-edge`, never by a separate interpreter loop here. Fidelity is measured on `fidelity` (the
    check images themselves when None or empty).
    """
    use_fidelity = fidelity is not None and bool(fidelity.relpaths)
    cache = fidelity.float_cache if use_fidelity else {}
    extra = tuple(p for p in fidelity.relpaths if p not in set(relpaths)) if use_fidelity else ()
    total = len(relpaths) + len(extra)
    progress = (lambda done, _: on_progress(done, total)) if on_progress else None
    kept, kept_truth, skipped, float_probs, quant_probs, latencies = [], [], [], [], [], []
    for batch in read_batches(data_dir, relpaths, edge_model.input_size, BATCH, progress):
        skipped.extend(reason for _, reason in batch.unreadable)  # each reason names its file
        if batch.indices:
            float_probs.append(cached_probabilities(keras_model, batch.pixels,
                                                    [relpaths[i] for i in batch.indices], len(labels), cache))
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
    changed = predictions.float_probabilities.argmax(axis=1) != predictions.quantized_probabilities.argmax(axis=1)
    if not use_fidelity:
        counted = (int(changed.sum()), len(kept), subset)
    else:
        in_fidelity = np.isin(np.asarray(kept), np.asarray(fidelity.relpaths))
        more, images = count_disagreements(keras_model, edge_model, data_dir, extra, len(labels), cache,
                                           (lambda done, _: on_progress(len(relpaths) + done, total))
                                           if on_progress else None)
        turned, turned_images = (0, 0) if fidelity.views < 2 else count_disagreements(
            keras_model, edge_model, data_dir, fidelity.relpaths, len(labels), cache, None, range(1, fidelity.views))
        counted = (int(changed[in_fidelity].sum()) + more + turned, int(in_fidelity.sum()) + images + turned_images,
                   fidelity.subsets if fidelity.views < 2 else f"{fidelity.subsets} (x{fidelity.views} dihedral views)")
    return summarize(predictions, labels, precision, subset, thresholds, latencies, tuple(skipped),
                     counted), predictions


def count_disagreements(keras_model, edge_model, data_dir, relpaths: tuple[str, ...], classes: int, cache: dict,
                        on_progress, views=(0,)) -> tuple[int, int]:
    """(images whose top-1 label differs between the float and the converted model, readable images), over
    the given dihedral `views` of each image (0: the image itself)."""
    disagreements = images = 0
    for batch in read_batches(data_dir, relpaths, edge_model.input_size, BATCH, on_progress):
        for view in views if batch.indices else ():
            pixels = batch.pixels if view == 0 else np.stack([dihedral_view(p, view) for p in batch.pixels])
            paths = [relpaths[i] if view == 0 else f"{relpaths[i]}#view{view}" for i in batch.indices]
            float_top = cached_probabilities(keras_model, pixels, paths, classes, cache).argmax(axis=1)
            disagreements += int(np.sum(float_top != edge_model.predict(pixels).argmax(axis=1)))
            images += len(paths)
    return disagreements, images


def cached_probabilities(model, pixels: np.ndarray, paths: list[str], classes: int, cache: dict) -> np.ndarray:
    """keras_probabilities, computed once per path: every candidate of a conversion is compared to one run."""
    missing = [i for i, path in enumerate(paths) if path not in cache]
    if missing:
        for i, row in zip(missing, keras_probabilities(model, pixels[missing], classes)):
            cache[paths[i]] = row
    return np.stack([cache[path] for path in paths])


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
    clinical = malignant_vs_benign(truth, predicted, labels)
    return ModelMetrics(float(accuracy_score(truth, predicted)), recall, clinical["malignant_sensitivity"],
                        clinical["benign_specificity"])


def gate(report: CheckReport) -> CheckReport:
    """The same report judged against its thresholds, `failures` filled: one sentence in numbers per limit
    broken (convert.gate). A report given other thresholds (replace(report, thresholds=...)) is re-judged."""
    paired, fidelity = with_thresholds(report.paired, report.fidelity, report.thresholds)
    return replace(report, paired=paired, fidelity=fidelity,
                   failures=failures_of(paired, fidelity, report.thresholds))
