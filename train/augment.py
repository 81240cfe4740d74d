"""Augmentation suited to blood smears: the 8 dihedral views, stain jitter, a small scale/crop, mild blur.

Cells have no orientation, so the 8 rotations/mirrors of an image are all equally real (allx.dihedral).
Labs differ in stain, so haematoxylin, eosin and DAB concentrations are jittered in HED space (Tellez et
al. 2018, "Whole-slide mitosis detection in H&E breast histology using PHH3 as a reference"): each
channel is scaled by 1 +- STAIN_SIGMA and shifted by +- STAIN_SIGMA. Magnification and focus differ a
little between microscopes: a crop of CROP_MIN_SIDE..1 of the side, resized back, and a Gaussian blur of
sigma up to BLUR_MAX_SIGMA on half the images.

With a frozen base each training image gives `views_per_image` fixed views, extracted once and cached:
its clean views (the 8 dihedral views, or the image itself) and, when a random kind is on, `copies` more
views, each a random clean view with the random jitters applied. The clean views stay because test images
are clean; the jittered copies teach the stain and focus range at a fraction of the cost of jittering
every view. Fine-tuning draws one random view per image per epoch with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from allx.dihedral import N_VIEWS, dihedral_view
from allx.errors import UsageError

KINDS = ("dihedral", "stain", "crop", "blur")
RANDOM_KINDS = ("stain", "crop", "blur")
STAIN_SIGMA = 0.05
CROP_MIN_SIDE = 0.85
BLUR_MAX_SIGMA = 1.0
MAX_COPIES = 8


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations are on (a subset of KINDS, in KINDS order) and how many jittered copies."""

    kinds: tuple[str, ...] = ()
    copies: int = 2

    @property
    def clean_views(self) -> int:
        return N_VIEWS if "dihedral" in self.kinds else 1

    @property
    def views_per_image(self) -> int:
        """Cached training views per image with a frozen base: the clean ones, then the jittered copies."""
        return self.clean_views + (self.copies if self.is_random else 0)

    @property
    def is_random(self) -> bool:
        return any(kind in RANDOM_KINDS for kind in self.kinds)

    def key(self) -> dict:
        """What changes the cached views: part of the feature cache key."""
        if not self.is_random:
            return {"kinds": list(self.kinds), "copies": 1, "stain": STAIN_SIGMA, "crop": CROP_MIN_SIDE,
                    "blur": BLUR_MAX_SIGMA}
        return {"kinds": list(self.kinds), "copies": self.copies, "stain": STAIN_SIGMA, "crop": CROP_MIN_SIDE,
                "blur": BLUR_MAX_SIGMA, "layout": "clean+copies"}

    @property
    def words(self) -> str:
        return "+".join(self.kinds) or "none"


def parse_augmentation(text: str | None, copies: int = 2) -> Augmentation:
    """"dihedral,stain" -> Augmentation(("dihedral", "stain")); "" or "none" -> no augmentation."""
    names = [part.strip().lower() for part in (text or "").split(",") if part.strip()]
    if names == ["none"]:
        names = []
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise UsageError(f"--augment: got {', '.join(unknown)}, expected a comma-separated subset of "
                         f"{', '.join(KINDS)} (or none)")
    if not 0 <= copies <= MAX_COPIES:
        raise UsageError(f"--augment-copies: got {copies}, expected 0..{MAX_COPIES}")
    return Augmentation(tuple(kind for kind in KINDS if kind in names), copies)


def training_views(pixels: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> list[np.ndarray]:
    """The fixed training views of one uint8 image (H, W, 3): the clean views, then the jittered copies."""
    clean = [dihedral_view(pixels, i) for i in range(N_VIEWS)] if "dihedral" in augmentation.kinds else [pixels]
    if not augmentation.is_random:
        return clean
    return clean + [random_view(pixels, augmentation, rng) for _ in range(augmentation.copies)]


def random_view(pixels: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """One random view (a random dihedral view, then the random jitters): fine-tuning's input per step."""
    if "dihedral" in augmentation.kinds:
        pixels = dihedral_view(pixels, int(rng.integers(N_VIEWS)))
    return jitter(pixels, augmentation, rng)


def jitter(pixels: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """The random augmentations that are on, in a fixed order: crop, stain, blur."""
    if "crop" in augmentation.kinds:
        pixels = random_crop(pixels, rng)
    if "stain" in augmentation.kinds:
        pixels = stain_jitter(pixels, rng)
    if "blur" in augmentation.kinds and rng.random() < 0.5:
        pixels = blur(pixels, rng.uniform(0.1, BLUR_MAX_SIGMA))
    return pixels


def stain_jitter(pixels: np.ndarray, rng: np.random.Generator, sigma: float = STAIN_SIGMA) -> np.ndarray:
    """Scale and shift each HED stain channel by a random amount (sigma 0 returns the image unchanged)."""
    from skimage.color import hed2rgb, rgb2hed

    if sigma == 0:
        return pixels
    hed = rgb2hed(pixels)
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3)
    # rgb2hed's values are optical densities of order 0.1: shift in proportion to each channel's range
    span = np.maximum(hed.max(axis=(0, 1)) - hed.min(axis=(0, 1)), 1e-6)
    rgb = hed2rgb(hed * alpha + beta * span)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def random_crop(pixels: np.ndarray, rng: np.random.Generator, min_side: float = CROP_MIN_SIDE) -> np.ndarray:
    """A random square-ish crop of min_side..1 of each side, resized back to the image's size (bilinear)."""
    height, width = pixels.shape[:2]
    side = rng.uniform(min_side, 1.0)
    h, w = max(1, int(round(height * side))), max(1, int(round(width * side)))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    crop = Image.fromarray(np.ascontiguousarray(pixels[top:top + h, left:left + w]))
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each colour channel (sigma in pixels)."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(pixels.astype(np.float32), sigma=(sigma, sigma, 0))
    return np.clip(np.rint(smooth), 0, 255).astype(np.uint8)
