"""Which map method points at the cell: squares of three sizes and random masks, chosen on DEV fields.

The int8 model of `benchmarks/explain.py` and the same held-out TEST fields (a stride through each class
of the split's test subset in file-number order). The first `--dev` fields of each class are DEV: the
method is chosen there, by its ratio of map mass inside the segmented cell to a uniform map's; the
ratio of every method on the other fields (EVAL) is reported beside it, so the chosen one's EVAL ratio is
an honest estimate and the others' are context. A flat map (no copy moved the int8 probability) has no
mass to place: counted apart, and counted as uniform (ratio 1) in the "flat as uniform" ratio, by which
the method is chosen. Cells come from two references: the Segmented set's colour threshold (the target's
definition) and a stain mask of the Original (`stain_mask`: the Segmented set misses most Pro cells). The cost
of each method is its interpreter invokes per field (the milliseconds of a loaded machine are not
quoted; `benchmarks/explain.py` times the product's method on a quiet one).

Usage:
    nice -n 10 python benchmarks/explain_methods.py --model MODEL_DIR --split RUN/split.json \
        --data ../shared/data/all-taleqani/Original --segmented ../shared/data/all-taleqani/Segmented \
        [--per-class 12] [--dev 4] [--out benchmarks/results/explain_methods.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.edge_runner.explain import Occlusion, RandomMasks, explain  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.files import write_json  # noqa: E402
from benchmarks.explain import both_masks, mass_ratio, spread  # noqa: E402


def methods(size: tuple[int, int]) -> dict[str, Occlusion | RandomMasks]:
    """The product's first method (quarter-side grey squares) and the candidates that a first look at one DEV
    field per class left standing (of squares of 1/4, 1/3 and 1/8 of the side and random masks on 6 x 6 and
    8 x 8 boards, each covered with grey, the field's mean colour or the field blurred, the blur did best on
    four of the five shapes):
    blurred squares of each size and random masks on both boards, with one grey row for the fill's effect."""
    side = min(size)
    return {"squares 1/4 stride 1/8, grey": Occlusion(side // 4, side // 8, "grey"),
            "squares 1/4 stride 1/8, blur": Occlusion(side // 4, side // 8, "blur"),
            "squares 1/3 stride 1/6, blur": Occlusion(side // 3, side // 6, "blur"),
            "squares 1/8 stride 1/8, blur": Occlusion(side // 8, side // 8, "blur"),
            "random masks 96 on 6x6, blur": RandomMasks(96, 6, 0.5, "blur"),
            "random masks 96 on 8x8, blur": RandomMasks(96, 8, 0.5, "blur"),
            "random masks 96 on 8x8, grey": RandomMasks(96, 8, 0.5, "grey")}


def ratio(entry: dict) -> str:
    """The flat-as-uniform ratio, then the ratio over the fields with a map."""
    if not entry.get("mapped"):
        return "all flat"
    return f"{entry['mass_ratio_flat_as_uniform']:.2f}x/{entry['mass_ratio']:.2f}x"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an allx convert folder or .tflite")
    parser.add_argument("--split", type=Path, required=True, help="the split the model was trained with")
    parser.add_argument("--data", type=Path, required=True, help="the data folder of the split (Original)")
    parser.add_argument("--segmented", type=Path, required=True, help="the Segmented folder, same file names")
    parser.add_argument("--per-class", type=int, default=12, help="test fields per class, spread by file number")
    parser.add_argument("--dev", type=int, default=4, help="the first this many fields of each class choose")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "explain_methods.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/explain_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    model = EdgeModel.load(args.model, threads=1)
    relpaths = spread(list(json.loads(args.split.read_text())["test"]), args.per_class)
    dev = {path for label in {p.split("/")[0] for p in relpaths}
           for path in [p for p in relpaths if p.split("/")[0] == label][:args.dev]}
    candidates = methods(model.input_size)
    rows = {name: [] for name in candidates}
    invokes, cpu = {}, {name: 0.0 for name in candidates}
    for relpath in relpaths:
        pixels = model.load_pixels(args.data / relpath)
        segmented, stained = both_masks(args, relpath, pixels, model.input_size)
        for name, method in candidates.items():
            start = time.process_time()
            result = explain(model, pixels, method)
            cpu[name] += time.process_time() - start
            invokes[name] = result.invokes
            rows[name].append({"path": relpath, "dev": relpath in dev, "right": result.label == relpath.split("/")[0],
                               "flat": bool(np.maximum(result.heat, 0).sum() == 0),
                               "cell_share": float(segmented.mean()), "mass_inside": result.mass_inside(segmented),
                               "stain_share": float(stained.mean()), "stain_mass_inside": result.mass_inside(stained)})
    summary = {}
    for name in candidates:
        right = [r for r in rows[name] if r["right"]]
        summary[name] = {"invokes_per_field": invokes[name], "cpu_ms_per_field": 1000 * cpu[name] / len(relpaths),
                         "flat": {part: sum(r["flat"] for r in right if r["dev"] == (part == "dev"))
                                  for part in ("dev", "eval")}}
        for part in ("dev", "eval"):
            fields = [r for r in right if r["dev"] == (part == "dev")]
            summary[name][part] = {"stain": mass_ratio(fields, "stain_mass_inside", "stain_share"),
                                   "segmented": mass_ratio(fields, "mass_inside", "cell_share")}
    chosen = max(summary, key=lambda name: summary[name]["dev"]["stain"].get("mass_ratio_flat_as_uniform", 0))
    result = {"benchmark": "explain_methods", "command": command,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "model": str(model.model_path), "model_sha256": model.sha256,
              "split_kind": (model.manifest.document.get("origin") or {}).get("split_kind"),
              "fields": len(relpaths), "dev_fields": len(dev), "chosen_on_dev": chosen,
              "chosen_by": "DEV stain-mask mass ratio, flat maps counted as uniform", "methods": summary,
              "per_field": {name: rows[name] for name in candidates}}
    write_json(args.out, result)
    for name, entry in summary.items():
        mark = "  <- chosen on DEV" if name == chosen else ""
        dev, held = entry["dev"], entry["eval"]
        print(f"{name:38s} {entry['invokes_per_field']:4d} invokes  DEV stain {ratio(dev['stain'])} (flat "
              f"{entry['flat']['dev']})  EVAL stain {ratio(held['stain'])} segmented {ratio(held['segmented'])} "
              f"(flat {entry['flat']['eval']}){mark}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
