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

With --swap, the positive control of the occlusion maps: the default recipe trained twice on the same
split, as it is ("plain") and with `allx train --cell-masks SEGMENTED` (background swap composites added to
the training images, train.background_swap), each converted with `allx convert --int8` and measured through
`EdgeModel` on the held-out TEST fields: accuracy, malignant sensitivity and benign specificity (95% Wilson;
at the argmax and at the shipped operating point), accuracy with the white cells painted out (how much the
answer rests on the background; `benchmarks/explain.py` `shortcut`), and the occlusion map's mass inside
the segmented cells over a uniform map's on the fields classified right (`benchmarks/explain.py` `sanity`:
the same stride of --per-class fields through each class, the same method and settings as explain.json).
A model that must use the cells should put clearly more mass on them than one that may use the background.

Usage:
    ALLX_CACHE_DIR=... nice -n 10 python benchmarks/explain_shortcut.py --run RUN_DIR \
        --data ../shared/data/all-taleqani/Original --segmented ../shared/data/all-taleqani/Segmented \
        [--scratch /tmp/allx-shortcut] [--views background,cells] [--out benchmarks/results/explain_shortcut.json]
    ALLX_CACHE_DIR=... nice -n 10 python benchmarks/explain_shortcut.py --run RUN_DIR --data ... --segmented ... \
        --views none --swap [--per-class 12] --out benchmarks/results/explain_swap.json
    (runs already in SCRATCH/run-plain and SCRATCH/run-swap, and their tflite/ folders, are used as they are)
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.images import load_image  # noqa: E402
from allx.files import write_json  # noqa: E402
from allx import layout  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.text import wilson_interval  # noqa: E402
from allx.train.background_swap import cell_mask, grown, stain_mask, without_cells  # noqa: E402

def derive(view: str, original: Path, segmented: Path) -> Image.Image:
    pixels = load_image(original)
    size = pixels.shape[:2]
    stained = stain_mask(pixels)
    if view == "background":
        return Image.fromarray(without_cells(pixels, cell_mask(segmented, size) | stained))
    return Image.fromarray(np.where(grown(stained)[..., np.newaxis], pixels, 0).astype(np.uint8))


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


def allx(*arguments: str, allowed: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "allx"), *arguments], check=False)
    if done.returncode not in allowed:
        raise SystemExit(f"allx {arguments[0]} failed with exit code {done.returncode}")


def trained(name: str, split_path: Path, config: dict, args, *options: str) -> Path:
    """SCRATCH/run-NAME trained with the run's recipe and split (plus `options`); a run already there is kept."""
    out = args.scratch / f"run-{name}"
    if not (out / layout.MODEL_KERAS).is_file():
        allx("train", str(args.data), "--out", str(out), "--split", str(split_path), "--backbone", config["backbone"],
             "--seed", str(config["seed"]), *options)
    return out


def converted(run: Path, precision: str) -> tuple[Path, bool]:
    """(the .tflite of `allx convert --PRECISION` of the run, whether it passed the accuracy check), converted
    into RUN/tflite (int8) or RUN/tflite-PRECISION unless already there. A model that fails the check (exit 3)
    is measured too, as the rejected file convert keeps, and marked so."""
    folder = run / ("tflite" if precision == "int8" else f"tflite-{precision}")
    if not (folder / layout.MANIFEST).is_file() and not list(folder.glob("*.rejected.tflite")):
        extra = () if precision == "int8" else ("--fidelity-images", "0", "--no-ood")
        allx("convert", str(run / layout.MODEL_KERAS), f"--{precision}", *extra, "--out", str(folder), allowed=(0, 3))
    if (folder / layout.MANIFEST).is_file():
        return folder, True
    return sorted(folder.glob("*.rejected.tflite"))[0], False


def swap_comparison(split_path: Path, split: dict, config: dict, args) -> dict:
    """The plain and the background swap model side by side, each converted model through EdgeModel on the
    test fields."""
    from benchmarks.explain import sanity, shortcut, spread

    runs = {"plain": trained("plain", split_path, config, args),
            "swap": trained("swap", split_path, config, args, "--cell-masks", str(args.segmented))}
    test = sorted(split["test"])
    fields = spread(test, args.per_class)
    compared = {}
    for precision in args.precisions.split(","):
        for name, run in runs.items():
            path, passed = converted(run, precision)
            model = EdgeModel.load(path, threads=1, allow_rejected=not passed)
            _, maps = sanity(model, args, fields)
            compared[f"{name}-{precision}"] = {
                "run": name, "precision": precision, "model": str(model.model_path), "model_sha256": model.sha256,
                "passed_check": passed, "metrics_float": test_accuracy(run / layout.METRICS),
                "converted": shortcut(model, args, test), "maps": maps}
    return {"fields_mapped": len(fields), "per_class": args.per_class, "models": compared,
            "swap_options": f"--cell-masks {args.segmented}"}


def print_comparison(comparison: dict) -> None:
    for name, entry in comparison["models"].items():
        int8, maps = entry["converted"], entry["maps"]
        point = int8["clinical"].get("operating_point") or int8["clinical"]["argmax"]
        sens, spec = point["malignant_sensitivity"], point["benign_specificity"]
        low, high = maps.get("mass_ratio_interval") or (None, None)
        print(f"{name:13s} test accuracy {int8['original']['accuracy']:.1%} ({int8['original']['right']}/"
              f"{int8['fields']}), malignant sensitivity {sens['share']:.1%} ({sens['right']}/{sens['of']}), benign "
              f"specificity {spec['share']:.1%} ({spec['right']}/{spec['of']}); cells painted out "
              f"{int8['background_only']['accuracy']:.1%}; map mass on the cells "
              f"{maps.get('mass_ratio', float('nan')):.2f}x uniform (95% {low or float('nan'):.2f}-"
              f"{high or float('nan'):.2f}, {maps['mapped']} maps, {maps['flat']} flat of {maps['right']} right)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the original model's `allx train` run folder")
    parser.add_argument("--data", type=Path, required=True, help="the Original data folder")
    parser.add_argument("--segmented", type=Path, required=True, help="the Segmented folder, same file names")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/allx-shortcut"), help="derived images and runs")
    parser.add_argument("--views", default="background,cells", help="which derived copies to train on (none: none)")
    parser.add_argument("--swap", action="store_true", help="also the plain and background swap models side by side")
    parser.add_argument("--per-class", type=int, default=12, help="--swap: mapped test fields per class (explain.py's)")
    parser.add_argument("--precisions", default="int8", help="--swap: conversions to measure, e.g. int8,float32")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "explain_shortcut.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/explain_shortcut.py " + " ".join(argv if argv is not None else sys.argv[1:])
    split_path = args.run / "split.json"
    split = json.loads(split_path.read_text())
    relpaths = sorted(split["train"] + split["val"] + split["test"])
    config = json.loads((args.run / "train_config.json").read_text())
    results = {"original": test_accuracy(args.run / "metrics.json")}
    for view in [] if args.views == "none" else args.views.split(","):
        root = write_view(view, relpaths, args)
        out = args.scratch / f"run-{view}"
        subprocess.run([str(Path(sys.executable).parent / "allx"), "train", str(root), "--out", str(out), "--split",
                        str(split_path), "--backbone", config["backbone"], "--seed", str(config["seed"])], check=True)
        results[view] = test_accuracy(out / "metrics.json")
    result = {"benchmark": "explain_shortcut", "command": command,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "recipe": {key: config.get(key) for key in ("backbone", "head", "features", "seed", "group_by")},
              "split_kind": (split.get("meta") or {}).get("split_kind"), "test_images": len(split["test"]),
              "results": results, "swap": swap_comparison(split_path, split, config, args) if args.swap else None}
    write_json(args.out, result)
    for view, entry in results.items():
        low, high = entry["interval"]
        print(f"{view:10s} held-out test accuracy {entry['accuracy']:.1%} (95% {low:.1%}-{high:.1%}, n={entry['n']})")
    if result["swap"]:
        print_comparison(result["swap"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
