"""`allx convert --imx500` end to end on trained models: fits in the chip, accuracy after MCT, time.

For each MODEL.keras (an `allx train` run folder) the library call of `allx convert --imx500` runs:
export, MCT post-training quantization and scoring in the tool environment, imxconv-tf, and the paired
gate on the check subset (default: test, the held-out file-number blocks of a `--group-by sequence`
split). Recorded per model: Fit In Chip and the memory report, float and MCT-quantized accuracy with
95% Wilson intervals, the gate's one-sided bound on the drop, the wall time of the whole conversion
(with the machine's load average beside it: the tool step is CPU-bound), and whether the camera-side
decoding (edge_runner.imx500.decode_outputs, fed the MCT model's own outputs shaped as Picamera2's
IMX500 helper returns them) gives the same labels as the check.

Needs the tool environment (`allx tools install imx500`) and the real data; there is no --quick mode.

Usage:
    python benchmarks/imx500.py models/lite0/model.keras models/mnv2/model.keras \
        [--check-subset test] [--out benchmarks/results/imx500.json] [--work /tmp/imx500-bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from allx.convert.imx500 import convert_imx500  # noqa: E402
from allx.convert.modes import resolve_options  # noqa: E402
from allx.edge_runner.imx500 import decode_outputs  # noqa: E402
from allx.errors import ModelError  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.jsonio import read_json  # noqa: E402
from allx.text import markdown_table  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="MODEL.keras files from `allx train`")
    parser.add_argument("--check-subset", default="test", help="val or test (default test: held-out blocks)")
    parser.add_argument("--representative-count", type=int, default=None, help="MCT calibration images (default 200)")
    parser.add_argument("--fidelity-images", type=int, default=0,
                        help="train+val images for the fidelity bound (default 0: the check images only)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "imx500.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imx500-bench"), help="conversion output folders")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return [math.nan, math.nan]
    p = successes / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round((centre - half) / (1 + z * z / n), 4), round((centre + half) / (1 + z * z / n), 4)]


def as_picamera2_returns(probabilities: np.ndarray) -> list[np.ndarray]:
    """One frame's outputs as Picamera2's IMX500.get_outputs(metadata, add_batch=True) hands them over: the
    metadata's flat float32 stream, reshaped to the tensor's shape in Fortran order, a batch axis added."""
    stream = np.fromiter(probabilities, dtype=np.float32)
    return [np.expand_dims(stream.reshape((len(probabilities),), order="F"), 0)]


def decoded_label(probabilities: np.ndarray, labels) -> str | None:
    """The label allx-edge would show for these outputs; None when decode_outputs refuses them."""
    try:
        return labels[int(np.argmax(decode_outputs(as_picamera2_returns(probabilities), len(labels))))]
    except ModelError:
        return None


def decoding_agreement(result, samples: int = 24) -> dict:
    """The camera-side decoding fed the MCT model's own outputs on the check images.

    Recorded: how many give the check's label, the largest distance of an output's sum from 1 (the chip's
    softmax is 8-bit), and `samples` rows (the farthest from summing to 1 first) that
    tests/test_edge_imx500.py decodes in CI, where the tool environment is absent.
    """
    predictions_path = result.files["predictions"]
    rows = [line.split(",") for line in predictions_path.read_text().splitlines()[1:]]
    labels = result.manifest["labels"]
    outputs = [np.asarray([float(p) for p in row[4:]], np.float32) for row in rows]
    decoded = [decoded_label(o, labels) for o in outputs]
    off_sum = [abs(float(o.sum()) - 1.0) for o in outputs]
    order = sorted(range(len(rows)), key=lambda i: -off_sum[i])[:samples]
    return {"images": len(rows), "same_label": sum(d == row[3] for d, row in zip(decoded, rows)),
            "refused": decoded.count(None),
            "max_sum_error": round(max(off_sum, default=0.0), 6),
            "samples": [{"path": rows[i][0], "outputs": [float(p) for p in outputs[i]], "label": rows[i][3]}
                        for i in order]}


def measure(model: Path, args) -> dict:
    options = resolve_options("imx500", representative_count=args.representative_count,
                              check_subset=args.check_subset, fidelity_images=args.fidelity_images)
    out = args.work / model.parent.name
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    result = convert_imx500(model, out, options)
    seconds = time.perf_counter() - began
    check, imx = result.check, result.manifest["imx500"]
    n = check.images
    config = read_json(model.parent / "train_config.json", "train config")
    return {
        "model": str(model), "backbone": config.get("backbone"), "head": config.get("head"),
        "features": config.get("features"), "split_kind": result.manifest["origin"].get("split_kind"),
        "subset": check.subset, "images": n, "passed": check.passed, "failures": list(check.failures),
        "float_accuracy": check.float.accuracy, "quantized_accuracy": check.quantized.accuracy,
        "float_interval": wilson(round(check.float.accuracy * n), n),
        "quantized_interval": wilson(round(check.quantized.accuracy * n), n),
        "drop_pp": check.drop_pp, "drop_bound_pp": check.paired[0].drop_bound_pp if check.paired else None,
        "agreement": check.agreement, "fit_in_chip": imx["fit_in_chip"], "memory_report": imx["memory_report"],
        "weights_int8_mb": imx["weights_int8_bytes"] / 1e6, "tool_seconds": imx["tool_seconds"],
        "convert_seconds": round(seconds, 1), "load_average_1min": [round(load_before, 1),
                                                                    round(os.getloadavg()[0], 1)],
        "decoding": decoding_agreement(result),
        "package_bytes": result.files["model"].stat().st_size,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = [measure(model, args) for model in args.models]
    document = {"kind": "benchmark", "benchmark": "imx500", "argv": args.argv, "cpus": os.cpu_count(),
                "results": rows}
    write_atomic(args.out, json.dumps(document, indent=2) + "\n")
    print("\n".join(markdown_table(("backbone", "images", "float acc", "MCT acc", "drop (pp)", "bound (pp)",
                                     "Fit In Chip", "memory", "s"), (table_row(row) for row in rows))))


def table_row(row: dict) -> tuple:
    memory = (row["memory_report"] or {}).get("Memory Report", {})
    return (row["backbone"], row["images"], f"{row['float_accuracy']:.4f}", f"{row['quantized_accuracy']:.4f}",
            f"{row['drop_pp']:+.2f}", row["drop_bound_pp"], row["fit_in_chip"],
            f"{memory.get('Memory Usage')} of {memory.get('Total Memory Available On Chip')}",
            f"{row['convert_seconds']:.0f}")


if __name__ == "__main__":
    main()
