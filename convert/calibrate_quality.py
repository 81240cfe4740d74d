"""The image-quality limits of model.json "quality", chosen on the training images (edge_runner.quality's
calibrate_limits, which `allx-edge calibrate` also runs on a site's own images).

Each limit sits well outside what the training images show, so that good fields are almost never
rejected while a blurred or badly exposed one is: focus must reach half the 1st percentile of the
training images' focus (a Gaussian blur of 1 px already divides it by about ten on the real data,
benchmarks/quality.py), clipped shadows and highlights may exceed the 99.5th percentile by a quarter,
and the stain colour may lie up to a quarter beyond the 99.5th percentile of the training images' own
colour distances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from allx.errors import DataError, ImageError
from allx.images import load_image
from allx.edge_runner.quality import QualityMeasures, calibrate_limits, measure

MAX_IMAGES = 600  # training images measured: enough for a 1st percentile, a few seconds of decoding
Progress = Callable[[int, int], None]


def draw_evenly(relpaths: Sequence[str], count: int = MAX_IMAGES) -> list[str]:
    """Every k-th path (sorted), so each class and each stretch of file numbers is represented."""
    ordered = sorted(relpaths)
    if len(ordered) <= count:
        return ordered
    return [ordered[int(i)] for i in np.linspace(0, len(ordered) - 1, count)]


def measure_images(data_dir: Path, relpaths: Sequence[str], size: tuple[int, int],
                   progress: Progress | None = None) -> list[QualityMeasures]:
    """Measures of the readable images among `relpaths`, at the model's input size (as the device sees them)."""
    measures = []
    for done, relpath in enumerate(relpaths, 1):
        try:
            measures.append(measure(load_image(Path(data_dir) / relpath, size)))
        except ImageError:
            continue  # the accuracy check reports unreadable images; the limits need only good ones
        if progress is not None:
            progress(done, len(relpaths))
    return measures


def quality_section(data_dir: Path, train_relpaths: Sequence[str], size: tuple[int, int],
                    progress: Progress | None = None) -> dict:
    """model.json "quality" (the limits, calibrated on up to MAX_IMAGES training images), or "quality_note"
    saying why there are none: allx-edge then names the check as off rather than guessing limits."""
    try:
        limits = calibrate_limits(measure_images(data_dir, draw_evenly(train_relpaths), size, progress))
    except DataError as err:
        return {"quality_note": f"no image-quality limits: {err}"}
    return {"quality": {**limits.to_dict(), "calibrated_on": "train"}}
