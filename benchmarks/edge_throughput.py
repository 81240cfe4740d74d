"""Is `allx-edge classify` as fast as the interpreter? Folder throughput vs bare invoke() rate, and cold start.

Issue 4 asks that a folder be classified at >= 0.8x the bare invoke() rate that `allx-edge bench`
measures, in the same run, and that the cold start of `allx-edge classify` to its first result be low.
This script measures the three numbers with the runner's own code (edge_runner.bench, edge_runner.batch)
and a subprocess for the cold start, prints a table and writes JSON.

Usage:
    python benchmarks/edge_throughput.py --quick
        generated 224x224 smear-like JPEGs and a MobileNetV2 int8 model built here (cached in models/bench/)
    python benchmarks/edge_throughput.py --model OUT_DIR_OR_TFLITE --images ../shared/data/all-taleqani/Original --limit 400
        a model from `allx convert` on real images
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx import layout
from allx.images import is_image_file  # noqa: E402
from allx.edge_runner.batch import classify_paths  # noqa: E402
from allx.edge_runner.bench import bench_model, machine_info, time_end_to_end  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.files import write_json  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "bench" / "mobilenetv2_int8.tflite"
DEFAULT_OUT = REPO / "models" / "bench" / "edge_throughput.json"


def build_default_model(path: Path, size: int = 224) -> Path:
    """MobileNetV2 (random weights: speed does not depend on them), raw-pixel input, full int8, uint8 IO."""
    if path.exists():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg")
    outputs = keras.layers.Dense(4, activation="softmax")(base(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)

    def representative():
        yield [np.zeros((1, size, size, 3), np.float32)]
        yield [np.full((1, size, size, 3), 255, np.float32)]
        for _ in range(8):
            yield [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    path.with_name(layout.LABELS).write_text("Benign\nEarly\nPre\nPro\n")
    return path


def generated_images(folder: Path, count: int, size: int = 224) -> list[Path]:
    from allx.synthetic import make_dataset

    make_dataset(folder, per_class=max(1, count // 4), size=size, seed=0)
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def image_list(folder: Path, limit: int) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not paths:
        sys.exit(f"error: no images in {folder}")
    step = max(1, len(paths) // limit)  # spread over all classes, not the first folder only
    return paths[::step][:limit]


def cold_start_ms(model: Path, image: Path, repeats: int) -> list[float]:
    """Wall time from spawning `allx-edge classify` to its first JSON line on stdout."""
    command = [sys.executable, "-c", "import sys; from allx.edge_runner.cli import app; sys.argv[0] = 'allx-edge'; app()",
               "classify", str(image), "--model", str(model), "--json"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = process.stdout.readline()
        times.append((time.perf_counter() - start) * 1000.0)
        process.wait()
        if not first.startswith("{"):
            sys.exit(f"error: allx-edge classify gave no result line (exit {process.returncode})")
    return times


def measure(model_path: Path, images: list[Path], threads: int | None, runs: int, repeats: int, rounds: int) -> dict:
    """Bare invoke() rate and classify rate, interleaved over `rounds` so that load from other
    processes hits both alike; the ratio is the median of the per-round ratios."""
    for path in images:  # read every file once, so that no pass pays for a cold disk cache
        path.read_bytes()
    model = EdgeModel.load(model_path, threads=threads)
    paths = [str(p) for p in images]
    classify_paths(model, paths[:8])  # warm-up
    invoke, classify, failures = [], [], 0
    for _ in range(rounds):
        bench = bench_model(model_path, runs=runs, warmup=10, threads=threads, delegate="auto", image_paths=None)
        invoke.append(bench.throughput_ips)
        _, summary = classify_paths(model, paths)
        classify.append(summary.images_per_s)
        failures = summary.failures
    sequential = time_end_to_end(model, images)
    cold = cold_start_ms(model_path, images[0], repeats)
    ratios = [c / i for c, i in zip(classify, invoke)]
    return {
        "model": str(model.model_path), "precision": bench.precision, "input_shape": list(bench.input_shape),
        "runtime": bench.runtime, "threads": bench.threads, "images": len(images), "rounds": rounds,
        "invoke_ips": statistics.median(invoke), "invoke_mean_ms": 1000.0 / statistics.median(invoke),
        "classify_ips": statistics.median(classify), "classify_failures": failures,
        "classify_vs_invoke": statistics.median(ratios), "per_round": {"invoke_ips": invoke, "classify_ips": classify},
        "sequential_ips": sequential.images_per_s,
        "cold_start_ms": {"median": statistics.median(cold), "min": min(cold), "all": cold},
        "machine": machine_info().__dict__, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def print_table(result: dict) -> None:
    rows = [("model", f"{Path(result['model']).name} ({result['precision']}, input {result['input_shape']})"),
            ("runtime / threads", f"{result['runtime']} / {result['threads']}"),
            ("images", str(result["images"])),
            ("bare invoke() (median)", f"{result['invoke_ips']:.1f} img/s ({result['invoke_mean_ms']:.2f} ms)"),
            ("classify (overlapped decode)", f"{result['classify_ips']:.1f} img/s"),
            ("classify / invoke", f"{result['classify_vs_invoke']:.2f}x (target >= 0.80x)"),
            ("sequential decode+invoke", f"{result['sequential_ips']:.1f} img/s"),
            ("cold start to first result", f"{result['cold_start_ms']['median']:.0f} ms median "
                                           f"(min {result['cold_start_ms']['min']:.0f})")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    m = result["machine"]
    load = f", load average {result['load_average'][0]:.1f}" if result["load_average"] else ""
    print(f"{'machine':<{width}}  {m['cpu_model']}, {m['cores']} cores, {m['os']}, Python {m['python']}{load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help=f"a .tflite or `allx convert` folder (default: build {DEFAULT_MODEL.name})")
    parser.add_argument("--images", type=Path, help="folder of images (default with --quick: generated)")
    parser.add_argument("--quick", action="store_true", help="generated images, 64 of them")
    parser.add_argument("--limit", type=int, default=300, help="at most this many images (spread over the folder)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: all cores)")
    parser.add_argument("--runs", type=int, default=100, help="timed invoke() calls for the bare rate")
    parser.add_argument("--repeats", type=int, default=3, help="cold starts to time")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved invoke/classify rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args()
    if args.images is None and not args.quick:
        parser.error("give --images DIR, or --quick for generated images")
    model_path = args.model or build_default_model(DEFAULT_MODEL)
    temp = Path(tempfile.mkdtemp(prefix="allx-edge-bench-"))
    try:
        images = generated_images(temp / "data", 64) if args.images is None else image_list(args.images, args.limit)
        result = measure(model_path, images, args.threads, args.runs, args.repeats, args.rounds)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    result["images_source"] = "generated (allx.synthetic, 224x224 JPEG)" if args.images is None else str(args.images)
    print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
