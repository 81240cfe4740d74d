"""A small generated 4-class "smear-like" image set: the built-in default for the demo and the tests.

SYNTHETIC, NOT MEDICAL. Each image is a pale pink field (like an eosin-stained smear) with red-cell
discs and one purple "cell" blob whose size, shape and texture depend on the class, so a classifier can
learn it in a few epochs. The class names match the real dataset so every downstream step is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("Benign", "Early", "Pre", "Pro")
SYNTHETIC_NOTE = "synthetic generated images, not medical data"

# class -> (nucleus radius as a fraction of the image, elongation, texture amplitude, number of lobes)
STYLE = {
    "Benign": (0.16, 1.0, 0.00, 0),
    "Early": (0.24, 1.0, 0.35, 0),
    "Pre": (0.30, 1.6, 0.10, 0),
    "Pro": (0.26, 1.0, 0.15, 3),
}


def make_image(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic smear-like RGB image (size x size, uint8) of class `label`."""
    radius, elongation, texture, lobes = STYLE[label]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.array([236, 206, 214], np.float32) + rng.normal(0, 6, 3)
    image = np.broadcast_to(background, (size, size, 3)).copy()
    for _ in range(rng.integers(3, 7)):  # red cells
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.13)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[disc] = np.array([214, 130, 150], np.float32) + rng.normal(0, 5, 3)
    cy, cx = rng.uniform(0.4, 0.6, 2)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    r_scale = radius * rng.uniform(0.9, 1.1) * (1 + 0.35 * np.cos(lobes * theta) if lobes else 1)
    nucleus = (u / elongation) ** 2 + v**2 < r_scale**2
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    purple = np.array([92, 52, 140], np.float32) + rng.normal(0, 8, 3)
    shade = 1 + texture * noise[..., None]
    image[nucleus] = (purple * shade)[nucleus]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(out_dir: str | Path, per_class: int = 24, size: int = 64, seed: int = 0,
                 classes: tuple[str, ...] = CLASSES) -> Path:
    """Write `per_class` JPEGs per class under out_dir/<class>/ and a NOTE.json saying they are synthetic."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for label in classes:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = make_image(label, size, rng)
            Image.fromarray(pixels).save(out_dir / label / f"{label}-{i:04d}.jpg", quality=92)
    note = {"note": SYNTHETIC_NOTE, "classes": list(classes), "per_class": per_class, "size": size, "seed": seed}
    (out_dir.parent / f"{out_dir.name}.NOTE.json").write_text(json.dumps(note, indent=2))
    return out_dir
