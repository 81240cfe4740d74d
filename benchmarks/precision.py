"""One trained model as float32, float16, dynamic-range and int8: size, latency, accuracy, agreement.

Each precision is made by `allx convert`'s library call (so each gets the same accuracy check, through
the edge runner, on the same check subset); the latencies are then measured in the same run, one model
after the other, with edge_runner.bench.time_invoke (bare invoke(), input set once, after a warm-up).
The out-of-distribution warning is off here (--no-ood): it adds a second output and a calibration pass
per model, and benchmarks/ood.py measures it; the class probabilities are the same either way.

Usage:
    python benchmarks/precision.py --quick
        generated 4-class images and a small CNN trained here for a few seconds (tests the script;
        32 representative images unless given)
    python benchmarks/precision.py RUN/model.keras --out models/precision [--data DIR] [--split SPLIT.json]
        [--representative-count 200] [--runs 100] [--threads N]
        a model from `allx train` (its run folder's split and labels are found without flags)
    python benchmarks/precision.py RUN/model.keras --sweep-representative 10,25,50,100,200,400 --seeds 3
        int8 accuracy vs representative-set size (the measurement behind the default of 200)
Writes OUT/precision.json (or OUT/representative_sweep.json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from allx import layout
from allx.errors import AllxError, ConversionError  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.text import markdown_table  # noqa: E402

PRECISIONS = ("float32", "float16", "dynamic", "int8")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="MODEL.keras (omit with --quick)")
    parser.add_argument("--quick", action="store_true", help="generated data and a tiny model trained here")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "precision", help="output folder")
    parser.add_argument("--data", type=Path, help="DATA_DIR (default: from the run folder's split.json)")
    parser.add_argument("--split", type=Path, help="SPLIT.json (default: split.json beside the model)")
    parser.add_argument("--representative-count", type=int, default=None, help="int8 calibration images")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: all cores)")
    parser.add_argument("--sweep-representative", type=str, default=None, metavar="N,N,...",
                        help="instead: int8 only, at each representative-set size (and --seeds), to choose the default")
    parser.add_argument("--seeds", type=int, default=2, help="representative draws per size in the sweep")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if (args.model is None) == (not args.quick):
        parser.error("give MODEL.keras or --quick (one of them)")
    if args.quick and args.representative_count is None:
        args.representative_count = 32  # the generated train subset has 64 images
    return args


def make_quick_run(folder: Path) -> Path:
    """A run folder like `allx train` writes: 4 x 24 generated 64x64 images, split.json, labels.txt, model.keras."""
    import keras

    from allx.images import load_image
    from allx.synthetic import CLASSES, make_dataset
    from allx.train.split import Split, write_split

    data = make_dataset(folder / "data", per_class=24, size=64, seed=1)
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    train = tuple(p for i, p in enumerate(paths) if i % 24 < 16)
    val = tuple(p for i, p in enumerate(paths) if i % 24 >= 16)
    run = folder / "run"
    run.mkdir()
    write_split(Split(CLASSES, train, val, (), {"data_dir": str(data.resolve())}), run / layout.SPLIT)
    (run / layout.LABELS).write_text("\n".join(CLASSES) + "\n")
    pixels = np.stack([load_image(data / p, (64, 64)) for p in train]).astype(np.float32)
    labels = np.array([CLASSES.index(p.split("/")[0]) for p in train])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for filters in (16, 32):
        x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(filters, 3, activation="relu")(x))
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(pixels, labels, epochs=30, batch_size=16, verbose=0)
    model.save(run / layout.MODEL_KERAS)
    return run / layout.MODEL_KERAS


def convert_all(model: Path, out: Path, args) -> dict:
    """precision -> ConvertResult, each in OUT/<precision>/ (a rejected model is measured all the same)."""
    from allx.convert.modes import resolve_options
    from allx.convert.pipeline import convert_keras

    results = {}
    for precision in PRECISIONS:
        count = args.representative_count if precision == "int8" else None
        print(f"converting {precision} ...", file=sys.stderr)
        options = resolve_options(precision, representative_count=count, ood=False,  # see the module docstring
                                  accuracy_control=False)  # the int8 row is plain int8, never a variant
        try:
            results[precision] = convert_keras(model, out / precision, options, args.data, args.split)
        except ConversionError as err:  # one precision failing must not hide the others' numbers
            print(f"error: {precision}: {err}", file=sys.stderr)
            results[precision] = str(err)
    return results


def time_models(results: dict, runs: int, warmup: int, threads: int | None) -> dict:
    """precision -> (p50, p95, mean) ms of bare invoke() through edge_runner, one model after the other."""
    from allx.edge_runner.bench import time_invoke
    from allx.edge_runner.model import EdgeModel

    timings = {}
    for precision, result in converted(results).items():
        model = EdgeModel.load(result.files["model"], threads=threads)
        pixels = np.random.default_rng(0).integers(0, 256, (*model.input_size, 3), dtype=np.uint8)
        latencies = np.asarray(time_invoke(model, pixels, runs, warmup))
        timings[precision] = (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)),
                              float(latencies.mean()), model.threads, model.runtime)
    return timings


def converted(results: dict) -> dict:
    return {precision: result for precision, result in results.items() if not isinstance(result, str)}


def rows_of(results: dict, timings: dict) -> list[dict]:
    if "float32" not in converted(results):
        raise ConversionError(f"float32 conversion failed, expected it as the reference: {results['float32']}")
    reference_size = results["float32"].files["model"].stat().st_size
    reference_p50 = timings["float32"][0]
    rows = []
    for precision, result in results.items():
        if isinstance(result, str):
            rows.append({"precision": precision, "error": result})
            continue
        check, size = result.check, result.files["model"].stat().st_size
        p50, p95, mean, threads, runtime = timings[precision]
        rows.append({"precision": precision, "size_bytes": size, "size_ratio_vs_float32": reference_size / size,
                     "latency_ms_p50": p50, "latency_ms_p95": p95, "latency_ms_mean": mean,
                     "speedup_vs_float32": reference_p50 / p50, "float_accuracy": check.float.accuracy,
                     "accuracy": check.quantized.accuracy, "drop_pp": check.drop_pp, "agreement": check.agreement,
                     "malignant_sensitivity": check.quantized.malignant_sensitivity, "passed": check.passed,
                     "check_subset": check.subset, "check_images": check.images, "threads": threads,
                     "runtime": runtime, "model_file": str(result.files["model"])})
    return rows


PRECISION_COLUMNS = ("precision", "size (MB)", "smaller", "p50 (ms)", "p95 (ms)", "faster", "accuracy", "drop (pp)",
                     "agreement", "gate")


def markdown(rows: list[dict]) -> str:
    return "\n".join(markdown_table(PRECISION_COLUMNS, (precision_row(r) for r in rows)))


def precision_row(r: dict) -> tuple:
    if "error" in r:
        return (r["precision"], f"conversion failed: {r['error']}", *[""] * (len(PRECISION_COLUMNS) - 2))
    return (r["precision"], f"{r['size_bytes'] / 1e6:.3f}", f"{r['size_ratio_vs_float32']:.2f}x",
            f"{r['latency_ms_p50']:.2f}", f"{r['latency_ms_p95']:.2f}", f"{r['speedup_vs_float32']:.2f}x",
            f"{r['accuracy']:.2%}", f"{r['drop_pp']:+.2f}", f"{r['agreement']:.4f}", "pass" if r["passed"] else "REJECTED")


def run(args) -> dict:
    from allx.edge_runner.bench import machine_info

    with tempfile.TemporaryDirectory(prefix="allx-precision-") as scratch:
        model = make_quick_run(Path(scratch)) if args.quick else args.model
        results = convert_all(model, args.out, args)
        timings = time_models(results, args.runs, args.warmup, args.threads)
    rows = rows_of(results, timings)
    document = {"command": " ".join(["python", "benchmarks/precision.py", *args.argv]),
                "model": "generated (--quick)" if args.quick else str(args.model),
                "machine": vars(machine_info()), "runs": args.runs, "warmup": args.warmup, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "precision.json", json.dumps(document, indent=2) + "\n")
    return document


def sweep(args) -> dict:
    """int8 at each representative-set size and seed: how much calibration data the accuracy needs."""
    import time

    from allx.convert.modes import resolve_options
    from allx.convert.pipeline import convert_keras

    sizes = [int(n) for n in args.sweep_representative.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="allx-sweep-") as scratch:
        model = make_quick_run(Path(scratch)) if args.quick else args.model
        for size in sizes:
            for seed in range(args.seeds):
                print(f"int8 with {size} representative images, seed {seed} ...", file=sys.stderr)
                options = resolve_options("int8", representative_count=size, seed=seed, ood=False, accuracy_control=False)
                began = time.perf_counter()
                result = convert_keras(model, args.out / "sweep" / f"n{size}_s{seed}", options, args.data, args.split)
                check = result.check
                rows.append({"representative_count": size, "seed": seed, "accuracy": check.quantized.accuracy,
                             "float_accuracy": check.float.accuracy, "drop_pp": check.drop_pp,
                             "agreement": check.agreement, "mean_abs_prob_diff": check.mean_abs_prob_diff,
                             "worst_class_drop_pp": max(c.drop_pp for c in check.per_class if c.drop_pp is not None),
                             "passed": check.passed, "seconds": time.perf_counter() - began,
                             "check_images": check.images})
    document = {"command": " ".join(["python", "benchmarks/precision.py", *args.argv]),
                "model": "generated (--quick)" if args.quick else str(args.model), "rows": rows}
    write_atomic(args.out / "representative_sweep.json", json.dumps(document, indent=2) + "\n")
    return document


def sweep_markdown(rows: list[dict]) -> str:
    header = ("representative images", "seed", "int8 accuracy", "drop (pp)", "worst class drop (pp)", "agreement",
              "mean abs prob diff", "seconds")
    return "\n".join(markdown_table(header, ((r["representative_count"], r["seed"], f"{r['accuracy']:.2%}",
                                              f"{r['drop_pp']:+.2f}", f"{r['worst_class_drop_pp']:+.2f}",
                                              f"{r['agreement']:.4f}", f"{r['mean_abs_prob_diff']:.4f}",
                                              f"{r['seconds']:.0f}") for r in rows)))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        document = sweep(args) if args.sweep_representative else run(args)
    except AllxError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(sweep_markdown(document["rows"]) if args.sweep_representative else markdown(document["rows"]))
    name = "representative_sweep.json" if args.sweep_representative else "precision.json"
    print(f"\nwrote {args.out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
