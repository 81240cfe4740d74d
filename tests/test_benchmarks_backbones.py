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
