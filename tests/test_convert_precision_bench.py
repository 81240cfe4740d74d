"""benchmarks/precision.py --quick: four precisions of one model, measured in one run."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import precision  # noqa: E402


def test_quick_run_writes_json_and_table(tmp_path, capsys):
    assert precision.main(["--quick", "--out", str(tmp_path), "--runs", "5", "--warmup", "1"]) == 0
    document = json.loads((tmp_path / "precision.json").read_text())
    rows = {row["precision"]: row for row in document["rows"]}
    assert list(rows) == ["float32", "float16", "dynamic", "int8"]
    assert rows["float32"]["size_ratio_vs_float32"] == 1.0 and rows["float32"]["agreement"] == 1.0
    assert rows["int8"]["size_bytes"] < rows["float16"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert all(row["latency_ms_p95"] >= row["latency_ms_p50"] > 0 for row in rows.values())
    assert all(row["check_images"] == 32 for row in rows.values())  # the same check subset for all four
    assert document["machine"]["cores"] >= 1 and "--quick" in document["command"]
    assert "| int8 |" in capsys.readouterr().out


def test_model_or_quick_is_required(capsys):
    import pytest

    with pytest.raises(SystemExit):
        precision.parse_args([])
    assert "give MODEL.keras or --quick" in capsys.readouterr().err
