"""Occlusion maps: which part of a field the model's answer rests on, computed with the model on the device.

Parts of the field are hidden and the model runs on every covered copy (through EdgeModel, the one
inference path; one copy per invoke unless asked for batches); a pixel's value is how much the
probability of the class predicted for the whole field falls when that pixel is hidden. By default 96
random masks (RISE) each hide about half of the field under a blurred copy of it, and a pixel gets the
mean probability of the copies that show it minus that of the copies that hide it; squares sliding over
a grid (Occlusion) remain on request. No gradients and no TensorFlow: the same int8 interpreter and the
same quantization that gave the answer, so the map explains the number the technician sees. The map is of
one view of the field: with --tta it explains the image's own view, not the average over its 8
rotations and mirrors.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFilter

from allx.errors import ImageError, UsageError
from allx.files import write_atomic
from allx.edge_runner.model import EdgeModel

GREY = 128  # the occluder: mid grey, far from both the light background and the stained cell
FILLS = ("grey", "mean", "blur")  # what a covered pixel shows: mid grey, the field's mean colour, the field blurred
BLUR_RADIUS = 8  # of the blur fill, in input pixels: a cell's nucleus and granules vanish, its colour stays
OVERLAY_OPACITY = 0.6  # at the strongest drop; the field stays visible under the colour
# Copies per invoke by default: one. Batches of 8 were slower on one CPU thread, measured side by side
# (benchmarks/explain.py --quick, MobileNetV2 int8: 0.89x and 0.78x the speed of one per invoke);
# `batch=8` (model.BATCH) remains for a device where batches pay (benchmarks/explain.py measures both).
PER_INVOKE = 1
CHUNK = 16  # covered copies made at once (a multiple of model.BATCH, so batches stay full)


@dataclass(frozen=True)
class Occlusion:
    """The grid: a square of `patch` pixels (of the model input), moved by `stride`, showing `fill`."""

    patch: int
    stride: int
    fill: str = "grey"

    @classmethod
    def for_size(cls, size: tuple[int, int], fill: str = "grey") -> "Occlusion":
        """A quarter of the input's side, moved by an eighth: 7 x 7 = 49 copies at 224 x 224."""
        side = min(size)
        return cls(max(1, side // 4), max(1, side // 8), fill)

    def starts(self, length: int) -> list[int]:
        """Positions along one side; the last square ends at the edge, so every pixel is covered."""
        if not 0 < self.stride <= self.patch <= length:
            raise UsageError(f"occlusion: got patch {self.patch}, stride {self.stride} on {length} pixels, "
                             f"expected 0 < stride <= patch <= {length}")
        starts = list(range(0, length - self.patch + 1, self.stride))
        return starts if starts[-1] == length - self.patch else starts + [length - self.patch]

    def covers(self, size: tuple[int, int]) -> np.ndarray:
        """(copies, H, W) float32: 1 where a copy's square covers the pixel."""
        height, width = size
        boxes = [(y, x) for y in self.starts(height) for x in self.starts(width)]
        covers = np.zeros((len(boxes), height, width), np.float32)
        for cover, (y, x) in zip(covers, boxes):
            cover[y:y + self.patch, x:x + self.patch] = 1.0
        return covers


@dataclass(frozen=True)
class RandomMasks:
    """Many random covers at once (RISE, Petsiuk et al. 2018): each copy hides a random half of a coarse
    `grid` x `grid` board, upsampled smoothly and shifted by a random fraction of a square, so every pixel
    is covered in about `covered` of the copies. A pixel's value is the mean probability of the copies that
    show it minus the mean of those that hide it: large covers move even a saturated int8 probability."""

    count: int = 96
    grid: int = 6
    covered: float = 0.5
    fill: str = "blur"
    seed: int = 0

    def covers(self, size: tuple[int, int]) -> np.ndarray:
        """(count, H, W) float32 in [0, 1]: how much of each pixel a copy hides; the same for every call."""
        if self.count < 2 or self.grid < 1 or not 0 < self.covered < 1:
            raise UsageError(f"random masks: got count {self.count}, grid {self.grid}, covered {self.covered}, "
                             f"expected count >= 2, grid >= 1, 0 < covered < 1")
        height, width = size
        rng = np.random.default_rng(self.seed)
        cell_h, cell_w = -(-height // self.grid), -(-width // self.grid)
        big = ((self.grid + 1) * cell_h, (self.grid + 1) * cell_w)
        covers = np.empty((self.count, height, width), np.float32)
        for cover in covers:
            board = (rng.random((self.grid + 1, self.grid + 1)) < self.covered).astype(np.float32)
            smooth = np.asarray(Image.fromarray(board, "F").resize(big[::-1], Image.BILINEAR))
            dy, dx = int(rng.integers(0, cell_h)), int(rng.integers(0, cell_w))
            cover[:] = smooth[dy:dy + height, dx:dx + width]
        return covers


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


def fill_image(pixels: np.ndarray, fill: str) -> np.ndarray:
    """What covered pixels show, as a float32 (H, W, 3) image."""
    if fill == "grey":
        return np.full(pixels.shape, GREY, np.float32)
    if fill == "mean":
        return np.broadcast_to(pixels.reshape(-1, 3).mean(axis=0), pixels.shape).astype(np.float32)
    if fill == "blur":
        blurred = Image.fromarray(pixels, "RGB").filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
        return np.asarray(blurred, np.float32)
    raise UsageError(f"occlusion fill: got {fill!r}, expected one of {', '.join(FILLS)}")


def covered_copies(pixels: np.ndarray, covers: np.ndarray, fill: str) -> Iterator[np.ndarray]:
    """(n, H, W, 3) uint8 chunks: the field blended towards `fill` by each cover, CHUNK copies at a time so a
    map of many copies needs a few MB, not one array of them all."""
    shown = np.asarray(pixels, np.float32)
    towards = fill_image(pixels, fill) - shown
    for start in range(0, len(covers), CHUNK):
        amount = covers[start:start + CHUNK, ..., np.newaxis]
        yield np.clip(np.rint(shown + towards * amount), 0, 255).astype(np.uint8)


def explain(model: EdgeModel, pixels: np.ndarray, method: Occlusion | RandomMasks | None = None,
            batch: int = PER_INVOKE) -> Explanation:
    """The occlusion map of one uint8 (H, W, 3) field at the model's input size, for its own top class; `batch`
    covered copies per invoke when the model takes batches (1: one invoke per copy). Squares give each
    pixel the mean drop of the squares over it; random masks give the mean probability of the copies that
    show it minus that of the copies that hide it."""
    pixels = np.ascontiguousarray(pixels, np.uint8)
    height, width = model.input_size
    if pixels.shape != (height, width, 3):
        raise UsageError(f"explain: got pixels of shape {pixels.shape}, expected {(height, width, 3)}")
    method = method or default_method(model.input_size)
    covers = cached_covers(method, (height, width))
    base = model.predict_one(pixels)
    top = int(np.argmax(base))
    scores = np.concatenate([model.predict_batch(chunk, batch)[:, top]
                             for chunk in covered_copies(pixels, covers, method.fill)]).astype(np.float32)
    hidden_weight = covers.sum(axis=0, dtype=np.float64)
    hidden_sum = np.tensordot(scores, covers, axes=1)  # float32 both: no float64 copy of the covers (19 MB)
    when_hidden = hidden_sum / np.maximum(hidden_weight, 1e-9)
    if isinstance(method, Occlusion):
        when_shown = base[top]  # the whole field: a square hides the same pixels in every copy it is in
    else:
        when_shown = (float(scores.sum()) - hidden_sum) / np.maximum(len(covers) - hidden_weight, 1e-9)
    heat = np.asarray(when_shown - when_hidden, np.float32)
    if np.ptp(scores) == 0 and (isinstance(method, RandomMasks) or scores[0] == base[top]):
        heat = np.zeros((height, width), np.float32)  # nothing moved the probability: a flat map, not rounding noise
    per_invoke = max(1, batch) if model.takes_batches else 1
    label = model.labels[top] if model.labels else str(top)
    return Explanation(label, top, float(base[top]), heat, len(covers),
                       1 + -(-len(covers) // per_invoke))


@functools.lru_cache(maxsize=4)
def cached_covers(method: Occlusion | RandomMasks, size: tuple[int, int]) -> np.ndarray:
    """The covers of a method at a size, made once per process (the same for every field), read-only."""
    covers = method.covers(size)
    covers.flags.writeable = False
    return covers


def default_method(size: tuple[int, int]) -> Occlusion | RandomMasks:
    """Random masks on an 8 x 8 board, blurred: chosen among squares of 1/4, 1/3 and 1/8 of the side and random
    masks, grey or blurred, on DEV test fields of an int8 Lite0 (benchmarks/explain_methods.py), where it put
    the most map mass on the cells, and fewest maps flat: big covers move even a saturated int8 probability.
    96 copies, 97 invokes per field. Squares remain for a caller that names them."""
    return RandomMasks(count=96, grid=8, covered=0.5, fill="blur")


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
