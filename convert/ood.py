"""Out-of-distribution calibration of a converted model: statistics of its embeddings and the threshold.

Everything is measured on the CONVERTED model through edge_runner.EdgeModel (the device's numbers, int8
effects included): class means and a shared covariance of the train embeddings, in the top principal
axes, and the threshold that flags a chosen fraction of the held-out (val) images. Why Mahalanobis and
why these defaults: benchmarks/ood.py measures the alternatives (max-softmax, energy, other k) on real data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allx import layout
from allx.convert.modes import DEFAULT_FLAG_RATE
from allx.convert.ood_images import make_non_smear_images
from allx.convert.ood_report import report_section
from allx.convert.ood_stats import fit_mahalanobis, stats_bytes, threshold_for
from allx.convert.representative import draw_representative
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.ood import MahalanobisStats, mahalanobis_scores
from allx.errors import DataError
from allx.images import read_batches

METHOD = "mahalanobis"
DEFAULT_COMPONENTS = 128  # principal axes kept; measured: 64..256 flag all OOD sets, fewer miss the other lab
MAX_FIT_IMAGES = 5000  # train images the statistics are fit on (stratified draw beyond that)
TRADEOFF_RATES = (0.01, 0.02, 0.04, 0.05, 0.10)
Progress = Callable[[str, int, int], None]  # progress(stage, done, total)


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
    method: str = METHOD

    def to_manifest(self, stats_file: str) -> dict:
        return {"method": self.method, "threshold": self.threshold, "stats_file": stats_file,
                "score": "squared Mahalanobis distance of the pooled embedding to the nearest class mean "
                         f"(shared covariance, top {self.components} principal axes); flagged when above threshold",
                "components": self.components, "embedding_size": self.stats.dimensions,
                "flag_rate": self.flag_rate, "held_out_subset": self.held_out_subset,
                "held_out_flagged": self.held_out_flagged, "fit_images": self.fit_images,
                "held_out_images": self.held_out_images,
                "tradeoff": [{"held_out_flagged": rate, "threshold": value} for rate, value in self.tradeoff],
                "generated_flagged": self.generated_flagged}


@dataclass(frozen=True)
class OodOutcome:
    """What a conversion adds for the warning: the manifest section (None when off), report text, the side file."""

    section: dict | None
    report: str
    stats: bytes | None = None
    note: str | None = None  # why the warning is off


def outcome_for(candidate_tflite: bytes, tensors, passed: bool, source, flag_rate: float, seed: int,
                progress: Progress | None = None, stats_name: str = layout.ood_stats_name("float32")) -> OodOutcome:
    """Calibrate a converted model that passed its check (a rejected one is not worth the time)."""
    if not passed:
        note = "not calibrated: the model failed the accuracy check"
        return OodOutcome(None, report_section(None, note), None, note)
    calibration = calibrate_tflite(candidate_tflite, tensors, source.labels, source.data_dir, source.split,
                                   flag_rate, seed, progress)
    return OodOutcome(calibration.to_manifest(stats_name), report_section(calibration), stats_bytes(calibration.stats))


def subset_embeddings(edge_model, data_dir: Path, split, relpaths, progress) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, class indices) of the readable images among `relpaths` (a broken image is skipped: it
    says nothing about the distribution), through the device's inference code."""
    embeddings, labels = [], []
    for batch in read_batches(data_dir, relpaths, edge_model.input_size, progress=progress):
        for index, pixels in zip(batch.indices, batch.pixels):
            embeddings.append(edge_model.predict_with_embedding(pixels)[1])
            labels.append(split.classes.index(relpaths[index].split("/")[0]))
    if not labels:
        raise DataError(f"none of {len(relpaths)} images could be read, expected some to calibrate the "
                        "out-of-distribution score")
    return np.stack(embeddings), np.asarray(labels)


def embeddings_of(edge_model, images) -> np.ndarray:
    """Embeddings of in-memory uint8 images (the generated non-smear sets)."""
    return np.stack([edge_model.predict_with_embedding(pixels)[1] for pixels in images])


def calibrate(edge_model, data_dir: str | Path, split, flag_rate: float = DEFAULT_FLAG_RATE,
              components: int = DEFAULT_COMPONENTS, seed: int = 0, progress: Progress | None = None) -> OodCalibration:
    """Fit on train embeddings, threshold on val (else test), and measure the generated non-smear images."""
    if edge_model.embedding_output is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    step = (lambda stage: (lambda done, total: progress(stage, done, total))) if progress else (lambda stage: None)
    fit_paths = draw_representative(split, min(MAX_FIT_IMAGES, len(split.train)), seed)
    embeddings, labels = subset_embeddings(edge_model, Path(data_dir), split, fit_paths,
                                           step("out-of-distribution: train embeddings"))
    stats = fit_mahalanobis(embeddings, labels, components)
    held_out = "val" if split.val else "test"
    if not split.subset(held_out):
        raise DataError("the split has no val or test images, expected held-out images to set the "
                        "out-of-distribution threshold on")
    held_embeddings, _ = subset_embeddings(edge_model, Path(data_dir), split, split.subset(held_out),
                                           step(f"out-of-distribution: {held_out} threshold"))
    scores = mahalanobis_scores(held_embeddings, stats)
    threshold = threshold_for(scores, flag_rate)
    generated = {name: float(np.mean(mahalanobis_scores(embeddings_of(edge_model, images), stats) > threshold))
                 for name, images in make_non_smear_images(edge_model.input_size, seed).items()}
    tradeoff = tuple((rate, threshold_for(scores, rate)) for rate in TRADEOFF_RATES)
    return OodCalibration(int(stats.projection.shape[1]), threshold, flag_rate, held_out,
                          float(np.mean(scores > threshold)), len(embeddings), len(scores), tradeoff, generated, stats)


def calibrate_tflite(tflite: bytes, tensors, labels: tuple[str, ...], data_dir: str | Path, split,
                     flag_rate: float = DEFAULT_FLAG_RATE, seed: int = 0,
                     progress: Progress | None = None) -> OodCalibration:
    """`calibrate` for converted bytes; `tensors` = (input, probabilities, embedding) TensorInfos."""
    _, probabilities, embedding = tensors
    if embedding is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    manifest = {"labels": list(labels),
                "outputs": {"probabilities": probabilities.to_dict(), "embedding": embedding.to_dict()}}
    return calibrate(EdgeModel.from_bytes(tflite, manifest=manifest), data_dir, split, flag_rate, seed=seed,
                     progress=progress)
