"""The benchmark scripts' --quick modes run end to end and write the JSON the README and report read.

They assert the shape of the results, never a time: speed claims live in benchmarks/results/.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(name, *args):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--quick", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_training_speed_quick_writes_both_timings(tmp_path):
    out = tmp_path / "training_speed.json"
    printed = run_script("training_speed.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "training_speed" and result["epochs"] == 10
    assert result["naive_s"] > 0 and result["cached_s"] > result["feature_extraction_s"] > 0
    assert result["speedup"] == pytest.approx(result["naive_s"] / result["cached_s"], rel=0.01)
    assert "synthetic" in result["data"] and "speedup" in printed


@pytest.mark.slow
def test_backbones_quick_compares_every_backbone_at_int8(tmp_path):
    out = tmp_path / "backbones.json"
    run_script("backbones.py", "--epochs", "2", "--runs", "3", "--work", str(tmp_path / "work"), "--out", str(out))
    rows = {row["backbone"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"resnet50", "efficientnet-lite0", "mobilenetv2"}
    measured = [row for row in rows.values() if "skipped" not in row]
    assert {"resnet50", "efficientnet-lite0"} <= {row["backbone"] for row in measured}
    for row in measured:
        assert 0 <= row["int8_accuracy"] <= 1 and row["int8_size_mb"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0


@pytest.mark.slow
def test_cv_quick_writes_a_grouped_summary_per_backbone(tmp_path):
    out = tmp_path / "cv.json"
    printed = run_script("cv.py", "--backbone", "efficientnet-lite0", "--work", str(tmp_path / "work"),
                         "--out", str(out))
    entry = json.loads(out.read_text())["entries"][0]
    assert entry["backbone"] == "efficientnet-lite0" and entry["folds"] == 3 and entry["split_kind"] == "sequence"
    summary = entry["summary"]["accuracy"]
    assert summary["low"] <= summary["mean"] <= summary["high"] and len(summary["folds"]) == 3
    assert "| efficientnet-lite0 |" in printed


def test_quality_quick_writes_rejection_rates(tmp_path):
    out = tmp_path / "quality.json"
    printed = run_script("quality.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "quality" and result["kind"] == "benchmark" and result["quick"] is True
    assert {"good", "blur_sigma_1.5", "under_exposed_x0.35", "over_exposed_x1.8"} <= set(result["rejected"])
    assert result["rejected"]["blur_sigma_2"] >= 0.9 and result["limits"]["focus_min"] > 0
    assert "blurred copies rejected" in printed
