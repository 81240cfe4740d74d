"""The Monitor page and /api/monitor of `allx-edge serve`, and the alarm in every page's header."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from edge_models import LABELS  # noqa: E402
from serve_clients import model_dir, make_client, client  # noqa: E402


def served_with_expectations(tmp_path, model_dir):
    """A model folder whose model.json states the rates a monitor expects (OOD flag, inconclusive, check)."""
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes((model_dir / "model.tflite").read_bytes())
    (folder / "model.json").write_text(json.dumps({
        "model_file": "model.tflite", "labels": list(LABELS),
        "ood": {"method": "max_softmax", "threshold": 0.99, "flag_rate": 0.04, "held_out_images": 473},
        "sample_rule": {"threshold": 0.5, "inconclusive": 0.02, "samples": 100},
        "check": {"subset": "val", "images": 473, "quantized": {"accuracy": 0.98}}}))
    return folder / "model.tflite"


def test_monitor_page_api_and_the_alarm_in_every_pages_header(model_dir, tmp_path):
    from monitor_logs import write_log

    log_path = tmp_path / "log.db"
    write_log(log_path, good=6, changed=6)  # the last 6 samples came through a changed camera
    client, bench = make_client(served_with_expectations(tmp_path, model_dir), log_path)
    try:
        data = client.get("/api/monitor", params={"window": 6}).json()
        assert set(data) == {"windows", "expected", "limits_from"} and data["limits_from"] == "model_card"
        assert [w["alarms"] for w in data["windows"]] == [[], ["ood_rate", "inconclusive_rate"]]
        page = client.get("/monitor", params={"window": 6})
        assert page.status_code == 200 and "<svg" in page.text and 'id="monitor-alarm"' in page.text
        assert "samples 7-12" in page.text and "ALARM" in page.text
        for path in ("/", "/log", "/model"):  # the weekly windows: all 12 samples fall in this week
            assert 'id="alarm"' in client.get(path).text, path
        assert client.get("/api/monitor", params={"by": "month"}).status_code == 400
    finally:
        bench.close()
    quiet_path = tmp_path / "quiet.db"
    write_log(quiet_path, good=6)
    client, bench = make_client(served_with_expectations(tmp_path / "again", model_dir), quiet_path)
    try:
        assert 'id="alarm"' not in client.get("/").text
        assert "within its limits" in client.get("/monitor").text
    finally:
        bench.close()
