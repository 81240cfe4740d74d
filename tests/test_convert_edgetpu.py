"""Edge TPU readiness on small real .tflite files, the compiler step (a stand-in script), and TF error lines."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from allx.errors import ConversionError
from allx.convert import edgetpu
from allx.convert.modes import MODES
from allx.convert.tflite import TensorSpec, check_input_quantization, summarize_error

SIZE = 16


def tiny_keras(activation=None):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = (activation or keras.layers.ReLU())(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def convert(model, mode="int8", io="uint8", tmp_path=Path(".")) -> bytes:
    from allx.convert.representative import calibration_batches
    from allx.convert.tflite import convert_model, saved_model_of

    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    with saved_model_of(model, (SIZE, SIZE)) as saved_model_dir:
        return convert_model(saved_model_dir, MODES[mode], io, tmp_path / "convert.log", calibration_batches(pixels))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    return convert(tiny_keras(), tmp_path=tmp_path_factory.mktemp("edgetpu"))


def test_full_int8_static_model_is_ready(int8_model):
    problems, counts = edgetpu.check_readiness(int8_model)
    assert problems == ()
    assert dict(counts)["CONV_2D"] == 1 and "FULLY_CONNECTED" in dict(counts)


def test_float_model_is_not_ready(tmp_path):
    problems, _ = edgetpu.check_readiness(convert(tiny_keras(), "float32", "float", tmp_path))
    text = " | ".join(problems)
    assert "not fully int8" in text and "FLOAT32 tensors" in text
    assert "input serving_default_pixels:0 is float32, expected uint8 or int8" in text


def test_dynamic_batch_is_not_ready(tmp_path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_keras())  # keeps a None batch dimension
    problems, _ = edgetpu.check_readiness(converter.convert())
    assert any(p.startswith("dynamic shapes") for p in problems)


def test_unsupported_op_is_named(tmp_path):
    import keras

    problems, counts = edgetpu.check_readiness(convert(tiny_keras(keras.layers.LeakyReLU(0.1)), tmp_path=tmp_path))
    assert "LEAKY_RELU" in dict(counts)
    assert problems == ("ops the Edge TPU does not support: LEAKY_RELU x1",)


def test_missing_compiler_says_how_to_install(int8_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    readiness = edgetpu.assess(int8_model, tmp_path / "model_int8.tflite", tmp_path)
    assert readiness.ready and readiness.compiled is None
    assert "not on PATH" in readiness.note and "apt-get install edgetpu-compiler" in readiness.note


def fake_compiler(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_compiler_output_is_kept_and_counted(int8_model, tmp_path, monkeypatch):
    """A stand-in that writes what edgetpu_compiler writes: the model and its operation counts."""
    fake_compiler(tmp_path / "bin", 'for last; do :; done\n'
                  'out=$3; name=$(basename "$last" .tflite)\n'
                  'cp "$last" "$out/${name}_edgetpu.tflite"\n'
                  'echo "Number of operations that will run on Edge TPU: 5"\n'
                  'echo "Number of operations that will run on CPU: 1"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    model_path = tmp_path / "model_int8.tflite"
    model_path.write_bytes(int8_model)
    out = tmp_path / "out"
    out.mkdir()
    readiness = edgetpu.assess(int8_model, model_path, out)
    assert readiness.compiled.model_file == "model_int8_edgetpu.tflite"
    assert (readiness.compiled.ops_on_tpu, readiness.compiled.ops_on_cpu) == (5, 1)
    assert (out / "model_int8_edgetpu.tflite").read_bytes() == int8_model
    assert "Edge TPU: 5" in (out / "edgetpu_compiler.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["edgetpu_compiler.log", "model_int8_edgetpu.tflite"]


def test_compiler_failure_is_reported(int8_model, tmp_path, monkeypatch):
    fake_compiler(tmp_path / "bin", 'echo "Internal compiler error. Aborting!" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    readiness = edgetpu.assess(int8_model, tmp_path / "m.tflite", tmp_path)
    assert readiness.compiled.model_file is None and "Internal compiler error" in readiness.compiled.message


@pytest.mark.parametrize("spec, io, ok", [
    (TensorSpec("x", (1, 8, 8, 3), "uint8", 1.0, 0), "uint8", True),
    (TensorSpec("x", (1, 8, 8, 3), "int8", 1.0, -128), "int8", True),
    (TensorSpec("x", (1, 8, 8, 3), "uint8", 0.9960784, 0), "uint8", False),
    (TensorSpec("x", (1, 8, 8, 3), "uint8", 1.0, 3), "uint8", False),
    (TensorSpec("x", (1, 8, 8, 3), "float32", 0.0, 0), "float", True),
])
def test_input_must_be_the_image_bytes(spec, io, ok):
    if ok:
        check_input_quantization(spec, io)
    else:
        with pytest.raises(ConversionError, match="the input must be the image bytes"):
            check_input_quantization(spec, io)


def test_tensorflow_errors_become_one_specific_line():
    message = ("Could not translate MLIR to FlatBuffer.<unknown>:0: error: loc(callsite(fused[\"Erf:\", \"f(x)\"] at "
               "fused[\"a\", \"b\"])): 'tf.Erf' op is neither a custom op nor a flex op\n"
               "<unknown>:0: note: called from\n<unknown>:0: error: failed while converting: 'main':\n")
    assert summarize_error(ValueError(message)) == "'tf.Erf' op is neither a custom op nor a flex op"
    assert summarize_error(RuntimeError("first line\nsecond")) == "first line"
    assert summarize_error(RuntimeError("")) == "RuntimeError"
