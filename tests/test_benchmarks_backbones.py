"""benchmarks/backbones.py --quick end to end (its own module, so pytest-xdist runs it beside the other slow ones)."""

import json

import pytest
from test_benchmarks import run_script


@pytest.mark.slow
def test_backbones_quick_compares_every_backbone_at_int8(tmp_path):
    out = tmp_path / "backbones.json"
    run_script("backbones.py", "--epochs", "2", "--runs", "3", "--no-accuracy-control", "--work", str(tmp_path / "work"), "--out", str(out))
    rows = {row["backbone"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"resnet50", "efficientnet-lite0", "mobilenetv2"}
    assert not any("skipped" in row for row in rows.values())  # MobileNetV2 without its .pth: --weights none
    assert rows["resnet50"]["weights_note"] and rows["efficientnet-lite0"]["weights_note"] is None
    assert rows["mobilenetv2"]["weights"] != "none" or "random weights" in rows["mobilenetv2"]["weights_note"]
    for row in rows.values():
        assert 0 <= row["int8_accuracy"] <= 1 and row["int8_size_mb"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0
        target = row["target"]
        assert target["met"] == (row["passed"] and target["accuracy_drop_pp"] <= 0.5 and
                                 target["worst_class_drop_pp"] <= 2.0)


def load_backbones_module():
    import importlib.util

    from test_benchmarks import REPO

    spec = importlib.util.spec_from_file_location("backbones_bench", REPO / "benchmarks" / "backbones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backbones_passes_calibration_and_float_layers_through_to_convert():
    from allx.convert.modes import resolve_options

    bench = load_backbones_module()
    args = bench.parse_args(["--split", "split.json", "--float-layers", "2", "--seed", "3",
                             "--representative-count", "50", "--no-accuracy-control"])
    options = resolve_options("int8", **bench.convert_options(args))
    assert (options.float_layers, options.seed, options.representative_count) == (2, 3, 50)
    assert options.io == "float" and options.debug  # what allx convert --float-layers does with them
    assert options.check_subset == "test" and options.ood is False and not options.accuracy_control


def test_backbones_leaves_convert_defaults_alone_when_not_asked():
    from allx.convert.modes import resolve_options

    bench = load_backbones_module()
    options = resolve_options("int8", **bench.convert_options(bench.parse_args([])))
    assert (options.float_layers, options.seed, options.representative_count) == (0, 0, None)
    assert options.io == "uint8" and options.check_subset is None and options.accuracy_control
