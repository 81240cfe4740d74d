"""Occlusion maps: which part of a field the model's answer rests on, computed with the model on the device.

A grey square slides over a grid of positions on the model's input; the model runs on every occluded copy
(through EdgeModel, the one inference path; one copy per invoke unless asked for batches) and each
position records how much the probability of the class predicted for the whole field drops. A pixel's
value is the mean drop over the squares that cover it. No gradients and no TensorFlow: the same int8
interpreter and the same quantization that gave the answer, so the map explains the number the
technician sees. The map is of one view of the field: with --tta it explains the image's own view, not
the average over its 8 rotations and mirrors.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from allx.errors import ImageError, UsageError
from allx.files import write_atomic
from allx.edge_runner.model import EdgeModel

GREY = 128  # the occluder: mid grey, far from both the light background and the stained cell
OVERLAY_OPACITY = 0.6  # at the strongest drop; the field stays visible under the colour
# Copies per invoke by default: one. Batches of 8 were slower on one CPU thread, measured side by side
# (benchmarks/explain.py --quick, MobileNetV2 int8: 0.89x and 0.78x the speed of one per invoke);
# `batch=8` (model.BATCH) remains for a device where batches pay (benchmarks/explain.py measures both).
PER_INVOKE = 1


@dataclass(frozen=True)
class Occlusion:
    """The grid: a square of `patch` pixels (of the model input), moved by `stride`."""

    patch: int
    stride: int

    @classmethod
    def for_size(cls, size: tuple[int, int]) -> "Occlusion":
        """A quarter of the input's side, moved by an eighth: 7 x 7 = 49 copies at 224 x 224."""
        side = min(size)
        return cls(max(1, side // 4), max(1, side // 8))

    def starts(self, length: int) -> list[int]:
        """Positions along one side; the last square ends at the edge, so every pixel is covered."""
        if not 0 < self.stride <= self.patch <= length:
            raise UsageError(f"occlusion: got patch {self.patch}, stride {self.stride} on {length} pixels, "
                             f"expected 0 < stride <= patch <= {length}")
        starts = list(range(0, length - self.patch + 1, self.stride))
        return starts if starts[-1] == length - self.patch else starts + [length - self.patch]


@dataclass(frozen=True)
class Explanation:
    """One field's occlusion map at the model's input size."""

    label: str
    class_index: int
    probability: float  # of `label` on the whole field
    heat: np.ndarray  # (H, W) float32: mean drop of that probability when the pixel is covered (< 0: rose)
    copies: int  # occluded copies run through the model
    invokes: int  # interpreter invokes, the whole field's one included (fewer than copies + 1 with batches)

    def mass_inside(self, mask: np.ndarray) -> float:
        """Share of the map's positive mass (the drops) that lies where `mask` (H, W) is true; 0 if none."""
        positive = np.maximum(self.heat, 0.0)
        total = float(positive.sum())
        return float(positive[np.asarray(mask, bool)].sum()) / total if total > 0 else 0.0


def explain(model: EdgeModel, pixels: np.ndarray, occlusion: Occlusion | None = None,
            batch: int = PER_INVOKE) -> Explanation:
    """The occlusion map of one uint8 (H, W, 3) field at the model's input size, for its own top class; `batch`
    occluded copies per invoke when the model takes batches (1: one invoke per copy)."""
    pixels = np.ascontiguousarray(pixels, np.uint8)
    height, width = model.input_size
    if pixels.shape != (height, width, 3):
        raise UsageError(f"explain: got pixels of shape {pixels.shape}, expected {(height, width, 3)}")
    occlusion = occlusion or Occlusion.for_size(model.input_size)
    base = model.predict_one(pixels)
    top = int(np.argmax(base))
    boxes = [(y, x) for y in occlusion.starts(height) for x in occlusion.starts(width)]
    copies = np.repeat(pixels[np.newaxis], len(boxes), axis=0)
    for copy, (y, x) in zip(copies, boxes):
        copy[y:y + occlusion.patch, x:x + occlusion.patch] = GREY
    occluded = model.predict_batch(copies, batch)
    total, covered = np.zeros((height, width), np.float64), np.zeros((height, width), np.float64)
    for (y, x), drop in zip(boxes, base[top] - occluded[:, top]):
        total[y:y + occlusion.patch, x:x + occlusion.patch] += drop
        covered[y:y + occlusion.patch, x:x + occlusion.patch] += 1
    per_invoke = max(1, batch) if model.takes_batches else 1
    label = model.labels[top] if model.labels else str(top)
    return Explanation(label, top, float(base[top]), (total / covered).astype(np.float32), len(boxes),
                       1 + -(-len(boxes) // per_invoke))


def overlay(pixels: np.ndarray, explanation: Explanation) -> Image.Image:
    """The field with the drops painted over it: transparent where covering changed nothing, through yellow
    to red where it took the most probability away (scaled to this field's largest drop)."""
    positive = np.maximum(explanation.heat, 0.0)
    peak = float(positive.max())
    strength = positive / peak if peak > 0 else positive
    colour = np.stack([np.full_like(strength, 255.0), 255.0 * (1.0 - strength), np.zeros_like(strength)], -1)
    alpha = (OVERLAY_OPACITY * strength)[..., np.newaxis]
    blended = np.asarray(pixels, np.float64) * (1.0 - alpha) + colour * alpha
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def overlay_png(pixels: np.ndarray, explanation: Explanation) -> bytes:
    out = io.BytesIO()
    overlay(pixels, explanation).save(out, "PNG", optimize=True)
    return out.getvalue()


def write_overlay(path: str | Path, pixels: np.ndarray, explanation: Explanation) -> Path:
    """The overlay as a PNG, written whole or not at all."""
    return write_atomic(path, overlay_png(pixels, explanation))


def explain_files(model: EdgeModel, paths: Sequence[str | Path], folder: str | Path) -> list[Path]:
    """An overlay per readable image of `paths`, in `folder` as <image name>.occlusion.png (numbered when two
    images share a name); unreadable images are skipped (classify has reported them). Returns the files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--explain {folder}: got a file, expected a folder (made when absent)")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in paths:
        try:
            pixels = model.load_pixels(path)
        except ImageError:
            continue
        target = unique_name(folder, Path(path).stem, {p.name for p in written})
        written.append(write_overlay(target, pixels, explain(model, pixels)))
    return written


def unique_name(folder: Path, stem: str, taken: set[str]) -> Path:
    name, number = f"{stem}.occlusion.png", 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}.occlusion.png"
    return folder / name
