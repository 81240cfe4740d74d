"""The 8 dihedral views of an image (4 rotations, each also mirrored), and test-time averaging over them.

A blood smear has no up, down, left or right: a cell rotated by 90 degrees or mirrored is the same
cell. Training on these views and averaging a model's probabilities over them at test time (TTA) both
use that symmetry. Numpy only, so training and the device runner compute exactly the same views.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

N_VIEWS = 8


def dihedral_view(pixels: np.ndarray, index: int) -> np.ndarray:
    """View `index` (0..7) of an image (H, W, C) or a batch (N, H, W, C): index 0 is the image itself,
    1..3 rotate it by 90, 180, 270 degrees counter-clockwise, 4..7 do the same after a left-right mirror."""
    if not 0 <= index < N_VIEWS:
        raise ValueError(f"got view index {index}, expected 0..{N_VIEWS - 1}")
    pixels = np.asarray(pixels)
    if pixels.ndim not in (3, 4):
        raise ValueError(f"got pixels of shape {pixels.shape}, expected (H, W, C) or (N, H, W, C)")
    rows, cols = (pixels.ndim - 3, pixels.ndim - 2)
    base = np.flip(pixels, axis=cols) if index >= 4 else pixels
    return np.ascontiguousarray(np.rot90(base, index % 4, axes=(rows, cols)))


def dihedral_views(pixels: np.ndarray) -> list[np.ndarray]:
    """All 8 views, in dihedral_view's order (the first is the image itself)."""
    return [dihedral_view(pixels, index) for index in range(N_VIEWS)]


def average_over_views(predict: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """Test-time augmentation: the mean of predict() over the 8 views of one image (H, W, 3).

    `predict` takes a batch (8, H, W, 3) and returns (8, classes); the mean is returned as float32.
    """
    batch = np.stack(dihedral_views(pixels))
    return np.asarray(predict(batch), dtype=np.float32).mean(axis=0)
