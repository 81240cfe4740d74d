"""The out-of-distribution score on the device: numpy only, from the model's outputs and model.json's "ood" section.

Scores grow with strangeness; an image whose score is above the threshold is flagged "unlike training
images". `allx convert` (convert/ood.py) fits the statistics and chooses the threshold with these very
functions, on the converted model's own outputs.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from allx.edge_runner.manifest_check import Manifest
from allx.errors import ModelError

STATS_KEYS = ("mean", "projection", "class_means")
CLASS_SCALES = "class_scales"  # optional key: older statistics files have none (every class at scale 1)


@dataclass(frozen=True)
class MahalanobisStats:
    """Everything the distance needs: whitened PCA projection (D, k) and the class means in that space (C, k)."""

    mean: np.ndarray  # (D,) mean embedding of the fit images
    projection: np.ndarray  # (D, k): top-k principal axes, scaled so the shared within-class covariance is identity
    class_means: np.ndarray  # (C, k) class centres, projected
    # (C,) or None: the nearest class's distance is multiplied by its scale, so one threshold on the score is
    # a threshold per class on the distance (each class flags the same share of its own new patients)
    class_scales: np.ndarray | None = None

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])


def max_softmax_scores(probabilities: np.ndarray) -> np.ndarray:
    """1 - max probability per row: high when the model spreads its belief over classes."""
    return 1.0 - np.max(np.atleast_2d(probabilities), axis=1)


def nearest_class(embeddings: np.ndarray, stats: MahalanobisStats) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest class centre, squared Mahalanobis distance to it) per row (shared covariance,
    k principal axes).

    In float64: the score is printed to 6 decimals and must be the same on x86-64 and arm64, whose float32
    matrix kernels sum in different orders (they differed in the 7th significant digit on a Pi's core)."""
    projected = ((np.atleast_2d(embeddings).astype(np.float64) - np.asarray(stats.mean, np.float64))
                 @ np.asarray(stats.projection, np.float64))
    distances = ((projected[:, np.newaxis, :] - stats.class_means[np.newaxis]) ** 2).sum(axis=2)
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(distances)), nearest]


def mahalanobis_scores(embeddings: np.ndarray, stats: MahalanobisStats) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class centre, times that class's scale when the
    statistics carry class scales (class-conditional thresholds, as in Lee et al. 2018)."""
    nearest, distances = nearest_class(embeddings, stats)
    if stats.class_scales is None:
        return distances
    return distances * np.asarray(stats.class_scales, np.float64)[nearest]


def threshold_for(scores: np.ndarray, flag_rate: float) -> float:
    """The smallest score that leaves at most `flag_rate` of `scores` strictly above it (allx convert's
    calibration and allx-edge calibrate's re-calibration on a site's images alike)."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - flag_rate, method="higher"))


@dataclass(frozen=True)
class Scorer:
    """Called with one image's (probabilities, embedding): returns (flagged, score)."""

    method: str
    threshold: float
    score_one: Callable[[np.ndarray, "np.ndarray | None"], float]

    def __call__(self, probabilities: np.ndarray, embedding: np.ndarray | None) -> tuple[bool, float]:
        value = self.score_one(probabilities, embedding)
        return value > self.threshold, value


def max_softmax_scorer(section: dict, folder: Path, embedding_size: int | None, files: dict) -> Callable:
    return lambda probabilities, embedding: float(max_softmax_scores(probabilities)[0])


def mahalanobis_scorer(section: dict, folder: Path, embedding_size: int | None, files: dict) -> Callable:
    if embedding_size is None:
        raise ModelError(f"{folder}: model.json asks for the mahalanobis out-of-distribution score but names no "
                         "embedding output, expected outputs.embedding (convert again with allx convert)")
    name = str(section.get("stats_file", ""))
    if name in files:  # the copy embedded in the .tflite comes first
        stats = read_stats(folder / f"{name} (embedded in the model)", embedding_size, files[name])
    else:
        stats = read_stats(folder / name, embedding_size)
    # widened once here, not per image: float32 -> float64 is exact, so the scores are the same
    stats = MahalanobisStats(*(None if a is None else np.asarray(a, np.float64)
                               for a in (stats.mean, stats.projection, stats.class_means, stats.class_scales)))
    return lambda probabilities, embedding: float(mahalanobis_scores(embedding, stats)[0])


METHODS = {"max_softmax": max_softmax_scorer, "mahalanobis": mahalanobis_scorer}


def read_stats(path: Path, embedding_size: int, data: bytes | None = None) -> MahalanobisStats:
    """The side file named by ood.stats_file (`data`: its bytes embedded in the model), checked against the
    model's embedding width."""
    try:
        with np.load(path if data is None else io.BytesIO(data), allow_pickle=False) as archive:
            missing = [key for key in STATS_KEYS if key not in archive.files]
            if missing:
                raise ModelError(f"{path}: statistics file without {', '.join(missing)}, "
                                 f"expected {', '.join(STATS_KEYS)}")
            arrays = {key: np.asarray(archive[key], dtype=np.float32)
                      for key in (*STATS_KEYS, CLASS_SCALES) if key in archive.files}
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file, expected the out-of-distribution statistics that allx convert "
                         "writes beside the model") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelError(f"{path}: unreadable statistics file ({err.__class__.__name__}), expected a .npz") from None
    stats = MahalanobisStats(**arrays)
    mean, projection, class_means = stats.mean.shape, stats.projection.shape, stats.class_means.shape
    if (len(mean) != 1 or mean[0] != embedding_size or len(projection) != 2 or projection[0] != embedding_size
            or len(class_means) != 2 or class_means[1] != projection[1]):
        raise ModelError(f"{path}: got mean {mean}, projection {projection}, class_means {class_means}; expected "
                         f"({embedding_size},), ({embedding_size}, k), (classes, k) for this model's embedding")
    scales = stats.class_scales
    if scales is not None and (scales.shape != class_means[:1] or not np.all(np.isfinite(scales) & (scales > 0))):
        raise ModelError(f"{path}: got class_scales of shape {scales.shape}, expected {class_means[0]} positive "
                         "numbers, one per class")
    return stats


def make_scorer(manifest: Manifest, folder: Path, embedding_size: int | None = None,
                threshold: float | None = None, files: dict[str, bytes] | None = None
                ) -> tuple[Scorer | None, tuple[str, ...]]:
    """(scorer or None, warnings); None when the manifest has no "ood" section or a method this runner lacks.

    `files`: side files embedded in the .tflite by name; they are used before files in `folder`.

    `threshold` (from --ood-threshold) replaces the calibrated one. Damaged statistics raise ModelError:
    a model folder that lost its out-of-distribution check must not quietly classify without it.
    """
    spec = manifest.ood
    if threshold is not None and (not math.isfinite(threshold) or threshold < 0):
        raise ModelError(f"got --ood-threshold {threshold}, expected a number >= 0")
    if spec is None:
        if threshold is not None:
            raise ModelError(f"got --ood-threshold {threshold:g}, expected a model whose model.json has an "
                             "out-of-distribution calibration (convert it with allx convert --ood)")
        return None, ()
    if spec.method not in METHODS or spec.threshold is None:
        return None, (f"out-of-distribution method {spec.method!r} (threshold {spec.threshold!r}) is not supported "
                      f"by this allx-edge, expected one of {', '.join(METHODS)}: results are not marked",)
    score_one = METHODS[spec.method](spec.section, Path(folder), embedding_size, files or {})
    return Scorer(spec.method, spec.threshold if threshold is None else threshold, score_one), ()
