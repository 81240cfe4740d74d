"""The image-quality limits of model.json "quality", chosen on the training images (edge_runner.quality).

Each limit sits well outside what the training images show, so that good fields are almost never
rejected while a blurred or badly exposed one is: focus must reach half the 1st percentile of the
training images' focus (a Gaussian blur of 1 px already divides it by about ten on the real data,
benchmarks/quality.py), clipped shadows and highlights may exceed the 99.5th percentile by a quarter,
and the stain colour may lie up to a quarter beyond the 99.5th percentile of the training images' own
colour distances.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from allx.errors import DataError, ImageError
from allx.images import load_image
from allx.edge_runner.quality import QualityLimits, QualityMeasures, colour_distance, judge, measure

MAX_IMAGES = 600  # training images measured: enough for a 1st percentile, a few seconds of decoding
FOCUS_MARGIN = 0.5
FOCUS_QUANTILE = 0.01
TAIL_QUANTILE = 0.995
TAIL_MARGIN = 1.25
MIN_CLIPPED = 0.02  # never reject a field for fewer clipped pixels than this
MIN_COLOUR = 3.0  # never reject a stain closer than 3 standard deviations
Progress = Callable[[int, int], None]


def calibrate_limits(measures: Sequence[QualityMeasures]) -> QualityLimits:
    """Limits from the measures of good (training) images."""
    if len(measures) < 20:
        raise DataError(f"got {len(measures)} readable training images for the quality limits, expected at least 20")
    focus = np.array([m.focus for m in measures])
    shadows = np.array([m.shadows for m in measures])
    highlights = np.array([m.highlights for m in measures])
    means = np.array([m.channel_means for m in measures])
    colour_mean, colour_std = means.mean(axis=0), np.maximum(means.std(axis=0), 1e-3)
    draft = QualityLimits(colour_mean=tuple(float(v) for v in colour_mean), colour_std=tuple(float(v) for v in colour_std))
    distances = np.array([colour_distance(m.channel_means, draft) for m in measures])
    limits = QualityLimits(
        focus_min=float(FOCUS_MARGIN * np.quantile(focus, FOCUS_QUANTILE)),
        shadows_max=float(max(MIN_CLIPPED, TAIL_MARGIN * np.quantile(shadows, TAIL_QUANTILE))),
        highlights_max=float(min(1.0, max(MIN_CLIPPED, TAIL_MARGIN * np.quantile(highlights, TAIL_QUANTILE)))),
        colour_mean=draft.colour_mean, colour_std=draft.colour_std,
        colour_max=float(max(MIN_COLOUR, TAIL_MARGIN * np.quantile(distances, TAIL_QUANTILE))),
        images=len(measures))
    rejected = float(np.mean([not judge(m, limits).ok for m in measures]))
    return replace(limits, rejected_share=rejected)


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
