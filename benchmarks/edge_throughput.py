"""Is `allx-edge classify` as fast as the interpreter? Folder throughput vs bare invoke() rate, and cold start.

Targets: a folder classified at >= 0.92x the bare invoke() rate that `allx-edge bench` measures, never below
a plain sequential decode-then-classify loop, and a cold start of `allx-edge classify` to its first result of
<= 350 ms median. This script measures them with the runner's own code (edge_runner.bench,
edge_runner.batch) in alternating rounds of one process, and a subprocess for the cold start. The classify pass
is the product's: `classify_paths` on a model given all cores (or --threads), which runs one one-thread replica
of it per thread, each decoding and classifying its own images. Each pass also records the CPU time it used:
on a machine shared with other work the wall-clock rates move with the load (recorded before and after), the
CPU time much less. Classify's CPU per image is set against its floor, a one-thread invoke() plus a decode.
Prints a table and writes JSON.

The cold start is timed twice: as installed (Python reads compiled bytecode, which `pip install` writes for
allx and its dependencies; here a scratch bytecode cache filled by one untimed run), and from source (allx's
modules compiled at every start, as in an editable checkout run with PYTHONDONTWRITEBYTECODE=1). The target
is judged on the installed figure, the way a device runs.

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
from allx.errors import ImageError  # noqa: E402
from allx.images import is_image_file  # noqa: E402
from allx.edge_runner.batch import classify_paths, replica_count  # noqa: E402
from allx.edge_runner.bench import bench_model, machine_info  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.files import write_json  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "bench" / "mobilenetv2_int8.tflite"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "edge_throughput.json"
TARGET_RATIO = 0.92
TARGET_COLD_MS = 350


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


def cold_start_ms(model: Path, image: Path, repeats: int, bytecode_cache: Path | None) -> tuple[list[float], list[float]]:
    """Wall time from spawning `allx-edge classify` to its first JSON line on stdout, and the CPU time the
    whole run took (user + system). With `bytecode_cache`, one untimed run first writes every module's bytecode
    there and the timed runs read it; without, allx's own modules are compiled from source at every start."""
    command = [sys.executable, "-c", "import sys; from allx.edge_runner.cli import app; sys.argv[0] = 'allx-edge'; app()",
               "classify", str(image), "--model", str(model), "--json"]
    env = dict(os.environ)
    if bytecode_cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    times, cpu = [], []
    for _ in range(repeats):
        before = os.times()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        first = process.stdout.readline()
        times.append((time.perf_counter() - start) * 1000.0)
        process.wait()
        after = os.times()
        cpu.append(1000.0 * (after.children_user + after.children_system - before.children_user
                             - before.children_system))
        if not first.startswith("{"):
            sys.exit(f"error: allx-edge classify gave no result line (exit {process.returncode})")
    return times, cpu


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def sequential_pass(model: EdgeModel, paths: list[str]) -> None:
    """The plain loop classify is measured against: decode one image, classify it, then the next."""
    for path in paths:
        try:
            model.classify(model.load_pixels(path))
        except ImageError:
            pass


def invoke_cpu_ms(model: EdgeModel, pixels, runs: int) -> float:
    """CPU time of this process per bare invoke() (the interpreter's threads included), for the CPU ratios."""
    model.set_input(pixels)
    start = time.process_time()
    for _ in range(runs):
        model.invoke()
    return 1000.0 * (time.process_time() - start) / runs


def decode_cpu_ms(model: EdgeModel, paths: list[str]) -> float:
    """CPU time of this process per image decoded and resized to the model's input (allx.images), on this thread."""
    start = time.process_time()
    for path in paths:
        try:
            model.load_pixels(path)
        except ImageError:
            pass
    return 1000.0 * (time.process_time() - start) / len(paths)


def measure(model_path: Path, images: list[Path], threads: int | None, runs: int, repeats: int, rounds: int,
            scratch: Path) -> dict:
    """Bare invoke() rate, classify rate and the sequential loop's rate, interleaved over `rounds` so that
    load from other processes hits all three alike; each ratio is the median of the per-round ratios."""
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    for path in images:  # read every file once, so that no pass pays for a cold disk cache
        path.read_bytes()
    model = EdgeModel.load(model_path, threads=threads)
    paths = [str(p) for p in images]
    classify_paths(model, paths[:8])  # warm-up
    replicas = replica_count(model, [(path, None) for path in paths])
    one_thread = model.replica(threads=1)  # what each of classify's replicas runs
    rates = {"invoke": [], "classify": [], "sequential": []}
    # CPU time of the whole process per image; "invoke_1_thread" + "decode" is what classify cannot go below
    cpu_ms = {"invoke": [], "classify": [], "sequential": [], "invoke_1_thread": [], "decode": []}
    first_pixels = model.load_pixels(paths[0])
    summaries = []
    passes = {"classify": lambda: summaries.append(classify_paths(model, paths)[1]),
              "sequential": lambda: sequential_pass(model, paths)}
    for _ in range(rounds):
        bench = bench_model(model_path, runs=runs, warmup=10, threads=threads, delegate="auto", image_paths=None)
        before = bench.throughput_ips
        cpu_ms["invoke"].append(invoke_cpu_ms(model, first_pixels, runs))
        cpu_ms["invoke_1_thread"].append(invoke_cpu_ms(one_thread, first_pixels, runs))
        cpu_ms["decode"].append(decode_cpu_ms(model, paths))
        for name, run in passes.items():
            wall, seconds = timed(run)
            rates[name].append(len(paths) / wall)
            cpu_ms[name].append(1000.0 * seconds / len(paths))
        # the bare rate of a round is the mean of one measured before its passes and one after, so that a
        # change in the machine's load during the round moves both sides of its ratios alike
        after = bench_model(model_path, runs=runs, warmup=10, threads=threads, delegate="auto", image_paths=None)
        rates["invoke"].append((before + after.throughput_ips) / 2)
    cold, cold_cpu = cold_start_ms(model_path, images[0], repeats, scratch / "bytecode")
    source, source_cpu = cold_start_ms(model_path, images[0], repeats, None)

    def ratio(name: str) -> float:
        return statistics.median(r / i for r, i in zip(rates[name], rates["invoke"]))

    invoke, classify, sequential = rates["invoke"], rates["classify"], rates["sequential"]
    cpu = {name: statistics.median(values) for name, values in cpu_ms.items()}
    return {
        "model": str(model.model_path), "precision": bench.precision, "input_shape": list(bench.input_shape),
        "runtime": bench.runtime, "threads": bench.threads, "images": len(images), "rounds": rounds,
        "invoke_ips": statistics.median(invoke), "invoke_mean_ms": 1000.0 / statistics.median(invoke),
        "classify_ips": statistics.median(classify), "classify_failures": summaries[-1].failures,
        "classify_replicas": replicas,
        "classify_vs_invoke": ratio("classify"), "sequential_ips": statistics.median(sequential),
        "sequential_vs_invoke": ratio("sequential"),
        "classify_vs_sequential": statistics.median(c / s for c, s in zip(classify, sequential)),
        "cpu_ms_per_image": cpu,
        "per_round": {"invoke_ips": invoke, "classify_ips": classify, "sequential_ips": sequential,
                      "cpu_ms_per_image": cpu_ms},
        "cpu_vs_invoke": {name: statistics.median(cpu_ms["invoke"]) / statistics.median(cpu_ms[name])
                          for name in ("classify", "sequential")},
        "classify_cpu_vs_floor": (cpu["invoke_1_thread"] + cpu["decode"]) / cpu["classify"],
        "cold_start_ms": {"median": statistics.median(cold), "min": min(cold), "all": cold,
                          "cpu_median": statistics.median(cold_cpu), "cpu_all": cold_cpu,
                          "bytecode": "compiled once, as pip install leaves it"},
        "cold_start_from_source_ms": {"median": statistics.median(source), "min": min(source), "all": source,
                                      "cpu_median": statistics.median(source_cpu), "cpu_all": source_cpu,
                                      "bytecode": "allx compiled from source at every start"},
        "targets": {"classify_vs_invoke": TARGET_RATIO, "cold_start_ms": TARGET_COLD_MS},
        "machine": machine_info().__dict__, "load_average": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def print_table(result: dict) -> None:
    rows = [("model", f"{Path(result['model']).name} ({result['precision']}, input {result['input_shape']})"),
            ("runtime / threads", f"{result['runtime']} / {result['threads']}"),
            ("images", str(result["images"])),
            ("bare invoke() (median)", f"{result['invoke_ips']:.1f} img/s ({result['invoke_mean_ms']:.2f} ms)"),
            (f"classify ({result['classify_replicas']} x 1-thread)", f"{result['classify_ips']:.1f} img/s, "
                                                                 f"{result['cpu_ms_per_image']['classify']:.2f} ms "
                                                                 "CPU/image"),
            ("classify / invoke", f"{result['classify_vs_invoke']:.2f}x (target >= {TARGET_RATIO:.2f}x)"),
            ("sequential decode+classify", f"{result['sequential_ips']:.1f} img/s "
                                           f"({result['sequential_vs_invoke']:.2f}x of invoke), "
                                           f"{result['cpu_ms_per_image']['sequential']:.2f} ms CPU/image"),
            ("classify / sequential", f"{result['classify_vs_sequential']:.2f}x (target >= 1.00x)"),
            ("CPU per image vs invoke", f"classify {result['cpu_vs_invoke']['classify']:.2f}x, sequential "
                                        f"{result['cpu_vs_invoke']['sequential']:.2f}x "
                                        f"(invoke {result['cpu_ms_per_image']['invoke']:.2f} ms CPU)"),
            ("classify CPU vs its floor", f"{result['classify_cpu_vs_floor']:.2f}x (1-thread invoke "
                                          f"{result['cpu_ms_per_image']['invoke_1_thread']:.2f} + decode "
                                          f"{result['cpu_ms_per_image']['decode']:.2f} ms CPU)"),
            ("cold start to first result", f"{result['cold_start_ms']['median']:.0f} ms median "
                                           f"(min {result['cold_start_ms']['min']:.0f}; target <= {TARGET_COLD_MS} ms), "
                                           f"{result['cold_start_ms']['cpu_median']:.0f} ms CPU"),
            ("  the same from source", f"{result['cold_start_from_source_ms']['median']:.0f} ms median "
                                       f"(min {result['cold_start_from_source_ms']['min']:.0f}), "
                                       f"{result['cold_start_from_source_ms']['cpu_median']:.0f} ms CPU")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    m = result["machine"]
    load = (f", load average {result['load_average'][0]:.1f} before, {result['load_average_after'][0]:.1f} after"
            if result["load_average"] else "")
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
    parser.add_argument("--rounds", type=int, default=7, help="interleaved invoke/classify rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args()
    if args.images is None and not args.quick:
        parser.error("give --images DIR, or --quick for generated images")
    model_path = args.model or build_default_model(DEFAULT_MODEL)
    temp = Path(tempfile.mkdtemp(prefix="allx-edge-bench-"))
    try:
        images = generated_images(temp / "data", 64) if args.images is None else image_list(args.images, args.limit)
        result = measure(model_path, images, args.threads, args.runs, args.repeats, args.rounds, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    result["images_source"] = "generated (allx.synthetic, 224x224 JPEG)" if args.images is None else str(args.images)
    print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
