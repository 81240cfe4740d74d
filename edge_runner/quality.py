"""Image-quality check of one field before it is classified: focus, exposure and stain colour (numpy only).

A blurred, over- or under-exposed field, or one stained unlike the training slides, gives a confident
but meaningless answer; the check sets it aside with a reason a technician can act on ("blurred: focus
12 < 40"). Every measure is taken on the pixels the model sees (after allx.images resized them), and
`allx convert` (convert/calibrate_quality.py) chooses the limits from the training images with these
very functions, storing them in model.json "quality".

  focus       variance of the 4-neighbour Laplacian of the grey image (low: blurred)
  shadows     share of pixels whose luma is <= 5 (clipped black: under-exposed)
  highlights  share of pixels whose luma is >= 250 (clipped white: over-exposed)
  colour      largest |z-score| of the mean R, G, B against the training images (stain, white balance)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from allx.errors import DataError

FEATURES = ("focus", "exposure", "colour")
DARK_LEVEL = 5
BRIGHT_LEVEL = 250
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as Pillow's "L"
# How far outside the good images' own spread a limit sits (see convert/calibrate_quality.py).
MIN_IMAGES = 20
FOCUS_MARGIN = 0.5
FOCUS_QUANTILE = 0.01
TAIL_QUANTILE = 0.995
TAIL_MARGIN = 1.25
MIN_CLIPPED = 0.02  # never reject a field for fewer clipped pixels than this
MIN_COLOUR = 3.0  # never reject a stain closer than 3 standard deviations


@dataclass(frozen=True)
class QualityMeasures:
    focus: float
    shadows: float
    highlights: float
    channel_means: tuple[float, float, float]


@dataclass(frozen=True)
class QualityResult:
    """The measures of one field and, when it fails, one reason per limit broken."""

    measures: QualityMeasures
    reasons: tuple[str, ...] = ()
    colour: float | None = None  # |z| distance of the channel means; None when colour is not checked

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        m = self.measures
        return {"ok": self.ok, "reasons": list(self.reasons), "focus": round(m.focus, 3),
                "shadows": round(m.shadows, 5), "highlights": round(m.highlights, 5),
                "colour": None if self.colour is None else round(self.colour, 3)}


@dataclass(frozen=True)
class QualityLimits:
    """The thresholds model.json "quality" carries; a feature whose limits are absent is not checked."""

    focus_min: float | None = None
    shadows_max: float | None = None
    highlights_max: float | None = None
    colour_mean: tuple[float, float, float] | None = None
    colour_std: tuple[float, float, float] | None = None
    colour_max: float | None = None
    images: int = 0  # training images the limits were calibrated on
    rejected_share: float | None = None  # share of those images the limits reject

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "QualityLimits":
        if not isinstance(data, dict):
            return cls()
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        for key in ("colour_mean", "colour_std"):
            value = known.get(key)
            known[key] = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) and len(value) == 3 else None
        for key in ("focus_min", "shadows_max", "highlights_max", "colour_max"):
            value = known.get(key)
            known[key] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        return cls(**known)

    @property
    def missing(self) -> tuple[str, ...]:
        """The features these limits cannot check."""
        present = {"focus": self.focus_min is not None,
                   "exposure": self.shadows_max is not None and self.highlights_max is not None,
                   "colour": None not in (self.colour_mean, self.colour_std, self.colour_max)}
        return tuple(name for name in FEATURES if not present[name])


def measure(pixels: np.ndarray) -> QualityMeasures:
    """The quality measures of uint8 RGB pixels (H, W, 3).

    Written as matrix products and in-place sums: numpy's reductions along the short channel axis cost
    more than the whole check should (it must stay a few per cent of one classification).
    """
    values = np.asarray(pixels, dtype=np.float32).reshape(-1, 3)
    grey = (values @ GREY_WEIGHTS).reshape(np.shape(pixels)[:2])
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1]
    laplacian += grey[1:-1, :-2]
    laplacian += grey[1:-1, 2:]
    laplacian -= 4.0 * grey[1:-1, 1:-1]
    flat = laplacian.ravel()
    focus = float(np.dot(flat, flat) / flat.size - flat.mean() ** 2)
    shadows = np.count_nonzero(grey <= DARK_LEVEL) / grey.size
    highlights = np.count_nonzero(grey >= BRIGHT_LEVEL) / grey.size
    height, width = grey.shape
    row_sums = np.ones(width, np.float32) @ values.reshape(height, width, 3)  # (H, 3): short float32 sums
    means = row_sums.sum(axis=0, dtype=np.float64) / len(values)
    return QualityMeasures(focus, float(shadows), float(highlights), tuple(float(v) for v in means))


def colour_distance(means, limits: QualityLimits) -> float:
    """Largest |z-score| of the channel means against the training images'."""
    z = (np.asarray(means, np.float64) - np.asarray(limits.colour_mean)) / np.maximum(limits.colour_std, 1e-6)
    return float(np.abs(z).max())


def judge(measures: QualityMeasures, limits: QualityLimits) -> QualityResult:
    """The reasons, if any, why a field with these measures should be set aside."""
    reasons = []
    if limits.focus_min is not None and measures.focus < limits.focus_min:
        reasons.append(f"blurred: focus {measures.focus:.0f} < {limits.focus_min:.0f}")
    if limits.shadows_max is not None and measures.shadows > limits.shadows_max:
        reasons.append(f"under-exposed: {measures.shadows:.1%} clipped shadows > {limits.shadows_max:.1%}")
    if limits.highlights_max is not None and measures.highlights > limits.highlights_max:
        reasons.append(f"over-exposed: {measures.highlights:.1%} clipped highlights > {limits.highlights_max:.1%}")
    colour = None
    if "colour" not in limits.missing:
        colour = colour_distance(measures.channel_means, limits)
        if colour > limits.colour_max:
            reasons.append(f"unusual stain colour: distance {colour:.1f} > {limits.colour_max:.1f}")
    return QualityResult(measures, tuple(reasons), colour)


def check_quality(pixels: np.ndarray, limits: QualityLimits) -> QualityResult:
    return judge(measure(pixels), limits)


def limits_in_use(limits: QualityLimits | None) -> tuple[QualityLimits | None, tuple[str, ...]]:
    """(limits or None, warnings) for a manifest's quality limits (None: it has none): one line naming the
    features that are off, and how to get them."""
    limits = limits or QualityLimits()
    missing = limits.missing
    if not missing:
        return limits, ()
    how = "convert the model again with a current `allx convert` (it calibrates them on the training images)"
    if len(missing) == len(FEATURES):
        return None, (f"image-quality check off: model.json has no quality statistics "
                      f"({', '.join(FEATURES)}); {how}",)
    return limits, (f"image-quality check incomplete: model.json lacks the {', '.join(missing)} statistics, "
                    f"those features are not checked; {how}",)


def calibrate_limits(measures: Sequence[QualityMeasures]) -> QualityLimits:
    """Limits from the measures of good images: the training images (allx convert), or a site's own
    (allx-edge calibrate). The margins are explained in convert/calibrate_quality.py."""
    if len(measures) < MIN_IMAGES:
        raise DataError(f"got {len(measures)} readable images for the quality limits, expected at least {MIN_IMAGES}")
    focus = np.array([m.focus for m in measures])
    shadows = np.array([m.shadows for m in measures])
    highlights = np.array([m.highlights for m in measures])
    means = np.array([m.channel_means for m in measures])
    colour_mean, colour_std = means.mean(axis=0), np.maximum(means.std(axis=0), 1e-3)
    draft = QualityLimits(colour_mean=tuple(float(v) for v in colour_mean),
                          colour_std=tuple(float(v) for v in colour_std))
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
