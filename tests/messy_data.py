"""A copy of the generated image set with every problem `allx data` must find planted in it."""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

EXACT = ("Benign/Benign-0000.jpg", "Benign/copy.jpg")
CONFLICT = ("Early/Early-0001.jpg", "Pre/conflict.jpg")
NEAR = ("Pro/Pro-0002.jpg", "Pro/near.jpg")


def make_messy_copy(synthetic_dir: Path, target: Path) -> Path:
    """The generated set plus every problem inspect must find (see EXACT, CONFLICT, NEAR and below)."""
    root = Path(shutil.copytree(synthetic_dir, target))
    shutil.copy(root / EXACT[0], root / EXACT[1])
    shutil.copy(root / CONFLICT[0], root / CONFLICT[1])
    with Image.open(root / NEAR[0]) as image:  # a re-capture: a little brighter, JPEG-compressed again
        ImageEnhance.Brightness(image).enhance(1.04).save(root / NEAR[1], quality=75)
    (root / "Benign" / "notes.txt").write_text("not an image")
    (root / "Early" / "empty.jpg").write_bytes(b"")
    (root / "Early" / "fake.png").write_text("text with an image suffix")
    whole = (root / "Pre" / "Pre-0003.jpg").read_bytes()
    (root / "Pre" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut
    noise = np.random.default_rng(1).integers(0, 256, (40, 30), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(root / "Pro" / "grey.png")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(b"")
    return root
