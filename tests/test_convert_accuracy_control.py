"""Accuracy control: the ladder's logic on fakes, then `allx convert` end to end on tiny models.

The "fragile" model (tests/convert_models.py) loses its features next to a 10,000 channel in int8; its
float layers ranked worst do not save it, int16 activations do. A representative set of one flat grey
image damages even the healthy model, and nothing on the ladder repairs that.
"""

import json
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allx.cli.main import app
from allx.convert.accuracy_control import INT16X8, control_accuracy
from allx.convert.modes import DEFAULT_MAX_TRIES
from allx.errors import ConversionError, ModelError
from tests.convert_models import make_run_folder

runner = CliRunner()
TOLERANT = ("--max-drop", "10", "--max-class-drop", "40", "--min-agreement", "0.85")  # 24 check images


# ---- the ladder on fakes (no TensorFlow) ----

@dataclass(frozen=True)
class Layer:
    tensor_name: str


NAMES = {1: "int8 + 1 float layer", 2: "int8 + 2 float layers", 4: "int8 + 4 float layers",
         8: "int8 + 8 float layers", INT16X8: "int16 activations, int8 weights (16x8)"}


def fake_candidate(passed: bool, latency: float = 1.0):
    check = SimpleNamespace(passed=passed, latency_ms_p50=latency, quantized=SimpleNamespace(accuracy=0.5), paired=(),
                            fidelity=None, failures=())
    return SimpleNamespace(tflite=b"x" * 10, check=check)


def run_search(passes, layers=tuple(Layer(f"layer{i}") for i in range(10)), max_tries=DEFAULT_MAX_TRIES,
               rank_error=None, latency=None):
    """Drive control_accuracy with a fake check: `passes` are the variants (counts, INT16X8) that pass."""
    made = []
    by_name = {name: step for step, name in NAMES.items()}

    def rank():
        if rank_error:
            raise ConversionError(rank_error)
        return layers

    def check(name, tflite):
        made.append(by_name[name])
        return fake_candidate(by_name[name] in passes, (latency or {}).get(by_name[name], 1.0))

    control = control_accuracy(fake_candidate(False), rank, lambda names: b"float", lambda: b"16x8", check, max_tries)
    return control, made


def test_eight_float_layers_first_then_bisect_down():
    control, made = run_search({8, 4, 2})
    assert made == [8, 2, 1] and control.chosen.name == NAMES[2]  # all faster-equal: the first fastest, 2 layers
    control, made = run_search({8, 4})
    assert made == [8, 2, 4] and control.chosen.float_layers == tuple(f"layer{i}" for i in range(4))
    control, made = run_search({8, 4, 2, 1})
    assert made == [8, 2, 1] and control.chosen.name == NAMES[1]
    assert control.not_tried == (NAMES[4], NAMES[INT16X8]) and "kept in float run on the CPU" in control.edgetpu_note


def test_the_fastest_that_passed_is_kept_not_the_fewest_float_layers():
    control, made = run_search({8, 2, 1}, latency={8: 3.0, 2: 1.5, 1: 2.0})
    assert made == [8, 2, 1] and control.chosen.name == NAMES[2]
    rows = control.to_dict()["tries"]
    assert [row["name"] for row in rows] == [NAMES[8], NAMES[2], NAMES[1]] and all(row["passed"] for row in rows)


def test_eight_failing_goes_to_int16_then_gives_up():
    control, made = run_search({INT16X8})
    assert made == [8, INT16X8] and control.chosen.variant == INT16X8 and "int16" in control.edgetpu_note
    assert "1, 2, 4 float layer(s) not tried" in control.notes[0]
    control, made = run_search(set())
    assert made == [8, INT16X8] and control.chosen is None
    document = control.to_dict()
    assert document["chosen"] is None and [row["passed"] for row in document["tries"]] == [False, False]
    assert document["not_tried"] == [NAMES[1], NAMES[2], NAMES[4]] and document["search"]


@pytest.mark.parametrize("layer_count", [0, 1, 2, 3, 5, 9, 40])
def test_every_outcome_needs_at_most_the_default_tries(layer_count):
    """Whatever passes, monotone in the float-layer count or not, the search ends within --max-tries 4."""
    layers = tuple(Layer(f"layer{i}") for i in range(layer_count))
    steps = (1, 2, 4, 8, INT16X8)
    for mask in range(2 ** len(steps)):
        passes = {step for bit, step in enumerate(steps) if mask >> bit & 1}
        control, made = run_search(passes, layers=layers)
        assert len(made) == len(set(made)) <= 3 <= DEFAULT_MAX_TRIES and "stopped" not in " ".join(control.notes)
        assert (control.chosen is None) == (not passes.intersection(made))


def test_the_try_limit_stops_the_search():
    limited, made = run_search({8, 2}, max_tries=2)
    assert made == [8, 2] and limited.chosen.name == NAMES[2] and "stopped after --max-tries 2" in limited.notes[0]
    limited, made = run_search(set(), max_tries=1)
    assert made == [8] and limited.chosen is None and NAMES[INT16X8] in limited.not_tried
    assert [row["name"] for row in limited.to_dict()["tries"]] == [NAMES[8]] and limited.to_dict()["int8"]


def test_no_quantized_layers_or_a_debugger_failure_still_tries_int16():
    control, made = run_search(set(), layers=())
    assert made == [INT16X8] and "no quantized layers" in control.notes[0]
    control, made = run_search(set(), rank_error="QuantizationDebugger failed: boom")
    assert made == [INT16X8] and "boom" in control.notes[0]
    control, made = run_search({1}, layers=(Layer("a"), Layer("b"), Layer("c")))  # 4 >= 3 layers: 2 is the most
    assert made == [2, INT16X8]
    control, made = run_search({2, 1}, layers=(Layer("a"), Layer("b"), Layer("c")))
    assert made == [2, 1] and control.chosen.float_layers == ("a",)


def test_a_conversion_failure_is_one_row_and_the_search_goes_on():
    def check(name, tflite):
        return fake_candidate(True)

    def broken(names):
        raise ConversionError("selective quantization failed: no kernel")

    control = control_accuracy(fake_candidate(False), lambda: (Layer("a"), Layer("b"), Layer("c")), broken,
                               lambda: b"16x8", check, DEFAULT_MAX_TRIES)
    assert control.attempts[0].note.endswith("no kernel") and not control.attempts[0].passed
    assert len(control.attempts) == 2 and control.chosen.variant == INT16X8


def test_a_variant_the_interpreter_refuses_is_a_failed_try():
    def check(name, tflite):
        if tflite == b"float":
            raise ModelError("model_int8.tflite: the interpreter refused the model (Node number 16 (CONV_2D) failed)")
        return fake_candidate(True)

    control = control_accuracy(fake_candidate(False), lambda: tuple(Layer(f"l{i}") for i in range(10)),
                               lambda names: b"float", lambda: b"16x8", check, DEFAULT_MAX_TRIES)
    assert [attempt.name for attempt in control.attempts] == [NAMES[8], NAMES[INT16X8]]
    assert "interpreter refused" in control.attempts[0].note and control.chosen.variant == INT16X8


# ---- end to end ----

@pytest.fixture(scope="module")
def run_folder(synthetic_dir, tmp_path_factory):
    return make_run_folder(synthetic_dir, tmp_path_factory.mktemp("control"))


def convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_failed_int8_is_rescued_and_every_try_is_listed(run_folder, tmp_path):
    result = convert(run_folder.fragile, "--out", tmp_path, "--representative-count", "20", "--json", *TOLERANT)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    control = document["accuracy_control"]
    assert control["int8"]["passed"] is False and control["chosen"] == control["tries"][-1]["name"]
    assert control["variant"] == INT16X8 and control["edgetpu"]["ready"] is False
    assert len(control["tries"]) <= 3 and control["seconds"] > 0
    for row in control["tries"]:
        assert set(row) >= {"size_bytes", "latency_ms_p50", "accuracy", "agreement", "drop_bound_pp", "seconds"}
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest["accuracy_control"]["chosen"] == control["chosen"] and manifest["status"] == "passed"
    assert manifest["fully_quantized"] is False and manifest["input"]["dtype"] == "float32"
    report = (tmp_path / "report.md").read_text()
    assert "## Accuracy control" in report and "int8 (plain)" in report and "Edge TPU: not Edge TPU-ready" in report
    assert document["fidelity"]["subsets"] == "train+val (x8 dihedral views)" and document["fidelity"]["images"] == 512


def test_no_accuracy_control_rejects_like_before(run_folder, tmp_path):
    result = convert(run_folder.fragile, "--out", tmp_path, "--representative-count", "20", "--no-accuracy-control",
                     *TOLERANT)
    assert result.exit_code == 3 and "accuracy control" not in result.stderr
    assert "right->wrong" in result.stderr and (tmp_path / "model_int8.rejected.tflite").is_file()


def test_a_grey_representative_set_is_rejected(run_folder, tmp_path):
    """Calibrating on one flat grey image gives activation ranges real smears overflow: a damaged model."""
    data = tmp_path / "data"
    shutil.copytree(run_folder.data, data)
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(data / "Benign" / "grey.jpg")
    split = json.loads((run_folder.model.parent / "split.json").read_text())
    split["train"] = ["Benign/grey.jpg"]
    (tmp_path / "split.json").write_text(json.dumps(split))
    result = convert(run_folder.model, "--out", tmp_path / "out", "--split", tmp_path / "split.json", "--data", data,
                     "--representative-count", "1", *TOLERANT)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "right->wrong" in lines[0] and "none passed" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "out" / "model_int8.tflite").exists()


@pytest.mark.parametrize("failure", ["debugger", "no layers"])
def test_bad_ladder_input_is_one_line_and_keeps_the_good_model(run_folder, tmp_path, monkeypatch, failure):
    from allx.convert import debug

    good = tmp_path / "out"
    assert convert(run_folder.model, "--out", good, "--representative-count", "20", *TOLERANT).exit_code == 0
    kept = (good / "model_int8.tflite").read_bytes(), (good / "model.json").read_bytes()

    def measure(*args):
        if failure == "debugger":
            raise ConversionError("QuantizationDebugger failed: injected (full log: convert.log)")
        return ()

    monkeypatch.setattr(debug, "measure_layer_errors", measure)
    result = convert(run_folder.fragile, "--out", good, "--representative-count", "20")  # strict default gate
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert ((good / "model_int8.tflite").read_bytes(), (good / "model.json").read_bytes()) == kept
    report = (good / "model_int8.rejected.report.md").read_text()
    assert ("injected" if failure == "debugger" else "no quantized layers") in report
    rejected = json.loads((good / "model_int8.rejected.json").read_text())["accuracy_control"]
    assert [row["variant"] for row in rejected["tries"]] == [INT16X8]


def test_a_failed_int8_says_why_accuracy_control_was_not_tried():
    from allx.convert.modes import resolve_options
    from allx.convert.pipeline import control_not_tried

    def candidate(passed, float_accuracy=0.9):
        return SimpleNamespace(check=SimpleNamespace(passed=passed, float=SimpleNamespace(accuracy=float_accuracy)),
                               predictions=SimpleNamespace(truth=[0, 1, 2, 3] * 25))

    failed, passed = candidate(False), candidate(True)
    assert "--edgetpu keeps every layer int8" in control_not_tried(failed, resolve_options("int8", edgetpu=True))
    assert "--float-layers 2" in control_not_tried(failed, resolve_options("int8", float_layers=2))
    assert control_not_tried(passed, resolve_options("int8", edgetpu=True)) is None
    assert control_not_tried(failed, resolve_options("int8", edgetpu=True, accuracy_control=False)) is None
    assert control_not_tried(failed, resolve_options("int8")) is None  # it ran: its own table says how it went
    assert "float model itself does not beat chance" in control_not_tried(candidate(False, 0.3),
                                                                         resolve_options("int8"))
