"""Mahalanobis statistics of embeddings, the flag threshold, and the .npz side file allx-edge reads with numpy."""

from __future__ import annotations

import io

import numpy as np

from allx.edge_runner.ood import MahalanobisStats, threshold_for  # noqa: F401 (one threshold rule for convert and allx-edge calibrate)
from allx.errors import DataError


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


def stats_bytes(stats: MahalanobisStats) -> bytes:
    """The side file (.npz) that allx-edge reads with numpy."""
    buffer = io.BytesIO()
    np.savez(buffer, mean=stats.mean, projection=stats.projection, class_means=stats.class_means)
    return buffer.getvalue()
