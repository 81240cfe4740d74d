"""The Workbench behind `allx-edge serve`: the same audit rows as classify --sample, the camera, a locked or read-only log."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402
from allx.edge_runner.audit import AuditLog  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.serve.app import create_app  # noqa: E402
from allx.edge_runner.serve.card import describe_loaded  # noqa: E402
from allx.edge_runner.serve.workbench import Workbench  # noqa: E402
from serve_clients import TOKEN, png_bytes, model_dir, make_client, client, start, upload  # noqa: E402


def test_log_rows_are_those_of_classify_sample(client, model_dir, tmp_path, monkeypatch):
    """The same files through the page's API and through `allx-edge classify --sample` give the same rows."""
    from typer.testing import CliRunner

    from allx.edge_runner.cli import app

    key = start(client, "S-2", "bo")
    files = [(f"f{i}.png", png_bytes(10 + i)) for i in range(3)]
    upload(client, key, files)
    served = [r["record"] for r in client.get("/api/log", params={"sample": "S-2"}).json()["rows"]]
    folder = tmp_path / "fields"
    folder.mkdir()
    for name, data in files:
        (folder / name).write_bytes(data)
    monkeypatch.delenv("ALLX_SITE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = CliRunner().invoke(app, ["classify", *(str(folder / name) for name, _ in files), "--model",
                                      str(model_dir / "model.tflite"), "--sample", "S-2", "--operator", "bo",
                                      "--log-db", str(tmp_path / "cli.db")])
    assert result.exit_code == 0, result.output
    with AuditLog.open(tmp_path / "cli.db", readonly=True) as log:
        logged = [row["record"] for row in log.rows(sample="S-2")]
    assert [r["kind"] for r in served] == [r["kind"] for r in logged] == ["field"] * 3 + ["sample"]
    for record in [*served, *logged]:
        for varies in ("latency_ms", "time_utc", "image_path"):
            record.pop(varies, None)
        if record["kind"] == "sample":  # a field is named by the path given: a file for the CLI, a name here
            record["fields_used"] = [Path(name).name for name in record["fields_used"]]
    assert served == logged


def test_camera_missing_or_unplugged_is_a_clear_503(model_dir, tmp_path):
    from allx.edge_runner.camera import capture_still

    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db",
                                capture=lambda: capture_still(str(tmp_path / "video9")))
    key = start(client)
    response = client.post(f"/api/samples/{key}/camera")
    assert response.status_code == 503 and "cannot open video source" in response.json()["error"]
    page = client.post(f"/samples/{key}/camera")
    assert page.status_code == 503 and "cannot open video source" in page.text
    assert upload(client, key, [("ok.png", png_bytes(1))]).status_code == 200  # still serving
    bench.close()


def test_camera_unplugged_mid_session_and_back(model_dir, tmp_path):
    """A video file stands for the camera: a still, then the file is gone (unplugged), then back."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (edge extra) reads the camera")
    from allx.edge_runner.camera import capture_still

    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db",
                                capture=lambda: capture_still(str(video)))
    key = start(client)
    assert client.post(f"/api/samples/{key}/camera").status_code == 200
    kept = video.rename(tmp_path / "unplugged.avi")
    gone = client.post(f"/api/samples/{key}/camera")
    assert gone.status_code == 503 and "cannot open video source" in gone.json()["error"]
    kept.rename(video)
    assert client.post(f"/api/samples/{key}/camera").status_code == 200
    assert len(client.get(f"/api/samples/{key}").json()["fields"]) == 2  # nothing lost, nothing added twice
    bench.close()


def test_camera_still_is_a_field(model_dir, tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db", capture=lambda: frame)
    key = start(client)
    response = client.post(f"/api/samples/{key}/camera")
    assert response.status_code == 200 and response.json()["added"][0]["path"].startswith("camera-")
    bench.close()


def test_locked_log_keeps_results_in_memory_and_writes_them_later(client, tmp_path):
    key = start(client)
    locker = sqlite3.connect(tmp_path / "log.db")
    locker.execute("begin exclusive")
    response = upload(client, key, [("a.png", png_bytes(1)), ("b.png", png_bytes(2))])
    assert response.status_code == 200 and "not yet in the audit log" in response.json()["log_warning"]
    review = client.post(f"/api/samples/{key}/review", json={"action": "confirm"})
    assert review.status_code == 503 and "review not saved" in review.json()["error"]
    assert "not yet in the audit log" in client.get(f"/samples/{key}").text
    locker.rollback()
    locker.close()
    rows = client.get("/api/log").json()["rows"]
    assert [(r["kind"], r["image"]) for r in rows] == [("field", "a.png"), ("field", "b.png"), ("sample", None)]
    assert client.post(f"/api/samples/{key}/review", json={"action": "confirm"}).status_code == 200


def test_health_answers_while_an_upload_waits_on_a_locked_log(model_dir, tmp_path):
    """One event loop serves every request (as under uvicorn): an upload waiting for the log must not hold it."""
    model = EdgeModel.load(model_dir / "model.tflite")
    bench = Workbench(model, tmp_path / "log.db", log_busy_s=20)
    client = TestClient(create_app(bench, describe_loaded(model), TOKEN))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    with client:  # one portal, so one event loop, for all the requests below
        key = start(client)
        locker = sqlite3.connect(tmp_path / "log.db")
        locker.execute("begin exclusive")
        outcome = {}
        uploading = threading.Thread(target=lambda: outcome.update(response=upload(client, key, [
            ("a.png", png_bytes(1))])), daemon=True)
        uploading.start()
        for _ in range(600):  # the field is classified; its log row now waits for the lock
            if bench.samples[key].fields or not uploading.is_alive():
                break
            time.sleep(0.05)
        assert client.get("/health").json() == {"status": "ok"}
        assert uploading.is_alive()  # /health answered while the upload still waits
        locker.rollback()
        locker.close()
        uploading.join(60)
        response = outcome["response"]
        assert response.status_code == 200 and response.json()["log_warning"] is None, response.text
        rows = client.get("/api/log").json()["rows"]
        assert [(r["kind"], r["image"]) for r in rows] == [("field", "a.png"), ("sample", None)]
    bench.close()


def test_read_only_log_is_a_clear_message(model_dir, tmp_path):
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    key = start(client)
    bench.on_log_thread(bench.log.close)  # as if the disk went read-only under the server (root ignores chmod)
    bench.log = bench.on_log_thread(lambda: AuditLog.open(tmp_path / "log.db", readonly=True))
    response = upload(client, key, [("a.png", png_bytes(1))])
    assert response.status_code == 200 and response.json()["log_warning"]
    assert client.post(f"/api/samples/{key}/review", json={"action": "confirm"}).status_code == 503
    bench.close()
