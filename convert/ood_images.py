"""Generated images that are not blood smears (noise, flat colour, natural photos): the far out-of-distribution set."""

from __future__ import annotations

import numpy as np
from PIL import Image

from allx.images import resize_rgb

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "colorwheel")  # scikit-image, offline
OTHER_MEDICAL = ("immunohistochemistry", "retina")  # stained tissue and a fundus photo: medical, but not smears
FLAT_COLOURS = ((0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
                (236, 206, 214), (200, 160, 200), (120, 60, 140), (250, 240, 245), (90, 30, 110), (220, 220, 180))
SMEAR_PINK = np.array([230.0, 190.0, 210.0])  # roughly the background of a stained smear
TARGET_GROUPS = ("noise", "flat", "photo")  # the groups that must be flagged (>= 95 %)


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The training resize rule (allx.images.resize_rgb), for arrays."""
    return np.asarray(resize_rgb(Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB"), size), np.uint8)


def noise_images(size: tuple[int, int], rng: np.random.Generator, count: int = 6) -> list[np.ndarray]:
    """Uniform, Gaussian around a random tint, smooth blobs, and noise in smear colours."""
    images = []
    for _ in range(count):
        images.append(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        tint = 128 + rng.uniform(-60, 60, 3)
        images.append(np.clip(rng.normal(tint, 40, (*size, 3)), 0, 255).astype(np.uint8))
        images.append(resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), size))
        pink = SMEAR_PINK + rng.uniform(-20, 20, 3)
        images.append(np.clip(rng.normal(pink, 25, (*size, 3)), 0, 255).astype(np.uint8))
    return images


def crops_of(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator, count: int,
             scale: tuple[float, float]) -> list[np.ndarray]:
    """The whole photo and `count` random square crops of it (a camera pointed at part of a scene)."""
    photo = photo[..., :3]
    height, width = photo.shape[:2]
    images = [resize(photo, size)]
    for _ in range(count):
        side = int(min(height, width) * rng.uniform(*scale))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        images.append(resize(photo[top:top + side, left:left + side], size))
    return images


def make_non_smear_images(size: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Groups of uint8 (N, H, W, 3) images: noise (24), flat (12), photo (30), other_medical (10)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [image for name in PHOTOS for image in crops_of(getattr(skimage.data, name)(), size, rng, 4, (0.3, 0.7))]
    medical = [image for name in OTHER_MEDICAL
               for image in crops_of(getattr(skimage.data, name)(), size, rng, 4, (0.2, 0.5))]
    groups = {"noise": noise_images(size, rng), "flat": [np.full((*size, 3), c, np.uint8) for c in FLAT_COLOURS],
              "photo": photos, "other_medical": medical}
    return {name: np.stack(images) for name, images in groups.items()}
