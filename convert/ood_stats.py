"""Mahalanobis statistics of embeddings, the flag threshold, and the .npz side file allx-edge reads with numpy."""

from __future__ import annotations

import io

import numpy as np

from allx.edge_runner.ood import CLASS_SCALES, MahalanobisStats, threshold_for  # noqa: F401 (one threshold rule for convert and allx-edge calibrate)
from allx.errors import DataError

MIN_CLASS_FLAGGED = 2  # images a class must expect flagged at the asked rate to set its own threshold


def fit_mahalanobis(embeddings: np.ndarray, labels: np.ndarray, components: int) -> MahalanobisStats:
    """Class means and shared within-class covariance of `embeddings` in their top principal axes, whitened."""
    data = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    mean = data.mean(axis=0)
    _, singular, axes = np.linalg.svd(data - mean, full_matrices=False)
    rank = int(np.sum(singular > singular[0] * 1e-6)) if singular.size and singular[0] > 0 else 0
    k = min(components, rank, len(data) - len(classes))
    if k < 1:
        raise DataError(f"got {len(data)} fit images of {len(classes)} classes with embedding rank {rank}, expected "
                        "more varied train images to fit the out-of-distribution statistics")
    projected = (data - mean) @ axes[:k].T
    centres = np.stack([projected[labels == c].mean(axis=0) for c in classes])
    residuals = projected - centres[np.searchsorted(classes, labels)]
    covariance = residuals.T @ residuals / (len(data) - len(classes))
    values, vectors = np.linalg.eigh(covariance)
    whitening = vectors / np.sqrt(np.maximum(values, values.max() * 1e-6))  # a flat axis must not blow up
    return MahalanobisStats(mean.astype(np.float32), (axes[:k].T @ whitening).astype(np.float32),
                            (centres @ whitening).astype(np.float32))


def class_scales(distances: np.ndarray, nearest: np.ndarray, n_classes: int, flag_rate: float) -> np.ndarray:
    """Per class, the pooled threshold over the class's own threshold, each the distance leaving `flag_rate`
    of the images above it (images counted by their nearest class): scaled by these, one threshold flags
    every class's images at about `flag_rate` (class-conditional thresholds, Lee et al. 2018).

    Why: with one threshold on the raw distance, a class whose images spread more widely carries the flags
    of the others (out of group, on the real smears, Benign fields were flagged at 6.5% for the 4% asked, the
    malignant classes at 3-4%). A class with fewer than `MIN_CLASS_FLAGGED / flag_rate` images cannot place its
    own threshold (it would be its largest distance) and keeps the pooled one (scale 1)."""
    distances, nearest = np.asarray(distances, np.float64), np.asarray(nearest)
    pooled = threshold_for(distances, flag_rate)
    scales = np.ones(n_classes)
    for c in range(n_classes):
        own = distances[nearest == c]
        if len(own) * flag_rate >= MIN_CLASS_FLAGGED and pooled > 0:
            scales[c] = pooled / max(threshold_for(own, flag_rate), np.finfo(np.float32).tiny)
    return scales.astype(np.float32)  # the side file's precision, so convert scores as the device will


def stats_bytes(stats: MahalanobisStats) -> bytes:
    """The side file (.npz) that allx-edge reads with numpy."""
    buffer = io.BytesIO()
    scales = {} if stats.class_scales is None else {CLASS_SCALES: np.asarray(stats.class_scales, np.float32)}
    np.savez(buffer, mean=stats.mean, projection=stats.projection, class_means=stats.class_means, **scales)
    return buffer.getvalue()
