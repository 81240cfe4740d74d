"""Out-of-distribution calibration of a converted model: statistics of its embeddings and the threshold.

Everything is measured on the CONVERTED model through edge_runner.EdgeModel (the device's numbers, int8
effects included): class means and a shared covariance of the train+val embeddings, in the top principal
axes, and the threshold that flags a chosen fraction of those images when each is scored by statistics
fitted without its group (convert.out_of_group): a threshold set on validation images that share
patients with training flagged 12% of a new-patient block instead of the 4% asked. The threshold is one per
class (class scales on the nearest class's distance, convert.ood_stats.class_scales), so a class that spreads
more widely does not carry the others' flags. Why Mahalanobis and why these defaults: benchmarks/ood.py
measures the alternatives (max-softmax, energy, other k) on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from allx import layout
from allx.convert.modes import DEFAULT_FLAG_RATE
from allx.convert.ood_images import make_non_smear_images
from allx.convert.ood_report import report_section
from allx.convert.ood_stats import class_scales, fit_mahalanobis, stats_bytes, threshold_for
from allx.convert.out_of_group import TrainVal, out_of_fold, read_train_val
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.ood import MahalanobisStats, mahalanobis_scores, nearest_class
from allx.errors import DataError
from allx.evidence import Evidence, group_interval, rate_record

METHOD = "mahalanobis"
DEFAULT_COMPONENTS = 128  # principal axes kept; measured: 64..256 flag all OOD sets, fewer miss the other lab
HELD_OUT = "train+val out of group"  # where the threshold's flag rate was measured
TRADEOFF_RATES = (0.01, 0.02, 0.04, 0.05, 0.10)


@dataclass(frozen=True)
class OodCalibration:
    """The fitted statistics, the threshold, and what it costs on held-out and generated images."""

    components: int
    threshold: float
    flag_rate: float  # requested fraction of held-out in-distribution images flagged
    held_out_subset: str
    held_out_flagged: float  # fraction actually flagged at the threshold
    fit_images: int
    held_out_images: int
    tradeoff: tuple[tuple[float, float], ...]  # (fraction of held-out images flagged, threshold)
    generated_flagged: dict[str, float]  # group of generated non-smear images -> fraction flagged
    stats: MahalanobisStats = field(repr=False)
    evidence: Evidence | None = None  # how held_out_flagged was measured
    scores: np.ndarray | None = field(default=None, repr=False)  # each train+val image's out-of-group score
    method: str = METHOD
    # class -> expected_rates-style record {"rate", "n", "evidence"}: the share of that class's train+val
    # images flagged out of group (by the class the image is labelled with)
    class_flagged: dict[str, dict] = field(default_factory=dict)

    def to_manifest(self, stats_file: str) -> dict:
        return {"method": self.method, "threshold": self.threshold, "stats_file": stats_file,
                "score": "squared Mahalanobis distance of the pooled embedding to the nearest class mean "
                         f"(shared covariance, top {self.components} principal axes), times that class's scale "
                         "(class_scales in the statistics file: a threshold per class, each set out of group to "
                         "the same flag rate); flagged when above threshold",
                "components": self.components, "embedding_size": self.stats.dimensions,
                "flag_rate": self.flag_rate, "held_out_subset": self.held_out_subset,
                "held_out_flagged": self.held_out_flagged, "fit_images": self.fit_images,
                "held_out_images": self.held_out_images,
                "tradeoff": [{"held_out_flagged": rate, "threshold": value} for rate, value in self.tradeoff],
                "generated_flagged": self.generated_flagged,
                "evidence": None if self.evidence is None else self.evidence.to_dict(),
                "class_held_out_flagged": self.class_flagged}


@dataclass(frozen=True)
class OodOutcome:
    """What a conversion adds for the warning: the manifest section (None when off), report text, the side file."""

    section: dict | None
    report: str
    stats: bytes | None = None
    note: str | None = None  # why the warning is off


def outcome_for(calibration: OodCalibration | None, note: str | None,
                stats_name: str = layout.ood_stats_name("float32")) -> OodOutcome:
    """The warning's manifest section, report text and side file; `note` says why there is none."""
    if calibration is None:
        return OodOutcome(None, report_section(None, note), None, note)
    return OodOutcome(calibration.to_manifest(stats_name), report_section(calibration), stats_bytes(calibration.stats))


def embeddings_of(edge_model, images) -> np.ndarray:
    """Embeddings of in-memory uint8 images (the generated non-smear sets)."""
    return np.stack([edge_model.predict_with_embedding(pixels)[1] for pixels in images])


def out_of_group_scores(train_val: TrainVal, components: int,
                        flag_rate: float = DEFAULT_FLAG_RATE) -> tuple[np.ndarray, MahalanobisStats]:
    """(every train+val image's score by statistics fitted without its fold, the statistics fitted on all).

    Every fit keeps the same number of principal axes (what the smallest fold fit allows): a squared
    distance grows with the axes it sums over, so the pooled scores must share the shipped statistics' axes.
    The class scales (convert.ood_stats.class_scales) are set on the out-of-fold distances, each image
    counted by the class nearest to it in its fold's fit, so each class flags about `flag_rate` of its own."""
    folds, embeddings = train_val.folds, train_val.embeddings
    n_classes = len(set(folds.labels.tolist()))
    smallest_fit = len(folds.relpaths) - max(len(held) for held in folds.held)
    k = max(1, min(components, smallest_fit - n_classes))
    stats = fit_mahalanobis(embeddings, folds.labels, k)
    k = int(stats.projection.shape[1])
    measured = out_of_fold(folds, lambda fit, held: np.column_stack(nearest_class(
        embeddings[held], fit_mahalanobis(embeddings[fit], folds.labels[fit], k))))
    nearest, distances = measured[:, 0].astype(int), measured[:, 1]
    scales = class_scales(distances, nearest, len(stats.class_means), flag_rate)
    return distances * scales.astype(np.float64)[nearest], replace(stats, class_scales=scales)


def calibrate(edge_model, train_val: TrainVal, flag_rate: float = DEFAULT_FLAG_RATE,
              components: int = DEFAULT_COMPONENTS, seed: int = 0) -> OodCalibration:
    """Statistics fitted on train+val; the threshold flags `flag_rate` of the pooled out-of-group scores."""
    if edge_model.embedding_output is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    scores, stats = out_of_group_scores(train_val, components, flag_rate)
    threshold = threshold_for(scores, flag_rate)
    flagged = scores > threshold
    evidence = train_val.folds.evidence(interval=group_interval(flagged, train_val.folds.groups, seed))
    generated = {name: float(np.mean(mahalanobis_scores(embeddings_of(edge_model, images), stats) > threshold))
                 for name, images in make_non_smear_images(edge_model.input_size, seed).items()}
    tradeoff = tuple((rate, threshold_for(scores, rate)) for rate in TRADEOFF_RATES)
    return OodCalibration(int(stats.projection.shape[1]), threshold, flag_rate, HELD_OUT, float(np.mean(flagged)),
                          len(scores), len(scores), tradeoff, generated, stats, evidence, scores,
                          class_flagged=flagged_by_class(flagged, train_val.folds, edge_model.labels, seed))


def flagged_by_class(flagged: np.ndarray, folds, labels, seed: int = 0) -> dict[str, dict]:
    """Per class: the share of its train+val images flagged out of group, with a group-bootstrap interval."""
    records = {}
    for index, name in enumerate(labels):
        mine = folds.labels == index
        if mine.any():
            groups = [g for g, keep in zip(folds.groups, mine) if keep]
            evidence = replace(folds.evidence(), groups=len(set(groups)))
            records[name] = rate_record(flagged[mine], groups, evidence, seed)
    return records


def edge_model_of(tflite: bytes, tensors, labels: tuple[str, ...]) -> EdgeModel:
    """Converted bytes as the device runs them; `tensors` = (input, probabilities, embedding) TensorInfos."""
    _, probabilities, embedding = tensors
    if embedding is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    manifest = {"labels": list(labels),
                "outputs": {"probabilities": probabilities.to_dict(), "embedding": embedding.to_dict()}}
    return EdgeModel.from_bytes(tflite, manifest=manifest)


def calibrate_tflite(tflite: bytes, tensors, labels: tuple[str, ...], data_dir, split,
                     flag_rate: float = DEFAULT_FLAG_RATE, seed: int = 0, progress=None,
                     patient_groups: dict | None = None) -> OodCalibration:
    """`calibrate` for converted bytes: one pass over the split's train+val images, then the folds."""
    edge_model = edge_model_of(tflite, tensors, labels)
    train_val = read_train_val(edge_model, data_dir, split, patient_groups, seed, progress)
    return calibrate(edge_model, train_val, flag_rate, seed=seed)
