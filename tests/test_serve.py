"""`allx-edge serve` through FastAPI's TestClient: token, pages, API, limits and every kind of bad input."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from allx.edge_runner.audit import AuditLog  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.serve.access import COOKIE, load_or_create_token  # noqa: E402
from allx.edge_runner.serve.app import create_app  # noqa: E402
from allx.edge_runner.serve.card import describe_loaded  # noqa: E402
from allx.edge_runner.serve.uploads import UploadLimits, display_name  # noqa: E402
from allx.edge_runner.serve.workbench import Workbench  # noqa: E402
from edge_models import LABELS, tiny_models  # noqa: E402

TOKEN = "test-token-123"


def png_bytes(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares width x height pixels: a few hundred bytes on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tiny = tiny_models()
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.tflite").write_bytes(tiny.int8.read_bytes())
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return folder


def make_client(model_path, log_path, limits=UploadLimits(), capture=None):
    model = EdgeModel.load(model_path)
    bench = Workbench(model, log_path, limits, capture, log_busy_s=0.2)
    client = TestClient(create_app(bench, describe_loaded(model), TOKEN))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client, bench


@pytest.fixture
def client(model_dir, tmp_path):
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    yield client
    bench.close()


def start(client, sample_id="S-1", operator="ana") -> str:
    response = client.post("/api/samples", json={"sample_id": sample_id, "operator": operator})
    assert response.status_code == 201, response.text
    return response.json()["key"]


def upload(client, key, files):
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return client.post(f"/api/samples/{key}/fields", files=parts)


def test_health_is_open_and_everything_else_needs_the_token(client):
    anonymous = TestClient(client.app)
    assert anonymous.get("/health").json() == {"status": "ok"}
    for path in ("/", "/api/samples", "/model", "/static/app.css", "/api/log.csv"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
    wrong = anonymous.get("/api/samples", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "unauthorized"}
    assert TOKEN not in anonymous.get("/").text
    headers = anonymous.get("/").headers
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["referrer-policy"] == "no-referrer"


def test_token_in_url_becomes_an_httponly_strict_cookie(client):
    browser = TestClient(client.app)
    response = browser.get(f"/model?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/model"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert browser.get("/model").status_code == 200  # the cookie alone is enough now
    assert browser.cookies.get(COOKIE) == TOKEN


def test_a_token_in_the_address_is_refused_under_api(client):
    anonymous = TestClient(client.app)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        response = anonymous.get(f"/api/samples?token={TOKEN}", headers=headers)
        assert response.status_code == 401 and "refused under /api" in response.json()["error"]
    assert anonymous.get("/api/log.csv", params={"token": TOKEN}).status_code == 401
    assert anonymous.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303  # the page sign-in stays


def test_host_header_must_name_this_device(model_dir, tmp_path):
    """DNS rebinding: a foreign name resolved to the device is refused; addresses and known names pass."""
    model = EdgeModel.load(model_dir / "model.tflite")
    bench = Workbench(model, tmp_path / "log.db")
    app = create_app(bench, describe_loaded(model), TOKEN, host_names=("localhost", "pi.clinic.lan"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for base in ("http://evil.example", "http://evil.example:8080", "http://localhost.evil.example"):
        response = TestClient(app, base_url=base).get("/api/samples", headers=auth)
        assert response.status_code == 400 and "unknown Host header" in response.json()["error"], base
    for base in ("http://127.0.0.1:8080", "http://192.168.1.20", "http://[::1]:8080", "http://PI.clinic.lan:8080",
                 "http://localhost"):
        assert TestClient(app, base_url=base).get("/api/samples", headers=auth).status_code == 200, base
    bench.close()


def test_serve_on_a_port_in_use_or_an_unknown_host_is_one_line_exit_2(model_dir, tmp_path, monkeypatch):
    import socket

    from typer.testing import CliRunner

    from allx.edge_runner.cli import app

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    base = ["serve", "--model", str(model_dir / "model.tflite"), "--log-db", str(tmp_path / "log.db"),
            "--camera", "none"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = CliRunner().invoke(app, [*base, "--port", str(taken.getsockname()[1])])
    assert busy.exit_code == 2 and "cannot listen on 127.0.0.1 port" in busy.stderr, busy.output
    assert "open: http" not in busy.output  # no link printed to a server that never ran
    unknown = CliRunner().invoke(app, [*base, "--host", "no-such-host.invalid"])
    assert unknown.exit_code == 2 and "unknown host" in unknown.stderr and "Traceback" not in unknown.output


def test_token_is_stored_0600_and_rotates(tmp_path):
    path = tmp_path / "cfg" / "serve_token"
    first = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == first
    assert load_or_create_token(path, rotate=True) != first


def test_sample_workflow_through_the_api(client):
    key = start(client)
    response = upload(client, key, [(f"field{i}.png", png_bytes(i)) for i in range(3)])
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["added"]) == 3 and body["refused"] == []
    assert all(field["label"] in LABELS for field in body["added"])
    assert body["verdict"]["fields_used"] == ["field0.png", "field1.png", "field2.png"]
    assert body["verdict"]["verdict"] in ("malignant", "benign", "inconclusive") and body["verdict"]["words"]
    no_note = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Pre"})
    assert no_note.status_code == 400 and "note" in no_note.json()["error"]
    review = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Pre", "note": "<b>x</b>"})
    assert review.status_code == 200 and review.json()["label"] == "Pre"
    rows = client.get("/api/log", params={"sample": "S-1"}).json()["rows"]
    assert [r["kind"] for r in rows] == ["field"] * 3 + ["sample", "review"]
    assert rows[-1]["record"]["action"] == "override" and rows[-1]["operator"] == "ana"
    summary = client.get("/api/log/samples").json()["samples"]
    assert summary[0]["sample_id"] == "S-1" and summary[0]["fields"] == 3 and summary[0]["review"] == "override Pre"
    csv_text = client.get("/api/log.csv").text
    assert csv_text.count("S-1") >= 5 and csv_text.startswith("id,time_utc,kind")


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


def json_round_trip(data):
    import json

    return json.loads(json.dumps(data))


def test_pages_escape_html_in_sample_id_and_note(client):
    response = client.post("/samples", data={"sample_id": "<script>alert(1)</script>", "operator": "<i>o</i>"},
                           follow_redirects=True)
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.text and "&lt;script&gt;" in response.text
    key = str(response.url).rsplit("/", 1)[-1]
    client.post(f"/samples/{key}/fields", files=[("files", ("<b>f</b>.png", png_bytes(5), "image/png"))])
    page = client.post(f"/samples/{key}/review", data={"action": "confirm", "note": "<img src=x onerror=alert(1)>"})
    assert page.status_code == 200, page.text
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
    log_page = client.get("/log")
    assert "<script>alert" not in log_page.text and "&lt;script&gt;" in log_page.text


def test_bad_uploads_are_refused_before_decoding_and_the_rest_is_kept(client):
    key = start(client)
    response = upload(client, key, [("ok.png", png_bytes(1)), ("notes.txt", b"not an image"),
                                    ("bomb.png", bomb_png()), ("../../etc/passwd", png_bytes(2)), ("empty.png", b"")])
    body = response.json()
    assert response.status_code == 200
    assert [f["path"] for f in body["added"]] == ["ok.png", "passwd"]  # the name is a label, never a path
    errors = " ".join(r["error"] for r in body["refused"])
    assert "not an image" in errors and "decompression bomb" in errors and "empty file" in errors
    only_bad = upload(client, key, [("bomb.png", bomb_png())])
    assert only_bad.status_code == 413  # the README's codes: too large (a pixel count here), not an image
    not_images = upload(client, key, [("a.txt", b"text"), ("b.txt", b"more text")])
    assert not_images.status_code == 415 and len(not_images.json()["refused"]) == 2
    mixed = upload(client, key, [("a.txt", b"text"), ("empty.png", b"")])
    assert mixed.status_code == 400


def test_size_and_count_limits(model_dir, tmp_path):
    limits = UploadLimits(max_file_bytes=20_000, max_files=2)
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db", limits)
    key = start(client)
    big = png_bytes(3, size=120)  # ~43 KB of noise
    response = upload(client, key, [("big.png", big)])
    refusal = response.json()["refused"][0]
    assert response.status_code == 413 and f"got {len(big):,} bytes, expected at most 20,000" in refusal["error"]
    kept = upload(client, key, [("big.png", big), ("small.png", png_bytes(4, 8))])
    assert kept.status_code == 200 and [f["path"] for f in kept.json()["added"]] == ["small.png"]
    too_many = upload(client, key, [(f"f{i}.png", png_bytes(i, 8)) for i in range(3)])
    assert too_many.status_code == 413 and "got more than 2 files" in too_many.json()["error"]
    page = client.post(f"/samples/{key}/fields", files=[("files", ("big.png", big, "image/png"))])
    assert page.status_code == 413 and "expected at most 20,000" in page.text
    huge = client.post(f"/api/samples/{key}/fields", content=b"x" * (limits.max_request_bytes + 1),
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert huge.status_code == 413
    assert client.get("/health").status_code == 200
    bench.close()


def test_a_file_over_the_limit_is_counted_not_kept():
    """A 64 MB part streamed in 64 KB chunks: memory stays near the 1 MB limit, and the refusal says its size."""
    import asyncio
    import tracemalloc

    from allx.edge_runner.serve.form import read_files

    chunk, chunks = b"\0" * 65536, 1024

    async def body():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="huge.png"\r\n\r\n'
        for _ in range(chunks):
            yield chunk
        yield b'\r\n--b\r\nContent-Disposition: form-data; name="files"; filename="ok.png"\r\n\r\n'
        yield png_bytes(1, 8) + b"\r\n--b--\r\n"

    tracemalloc.start()
    try:
        uploads = asyncio.run(read_files("multipart/form-data; boundary=b", body(),
                                         UploadLimits(max_file_bytes=1024 * 1024)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [name for name, _ in uploads.files] == ["ok.png"] and uploads.files[0][1] == png_bytes(1, 8)
    assert uploads.refused[0]["status"] == 413
    assert f"got {len(chunk) * chunks:,} bytes, expected at most 1,048,576" in uploads.refused[0]["error"]
    assert peak < 8 * 1024 * 1024


def test_many_form_fields_besides_the_files_are_refused():
    import asyncio

    from allx.edge_runner.serve.form import MAX_OTHER_PARTS, read_files
    from allx.edge_runner.serve.uploads import UploadRejected

    async def body():
        for number in range(MAX_OTHER_PARTS + 1):
            yield f'--b\r\nContent-Disposition: form-data; name="note{number}"\r\n\r\nx\r\n'.encode()
        yield b"--b--\r\n"

    with pytest.raises(UploadRejected, match=f"more than {MAX_OTHER_PARTS} form fields"):
        asyncio.run(read_files("multipart/form-data; boundary=b", body(), UploadLimits()))


def test_pixel_limit_is_checked_from_the_header():
    from allx.edge_runner.serve.uploads import UploadRejected, check_upload

    with pytest.raises(UploadRejected, match="got 2000x2000 = 4,000,000 pixels"):
        check_upload("wide.png", bomb_png(2000, 2000), UploadLimits(max_pixels=1_000_000))


def test_display_name_strips_paths_and_control_characters():
    assert display_name("../../etc/passwd", "f") == "passwd"
    assert display_name("C:\\Users\\x\\smear.jpg", "f") == "smear.jpg"
    assert display_name("..", "field-1") == "field-1"
    assert display_name("a\x00b\nc.png", "f") == "abc.png"


def test_unknown_sample_and_bad_review_are_clear_errors(client):
    assert client.get("/api/samples/nope").status_code == 404
    key = start(client)
    empty = client.post(f"/api/samples/{key}/review", json={"action": "confirm"})
    assert empty.status_code == 400 and "no field yet" in empty.json()["error"]
    upload(client, key, [("a.png", png_bytes(1))])
    bad = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Cat", "note": "n"})
    assert bad.status_code == 400 and "expected one of" in bad.json()["error"]
    assert client.post("/api/samples", json={"sample_id": "", "operator": "x"}).status_code == 400
    assert client.post("/api/samples", json={"operator": "x"}).status_code == 422
    since = client.get("/api/log", params={"since": "yesterday"})
    assert since.status_code == 400 and "expected a date" in since.json()["error"]
    for path in ("/api/log", "/api/log.csv"):  # a zone that moves it before year 1: still the client's error
        early = client.get(path, params={"since": "0001-01-01T00:00+01:00"})
        assert early.status_code == 400 and "expected a date" in early.json()["error"]


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


def test_model_folder_removed_while_serving(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "gone"
    shutil.copytree(model_dir, folder)
    client, bench = make_client(folder / "model.tflite", tmp_path / "log.db")
    key = start(client)
    shutil.rmtree(folder)
    response = upload(client, key, [("a.png", png_bytes(1))])
    assert response.status_code == 200 and response.json()["added"][0]["label"] in LABELS
    page = client.get("/model")
    assert page.status_code == 200 and "gone from disk" in page.text
    assert client.get("/api/model").json()["on_disk"] is False
    bench.close()


def test_model_page_shows_card_and_bench(client):
    page = client.get("/model")
    assert page.status_code == 200
    card = client.get("/api/model").json()
    assert card["labels"] == list(LABELS) and len(card["model_sha256"]) == 64
    assert card["model_sha256"] in page.text and "allx-edge bench" in page.text


def test_sample_page_upload_through_the_form(client):
    page = client.post("/samples", data={"sample_id": "S-9", "operator": "bo"}, follow_redirects=True)
    key = str(page.url).rsplit("/", 1)[-1]
    response = client.post(f"/samples/{key}/fields", files=[("files", ("f.png", png_bytes(5), "image/png")),
                                                            ("files", ("x.txt", b"hello", "text/plain"))])
    assert response.status_code == 200
    assert "f.png" in response.text and "not an image" in response.text and "Sample verdict" in response.text


def test_addresses_printed_for_the_network():
    from allx.edge_runner.serve.server import is_local, lan_addresses, url_for

    assert lan_addresses("127.0.0.1") == ["127.0.0.1"] and is_local("127.0.0.1") and not is_local("0.0.0.0")
    assert all(not address.startswith("127.") for address in lan_addresses("0.0.0.0"))
    assert url_for("::1", 8080, "t") == "http://[::1]:8080/?token=t"


def test_serve_command_refuses_bad_options(model_dir):
    from typer.testing import CliRunner

    from allx.edge_runner.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(model_dir / "model.tflite"), "--port", "0"])
    assert result.exit_code == 2 and "expected a port in 1..65535" in result.output
    missing = CliRunner().invoke(app, ["serve", "--model", str(model_dir / "nope.tflite")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_serve_command_prints_the_link_and_rotates_the_token(model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from allx.edge_runner.cli import app
    from allx.edge_runner.serve import server

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ALLX_SITE_CONFIG", raising=False)
    served = []
    monkeypatch.setattr(server, "listen", lambda options: None)  # no port taken on a shared machine
    monkeypatch.setattr(server, "run", lambda web_app, options, listener: served.append(options))
    base = ["serve", "--model", str(model_dir / "model.tflite"), "--log-db", str(tmp_path / "log.db"),
            "--camera", "none"]

    def token_of(output: str) -> str:
        return re.search(r"open: http://127\.0\.0\.1:8080/\?token=(\S+)", output).group(1)

    first = CliRunner().invoke(app, base)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, base)
    rotated = CliRunner().invoke(app, [*base, "--new-token"])
    assert token_of(first.output) == token_of(again.output) != token_of(rotated.output)
    stored = tmp_path / "config" / "allx" / "serve_token"
    assert stored.read_text().strip() == token_of(rotated.output) and stat.S_IMODE(stored.stat().st_mode) == 0o600
    network = CliRunner().invoke(app, [*base, "--host", "0.0.0.0", "--port", "9000"])
    assert "on the network" in network.output and ":9000/?token=" in network.output
    assert [o.host for o in served] == ["127.0.0.1"] * 3 + ["0.0.0.0"]


def test_log_csv_cells_never_run_as_formulas(client):
    import csv

    key = start(client, '=HYPERLINK("http://x.example","y")', "+SUM(1,2)")
    upload(client, key, [("a.png", png_bytes(1))])
    rows = list(csv.DictReader(io.StringIO(client.get("/api/log.csv").text)))
    assert {row["sample_id"] for row in rows} == {'\'=HYPERLINK("http://x.example","y")'}
    assert {row["operator"] for row in rows} == {"'+SUM(1,2)"}


def test_rows_waiting_for_a_locked_log_survive_a_stop(model_dir, tmp_path):
    """Uploads while another process holds the log, then the server stops (Ctrl-C closes the workbench): the
    rows are on disk in the spool, and the next start writes them."""
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    key = start(client)
    locker = sqlite3.connect(tmp_path / "log.db")
    locker.execute("begin exclusive")
    response = upload(client, key, [("a.png", png_bytes(1)), ("b.png", png_bytes(2))])
    assert "kept on disk" in response.json()["log_warning"]
    bench.close()
    locker.rollback()
    locker.close()
    with AuditLog.open(tmp_path / "log.db") as log:
        assert log.replayed == 3 and log.verify() == []
        assert [(row["kind"], row["image"]) for row in log.rows()] == [("field", "a.png"), ("field", "b.png"),
                                                                       ("sample", None)]


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
