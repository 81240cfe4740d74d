"""How much of the class the background alone carries, and how much the cells alone: the default recipe
trained and tested on derived copies of the data, with the split of a shipped model.

Two copies of every image of the split are written to a scratch folder outside the repository (the data
is not ours to redistribute): "background", the field with its white cells painted out (the Segmented
set's cells and the stain mask's, grown by a few pixels, painted in the median colour of the rest, as
`benchmarks/explain.py` does), and "cells", the stain mask's cells (grown by a few pixels) on black, as the
Segmented set shows them but found by stain. `allx train --backbone efficientnet-lite0` (the default
recipe) trains on each with the same split as the model it is compared with (held-out blocks of file
numbers), and the held-out TEST accuracy of each is recorded with a 95% Wilson interval beside the
original model's. A background-only model that is nearly as accurate as the original means each class's
fields can be told apart without looking at a cell: accuracy on held-out blocks of the same series is
then no guarantee at a new site.

Usage:
    ALLX_CACHE_DIR=... nice -n 10 python benchmarks/explain_shortcut.py --run RUN_DIR \
        --data ../shared/data/all-taleqani/Original --segmented ../shared/data/all-taleqani/Segmented \
        [--scratch /tmp/allx-shortcut] [--views background,cells] [--out benchmarks/results/explain_shortcut.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.images import load_image  # noqa: E402
from allx.files import write_json  # noqa: E402
from allx.text import wilson_interval  # noqa: E402
from benchmarks.explain import cell_mask, stain_mask, without_cells  # noqa: E402

GROW_PX = 9  # the cells' masks are grown by this max filter, so no rim of a cell survives the paint


def derive(view: str, original: Path, segmented: Path) -> Image.Image:
    pixels = load_image(original)
    size = pixels.shape[:2]
    stained = stain_mask(pixels)
    if view == "background":
        return Image.fromarray(without_cells(pixels, cell_mask(segmented, size) | stained))
    grown = np.asarray(Image.fromarray(stained.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(GROW_PX))) > 127
    return Image.fromarray(np.where(grown[..., np.newaxis], pixels, 0).astype(np.uint8))


def write_view(view: str, relpaths: list[str], args) -> Path:
    """The derived copy of every image of the split, made once (a file already there is kept)."""
    root = args.scratch / view
    for relpath in relpaths:
        target = root / relpath
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            derive(view, args.data / relpath, args.segmented / relpath).save(target, "JPEG", quality=95)
    return root


def test_accuracy(metrics_path: Path) -> dict:
    metrics = json.loads(metrics_path.read_text())
    share, n = metrics["accuracy"], metrics["n"]
    return {"accuracy": share, "n": n, "interval": list(wilson_interval(share, n)),
            "per_class": metrics.get("per_class"), "split_kind": metrics.get("split_kind")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the original model's `allx train` run folder")
    parser.add_argument("--data", type=Path, required=True, help="the Original data folder")
    parser.add_argument("--segmented", type=Path, required=True, help="the Segmented folder, same file names")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/allx-shortcut"), help="derived images and runs")
    parser.add_argument("--views", default="background,cells", help="which derived copies to train on")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "explain_shortcut.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/explain_shortcut.py " + " ".join(argv if argv is not None else sys.argv[1:])
    split_path = args.run / "split.json"
    split = json.loads(split_path.read_text())
    relpaths = sorted(split["train"] + split["val"] + split["test"])
    config = json.loads((args.run / "train_config.json").read_text())
    results = {"original": test_accuracy(args.run / "metrics.json")}
    for view in args.views.split(","):
        root = write_view(view, relpaths, args)
        out = args.scratch / f"run-{view}"
        subprocess.run([str(Path(sys.executable).parent / "allx"), "train", str(root), "--out", str(out), "--split",
                        str(split_path), "--backbone", config["backbone"], "--seed", str(config["seed"])], check=True)
        results[view] = test_accuracy(out / "metrics.json")
    result = {"benchmark": "explain_shortcut", "command": command,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "recipe": {key: config.get(key) for key in ("backbone", "head", "features", "seed", "group_by")},
              "split_kind": (split.get("meta") or {}).get("split_kind"), "test_images": len(split["test"]),
              "results": results}
    write_json(args.out, result)
    for view, entry in results.items():
        low, high = entry["interval"]
        print(f"{view:10s} held-out test accuracy {entry['accuracy']:.1%} (95% {low:.1%}-{high:.1%}, n={entry['n']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
