"""A tiny `allx train --cv` run on generated, numbered images: shared by the CV and report tests."""

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from allx.cli.main import app
from allx.synthetic import make_image

TINY = ["--backbone", "efficientnet-lite0", "--image-size", "32", "--epochs", "3", "--batch-size", "16",
        "--head", "gap", "--features", "last", "--augment", "dihedral", "--learning-rate", "1e-3", "--no-neighbours"]


def make_numbered_dir(root: Path) -> Path:
    """4 classes x 12 generated 32 px images named cell-1.jpg .. cell-12.jpg."""
    rng = np.random.default_rng(7)
    for name in ("Benign", "Early", "Pre", "Pro"):
        (root / name).mkdir(parents=True)
        for n in range(1, 13):
            Image.fromarray(make_image(name, 32, rng)).save(root / name / f"cell-{n}.jpg", quality=90)
    return root


def run_tiny_cv(data: Path, out: Path, cache: Path, *options: str):
    """3-fold CV grouped by blocks of 2 file numbers: Lite0's last map, gap head, dihedral views, unless `options` say."""
    return CliRunner().invoke(app, ["train", str(data), "--out", str(out), "--cv", "3", "--group-by", "sequence",
                                    "--block-size", "2", *TINY, *options], env={"ALLX_CACHE_DIR": str(cache)})
