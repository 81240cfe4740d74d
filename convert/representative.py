"""The calibration (representative) set: a stratified draw from the TRAIN subset, loaded like training."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from allx.errors import DataError, ImageError
from allx.images import load_image
from allx.convert.modes import DEFAULT_REPRESENTATIVE_COUNT


def draw_representative(split, count: int | None, seed: int = 0) -> tuple[str, ...]:
    """`count` train paths, each class represented in proportion to its share of the train subset.

    Val and test are never touched: calibrating on the images the check uses would flatter the check.
    Asking for more images than the train subset holds is an error, not a silent cap; the default
    (count None) is DEFAULT_REPRESENTATIVE_COUNT or the whole train subset when that is smaller.
    """

    paths, labels = list(split.subset("train")), np.asarray(split.labels("train"), dtype=int)
    if not paths:
        raise DataError("the train subset of the split is empty, expected images to calibrate int8 with")
    if count is None:
        count = min(DEFAULT_REPRESENTATIVE_COUNT, len(paths))
    if count > len(paths):
        raise DataError(f"got --representative-count {count}, expected at most {len(paths)} "
                        "(the number of train images)")
    rng = np.random.default_rng(seed)
    quotas = class_quotas(np.bincount(labels, minlength=len(split.classes)), count)
    chosen = []
    for class_index, quota in enumerate(quotas):
        members = np.flatnonzero(labels == class_index)
        chosen.extend(members[rng.permutation(len(members))[:quota]].tolist())
    return tuple(paths[i] for i in sorted(chosen))


def class_quotas(class_counts: np.ndarray, count: int) -> np.ndarray:
    """Largest-remainder allocation of `count` over classes in proportion to class_counts (sum == count)."""
    share = class_counts / class_counts.sum() * count
    quotas = np.floor(share).astype(int)
    for index in np.argsort(-(share - quotas), kind="stable")[: count - quotas.sum()]:
        quotas[index] += 1
    return np.minimum(quotas, class_counts)


def load_representative(data_dir: str | Path, relpaths: tuple[str, ...], size: tuple[int, int],
                        on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) pixels through allx.images.load_image: the same loading and resize as training."""
    if not relpaths:
        raise DataError("the representative set is empty, expected at least one train image")
    pixels = np.empty((len(relpaths), *size, 3), dtype=np.uint8)
    for index, relpath in enumerate(relpaths):
        try:
            pixels[index] = load_image(Path(data_dir) / relpath, size)
        except ImageError as err:
            raise DataError(f"representative image unreadable: {err}") from None
        if on_progress:
            on_progress(index + 1, len(relpaths))
    return pixels


def calibration_batches(pixels: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's representative_dataset: one float32 (1, H, W, 3) image at a time.

    The model takes raw pixels, so the uint8 input must BE the image bytes (scale 1.0, zero point 0).
    The converter derives the input's scale and zero point from the min and max it sees during
    calibration; a smear rarely holds a pure 0 or 255, so the first image gets one black and one
    white pixel to pin the range to exactly [0, 255]. Two pixels out of N*H*W leave the calibration
    of every later layer practically unchanged.
    """
    if len(pixels) == 0:
        raise DataError("the representative set is empty, expected at least one image")
    first = pixels[0].copy()
    first[0, 0, :] = 0
    first[0, -1, :] = 255

    def batches() -> Iterator[list[np.ndarray]]:
        yield [first[None].astype(np.float32)]
        for image in pixels[1:]:
            yield [image[None].astype(np.float32)]

    return batches
