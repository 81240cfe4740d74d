"""--debug and --float-layers: per-layer int8 error (TensorFlow's QuantizationDebugger) and selective quantization."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from allx.convert.tflite import run_converter
from allx.convert.modes import MODES
from allx.convert.tflite import make_converter
from allx.files import csv_text
from allx.text import markdown_table

WORST_SHOWN = 10
# Ranking: rmse relative to the float layer's own RMS ("noise-to-signal"). TensorFlow's guide ranks by
# rmse/scale, but that is blind to the commonest failure, a scale made too coarse by an outlier range:
# a layer whose values all round to zero has a small rmse/scale and a noise-to-signal near 1. Both are kept.
SUSPICIOUS_NOISE_TO_SIGNAL = 0.1


@dataclass(frozen=True)
class LayerError:
    """How far one quantized layer's output is from the float layer, fed the same quantized input."""

    op_name: str
    tensor_name: str
    elements: int
    noise_to_signal: float  # rmse / RMS of the float output
    rmse: float
    float_rms: float
    max_abs_error: float
    mean_error: float
    scale: float
    rmse_over_scale: float  # in quantization steps: rounding alone gives ~0.29


def float_rms(float_values, quantized_values, scale, zero_point) -> float:
    """Debugger "direct compare" metric: RMS of the float layer output (the signal)."""
    return float(np.sqrt(np.mean(np.square(np.asarray(float_values, dtype=np.float64)))))


def make_debugger(saved_model_dir: str, representative: Callable[[], Iterator[list[np.ndarray]]],
                  denylisted: tuple[str, ...] = ()):
    import tensorflow as tf

    converter = make_converter(saved_model_dir, MODES["int8"], "float", representative)
    if denylisted:
        # float kernels are needed for the layers left in float
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"float_rms": float_rms}, denylisted_nodes=list(denylisted) or None)
    return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                     debug_options=options)


def measure_layer_errors(saved_model_dir: str, representative, log_path: Path) -> tuple[LayerError, ...]:
    """Every quantized layer's error on the representative set, worst (largest noise-to-signal) first."""

    def run() -> str:
        with warnings.catch_warnings():  # the debugger uses tf.lite.Interpreter internally: not ours to fix
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            debugger = make_debugger(saved_model_dir, representative)
            debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
        return buffer.getvalue()

    dump = run_converter(run, log_path, "QuantizationDebugger")
    layers = [layer_from_row(row) for row in csv.DictReader(io.StringIO(dump))]
    return tuple(sorted(layers, key=lambda layer: -layer.noise_to_signal))


def layer_from_row(row: dict) -> LayerError:
    rmse = math.sqrt(max(float(row["mean_squared_error"]), 0.0))
    scale, signal = float(row["scale"]), float(row["float_rms"])
    return LayerError(row["op_name"], row["tensor_name"], int(float(row["num_elements"])),
                      rmse / signal if signal > 0 else (0.0 if rmse == 0 else math.inf), rmse, signal,
                      float(row["max_abs_error"]), float(row["mean_error"]), scale,
                      rmse / scale if scale > 0 else math.inf)


def selective_model(saved_model_dir: str, representative, denylisted: tuple[str, ...], log_path: Path) -> bytes:
    """int8 everywhere except the `denylisted` layers, which stay float (input and output are float32)."""

    def run() -> bytes:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return make_debugger(saved_model_dir, representative, denylisted).get_nondebug_quantized_model()

    return run_converter(run, log_path, f"selective quantization ({len(denylisted)} float layers)")


def layers_csv(layers: tuple[LayerError, ...]) -> str:
    fields = list(LayerError.__dataclass_fields__)
    rows = ([rank, *asdict(layer).values()] for rank, layer in enumerate(layers, start=1))
    return csv_text(["rank", *fields], rows, lineterminator="\n")


def layers_markdown(layers: tuple[LayerError, ...], csv_name: str) -> str:
    lines = ["## Per-layer quantization error (QuantizationDebugger)", "",
             f"Worst {min(WORST_SHOWN, len(layers))} of {len(layers)} quantized layers by noise-to-signal "
             f"(rmse / RMS of the float output; above {SUSPICIOUS_NOISE_TO_SIGNAL} deserves a look). "
             "rmse/scale is the error in quantization steps (rounding alone gives ~0.29). "
             f"All layers: `{csv_name}`.", ""]
    rows = []
    for rank, layer in enumerate(layers[:WORST_SHOWN], start=1):
        name = layer.tensor_name if len(layer.tensor_name) <= 60 else layer.tensor_name[:57] + "..."
        rows.append((rank, layer.op_name, f"`{name}`", f"{layer.noise_to_signal:.3f}", f"{layer.rmse_over_scale:.3f}",
                     f"{layer.rmse:.4g}", f"{layer.scale:.4g}"))
    lines += markdown_table(("rank", "op", "tensor", "noise/signal", "rmse/scale", "rmse", "scale"), rows)
    return "\n".join(lines)


def tradeoff_markdown(rows: list[dict]) -> str:
    """rows: {"model", "accuracy", "agreement", "size_bytes", "latency_ms_p50", "passed"} per variant."""
    header = ("model", "accuracy", "agreement", "size (MB)", "latency p50 (ms)", "gate")
    table = markdown_table(header, ((row["model"], f"{row['accuracy']:.2%}", f"{row['agreement']:.4f}",
                                     f"{row['size_bytes'] / 1e6:.3f}", f"{row['latency_ms_p50']:.2f}",
                                     "pass" if row["passed"] else "fail") for row in rows))
    return "\n".join(["## Selective quantization trade-off", "", *table])
