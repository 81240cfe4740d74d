"""Picking the interpreter and the delegate, and refusing what is no TFLite model before the interpreter sees it."""

import os
import shutil

import pytest
from edge_models import tiny_models

from allx.edge_runner.model import EdgeModel
from allx.edge_runner.runtime import (EDGETPU_OP, check_tflite_header, find_runtime, make_interpreter,
                                      native_stderr, plan_delegate)
from allx.errors import ModelError


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


def test_unknown_delegate(tiny):
    with pytest.raises(ModelError, match="unknown delegate 'gpu', expected one of auto, cpu, edgetpu"):
        EdgeModel.load(tiny.int8, delegate="gpu")


def test_edgetpu_without_library_says_how_to_install(tiny, tmp_path):
    if shutil.which("edgetpu_compiler") or os.path.exists("/usr/lib/libedgetpu.so.1"):
        pytest.skip("an Edge TPU runtime is installed here")
    with pytest.raises(ModelError, match="libedgetpu.*apt-get install libedgetpu1-std"):
        EdgeModel.load(tiny.int8, delegate="edgetpu")
    compiled = tmp_path / "m_edgetpu.tflite"  # stands for edgetpu_compiler output: carries the custom op name
    compiled.write_bytes(tiny.int8.read_bytes() + EDGETPU_OP)
    with pytest.raises(ModelError, match="libedgetpu"):
        EdgeModel.load(compiled)  # auto: such a model needs the TPU
    with pytest.raises(ModelError, match="compiled for the Edge TPU"):
        EdgeModel.load(compiled, delegate="cpu")


def test_delegate_plan(tmp_path):
    path = tmp_path / "m.tflite"
    assert plan_delegate("auto", False, path) == ("cpu", ())
    assert plan_delegate("auto", True, path) == ("edgetpu", ())
    assert plan_delegate("cpu", False, path) == ("cpu", ())
    used, warnings = plan_delegate("edgetpu", False, path)
    assert used == "edgetpu" and "will run on the CPU" in warnings[0]


def test_the_tfl3_identifier_is_checked_from_bytes_or_file(tiny, tmp_path):
    data = tiny.int8.read_bytes()
    check_tflite_header(data, tiny.int8)  # a real model passes
    for bad in (b"", b"TFL3", b"\0" * 4 + b"JPEG" + data[8:]):
        with pytest.raises(ModelError, match="not a TFLite model"):
            check_tflite_header(bad, tmp_path / "m.tflite")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="not a TFLite model"):
        make_interpreter(empty)


def test_an_interpreter_from_bytes_is_the_one_from_the_file(tiny):
    from_file, used, threads, _ = make_interpreter(tiny.int8, threads=1)
    from_bytes, _, _, _ = make_interpreter(tiny.int8, threads=1, content=tiny.int8.read_bytes())
    assert used == "cpu" and threads == 1 and str(find_runtime())
    assert [d["shape"].tolist() for d in from_file.get_input_details()] == \
        [d["shape"].tolist() for d in from_bytes.get_input_details()]


def test_native_stderr_is_collected_and_restored(capfd):
    with native_stderr() as log:
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"after\n")
    assert log.lines == ["INFO: Created TensorFlow Lite XNNPACK delegate for CPU."]
    assert capfd.readouterr().err == "after\n"
