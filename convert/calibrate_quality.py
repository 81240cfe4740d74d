"""The image-quality limits of model.json "quality", chosen on the training images (edge_runner.quality's
calibrate_limits, which `allx-edge calibrate` also runs on a site's own images).

Each limit sits well outside what the training images show, so that good fields are almost never
rejected while a blurred or badly exposed one is: focus must reach half the 1st percentile of the
training images' focus (a Gaussian blur of 1 px already divides it by about ten on the real data,
benchmarks/quality.py), clipped shadows and highlights may exceed the 99.5th percentile by a quarter,
and the stain colour may lie up to a quarter beyond the 99.5th percentile of the training images' own
colour distances.

With the cross-fitted evidence (convert.out_of_group), the limits are calibrated on every train+val
image and the share of good fields they reject is measured out of group: each image is judged by limits
calibrated without its fold, as a new patient's field would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from allx.errors import DataError, ImageError
from allx.images import load_image
from allx.convert.out_of_group import draw_evenly, out_of_fold
from allx.edge_runner.quality import QualityMeasures, calibrate_limits, judge, measure
from allx.evidence import group_interval

MAX_IMAGES = 600  # training images measured: enough for a 1st percentile, a few seconds of decoding
Progress = Callable[[int, int], None]


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
        limits = calibrate_limits(measure_images(data_dir, draw_evenly(train_relpaths, MAX_IMAGES), size, progress))
    except DataError as err:
        return {"quality_note": f"no image-quality limits: {err}"}
    return {"quality": {**limits.to_dict(), "calibrated_on": "train"}}


def crossfit_quality(train_val, seed: int = 0) -> tuple[dict, np.ndarray]:
    """(model.json "quality" or "quality_note", which train+val images the limits reject out of group)."""
    measures, folds = list(train_val.measures), train_val.folds
    try:
        limits = calibrate_limits(measures)
        rejected = out_of_fold(folds, lambda fit, held: np.array(
            [not judge(measures[i], calibrate_limits([measures[j] for j in fit])).ok for i in held]))
    except DataError as err:
        return {"quality_note": f"no image-quality limits: {err}"}, np.zeros(len(measures), bool)
    evidence = folds.evidence(interval=group_interval(rejected, folds.groups, seed))
    return {"quality": {**limits.to_dict(), "calibrated_on": "train+val",
                        "rejected_out_of_group": float(rejected.mean()), "evidence": evidence.to_dict()}}, rejected
