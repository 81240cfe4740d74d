"""TFLiteConverter calls for each mode, with TensorFlow's chatter sent to a log and errors cut to one line."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from allx.errors import ConversionError
from allx.convert.modes import Mode
from allx.edge_runner.info import TensorInfo as TensorSpec  # one tensor description for convert and allx-edge
from allx.edge_runner.runtime import find_runtime

# The uint8/int8 input must hold the image bytes themselves: (scale, zero_point) per IO type.
EXPECTED_INPUT_QUANTIZATION = {"uint8": (1.0, 0), "int8": (1.0, -128)}


@contextlib.contextmanager
def output_to_log(log_path: Path):
    """Send everything written to stdout/stderr (Python and TensorFlow's C++ alike) to log_path."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "a", encoding="utf-8") as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            # A Ctrl-C in the middle of restoring would leave the terminal's stderr pointing at the log
            # (the "error: interrupted" line lost): hold SIGINT until both descriptors are back.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def summarize_error(err: BaseException) -> str:
    """The line of a TensorFlow error that says what went wrong: MLIR's first specific 'error:' line,
    without its source-location noise; else the first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [strip_location(line.split("error:", 1)[1]) for line in lines if "error:" in line]
    specific = [line for line in errors if not line.startswith("failed while converting")]
    chosen = (specific or errors or lines or [err.__class__.__name__])[0]
    return " ".join(chosen.split())[:300]


def strip_location(text: str) -> str:
    """Drop a leading MLIR `loc(...)` (nested parentheses) and the colon after it."""
    text = text.strip()
    if not text.startswith("loc("):
        return text
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char == ")":
            return text[index + 1:].lstrip(": ").strip()
    return text


@contextlib.contextmanager
def saved_model_of(model, input_size: tuple[int, int]) -> Iterator[str]:
    """A temporary SavedModel of `model` with a fixed (1, H, W, 3) float32 input.

    A fixed batch of 1 gives static shapes everywhere, which the Edge TPU compiler requires and the
    device runner uses anyway (one image per invoke).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="allx-convert-") as folder:
        path = str(Path(folder) / "saved_model")
        signature = [tf.TensorSpec((1, *input_size, 3), tf.float32, name="pixels")]
        model.export(path, format="tf_saved_model", input_signature=signature, verbose=False)
        yield path


def make_converter(saved_model_dir: str, mode: Mode, io: str,
                   representative: Callable[[], Iterator[list[np.ndarray]]] | None):
    """A TFLiteConverter set up exactly as `mode` says; nothing else is switched on."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if mode.name == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode.name == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode.name == "int8":
        if representative is None:
            raise ConversionError("int8 needs a representative dataset, got none")
        io_type = {"uint8": tf.uint8, "int8": tf.int8, "float": tf.float32}[io]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter


def run_converter(convert: Callable[[], bytes], log_path: Path, what: str) -> bytes:
    """Call `convert` with its output logged; any TensorFlow failure becomes one ConversionError line."""
    from tensorflow.lite.python.convert_phase import ConverterError  # not exported under tf.lite

    with output_to_log(log_path):
        try:
            return convert()
        except (ConverterError, ValueError, RuntimeError, TypeError, OSError) as err:
            import traceback

            traceback.print_exc()  # full detail into the log
            reason = summarize_error(err)
    raise ConversionError(f"{what} failed: {reason} (full log: {log_path})")


def convert_model(saved_model_dir: str, mode: Mode, io: str, log_path: Path,
                  representative: Callable[[], Iterator[list[np.ndarray]]] | None = None) -> bytes:
    """The .tflite bytes of a SavedModel (from saved_model_of) in `mode`."""
    return run_converter(lambda: make_converter(saved_model_dir, mode, io, representative).convert(), log_path,
                         f"TFLite conversion to {mode.name}")


def int16x8_model(saved_model_dir: str, log_path: Path,
                  representative: Callable[[], Iterator[list[np.ndarray]]]) -> bytes:
    """int16 activations, int8 weights (TFLite's "16x8" mode), float32 input and output: 256 times finer
    activation steps than int8 for about the same size, at a slower (reference) kernel speed on CPUs."""
    import tensorflow as tf

    def convert() -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        return converter.convert()

    return run_converter(convert, log_path, "TFLite conversion to int16 activations (16x8)")


def describe_tensors(tflite: bytes) -> tuple[TensorSpec, tuple[TensorSpec, ...]]:
    """(input, outputs) of a .tflite model, read with the device's interpreter (no inference)."""

    interpreter = find_runtime().module.Interpreter(model_content=tflite)
    inputs = [spec_of(details) for details in interpreter.get_input_details()]
    if len(inputs) != 1:
        raise ConversionError(f"the converted model has {len(inputs)} inputs, expected 1 image input")
    return inputs[0], tuple(spec_of(details) for details in interpreter.get_output_details())


def spec_of(details: dict) -> TensorSpec:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return TensorSpec(details["name"], tuple(int(n) for n in details["shape"]), np.dtype(details["dtype"]).name,
                      float(scale), int(zero_point))


def check_input_quantization(spec: TensorSpec, io: str) -> None:
    """Refuse an integer input that is not exactly the image bytes (see representative.calibration_batches)."""
    if io not in EXPECTED_INPUT_QUANTIZATION:
        return
    scale, zero_point = EXPECTED_INPUT_QUANTIZATION[io]
    if spec.dtype != io or abs(spec.scale - scale) > 1e-6 or spec.zero_point != zero_point:
        raise ConversionError(
            f"input quantization got dtype {spec.dtype}, scale {spec.scale:g}, zero point {spec.zero_point}; "
            f"expected {io}, scale {scale:g}, zero point {zero_point} (the input must be the image bytes)")
