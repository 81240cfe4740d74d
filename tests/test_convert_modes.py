"""Conversion modes as data: each mode's allowed options, defaults, and refusals (no TensorFlow needed)."""

import math

import pytest

from allx.convert.modes import DEFAULT_MAX_TRIES, DEFAULT_THRESHOLDS, MODES, resolve_options, validate_thresholds
from allx.errors import UsageError


def test_every_mode_has_a_default_io_among_its_choices():
    for mode in MODES.values():
        assert mode.default_io in mode.io_choices
        assert mode.file_name == (f"model_{mode.name}.tflite" if mode.tflite else "packerOut.zip")
    assert MODES["int8"].fully_integer and MODES["int8"].needs_representative
    assert MODES["imx500"].needs_representative and not MODES["imx500"].tflite  # MCT, then Sony's converter
    assert not any(m.fully_integer or m.needs_representative for name, m in MODES.items()
                   if name not in ("int8", "imx500"))


def test_int8_defaults():
    options = resolve_options("int8")
    assert options.io == "uint8" and options.representative_count is None  # the default, capped by the train subset
    assert options.thresholds == DEFAULT_THRESHOLDS  # defined once, in modes.Thresholds
    assert options.accuracy_control and options.max_tries == DEFAULT_MAX_TRIES


def test_gate_defaults_are_the_ones_help_shows():
    from typer.testing import CliRunner

    from allx.cli.main import app

    text = " ".join(CliRunner().invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).stdout.split())
    for value in (DEFAULT_THRESHOLDS.max_drop, DEFAULT_THRESHOLDS.max_class_drop, DEFAULT_THRESHOLDS.confidence):
        assert f"[default: {value:g}]" in text or f"[default: {value}]" in text
    assert "--no-accuracy-control" in text


@pytest.mark.parametrize("kwargs, fragment", [({"confidence": 0.3}, "--confidence"), ({"confidence": 1.0}, "--confidence"),
                                              ({"max_tries": 0}, "--max-tries"), ({"max_tries": 9}, "--max-tries"),
                                              ({"fidelity_images": -1}, "--fidelity-images")])
def test_gate_and_control_options_out_of_range(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve_options("int8", **kwargs)


def test_what_the_user_gave_is_kept():
    options = resolve_options("int8", io="int8", representative_count=7, check_subset="test", max_drop=0.5)
    assert (options.io, options.representative_count, options.check_subset) == ("int8", 7, "test")
    assert options.thresholds.max_drop == 0.5


@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic"])
def test_float_modes_refuse_int8_only_options(mode):
    assert resolve_options(mode).io == "float" and resolve_options(mode).representative_count is None
    for kwargs, name in (({"representative_count": 10}, "--representative-count"), ({"debug": True}, "--debug"),
                         ({"float_layers": 2}, "--float-layers"), ({"edgetpu": True}, "--edgetpu")):
        with pytest.raises(UsageError, match=name):
            resolve_options(mode, **kwargs)
    with pytest.raises(UsageError, match="only --int8 has integer IO"):
        resolve_options(mode, io="uint8")


def test_int8_option_conflicts():
    with pytest.raises(UsageError, match="Edge TPU needs integer IO"):
        resolve_options("int8", io="float", edgetpu=True)
    with pytest.raises(UsageError, match="float layers cannot run on the Edge TPU"):
        resolve_options("int8", float_layers=1, edgetpu=True)
    with pytest.raises(UsageError, match="keeps float32 input and output"):
        resolve_options("int8", io="uint8", float_layers=2)
    with pytest.raises(UsageError, match="expected uint8 or int8 or float"):
        resolve_options("int8", io="int16")


def test_float_layers_imply_debug_and_float_io():
    options = resolve_options("int8", float_layers=3)
    assert options.debug and options.io == "float" and options.float_layers == 3


@pytest.mark.parametrize("kwargs, fragment", [
    ({"representative_count": 0}, "at least 1 image"),
    ({"float_layers": -1}, "0 or more"),
    ({"check_subset": "train"}, "never train"),
])
def test_bad_values(kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve_options("int8", **kwargs)


def test_unknown_mode():
    with pytest.raises(UsageError, match="expected one of float32, float16, dynamic, int8"):
        resolve_options("int4")


@pytest.mark.parametrize("drop, class_drop, agreement", [
    (-0.1, 2, 0.9), (100.5, 2, 0.9), (1, -1, 0.9), (1, 2, 1.01), (1, 2, -0.2), (math.nan, 2, 0.9), (1, math.inf, 0.9),
])
def test_thresholds_out_of_range(drop, class_drop, agreement):
    with pytest.raises(UsageError, match="got --"):
        validate_thresholds(drop, class_drop, agreement)


def test_threshold_edges_are_allowed():
    limits = validate_thresholds(0, 100, 1.0)
    assert (limits.max_drop, limits.max_class_drop, limits.min_agreement) == (0.0, 100.0, 1.0)
