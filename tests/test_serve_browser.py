"""`allx-edge serve` in a real browser: Debian's headless Chromium driven by Playwright against a real uvicorn.

The server runs as the CLI does, in a subprocess on 127.0.0.1 and a free port; the browser signs in with
the printed link, starts a sample, uploads three generated images, reads the verdict, overrides it with
a note and exports the log as CSV. A screenshot of the sample page is kept in the test's tmp folder.
Skips with the reason when Chromium or Playwright is absent (.ci/run installs Chromium when it can).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allx import layout
from allx.files import write_json
from allx.edge_runner.bench import bench_models
from edge_models import LABELS, tiny_models

pytest.importorskip("fastapi", reason='needs the serve extra: pip install "allx[serve]"')
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `allx-edge serve` on loopback; yields (sign-in URL, tmp folder); stopped at the end."""
    folder = tmp_path_factory.mktemp("served")
    model_dir = folder / "model"
    model_dir.mkdir()
    (model_dir / "model.tflite").write_bytes(tiny_models().int8.read_bytes())
    (model_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
    write_json(model_dir / layout.BENCH, bench_models([model_dir / "model.tflite"], runs=5, warmup=1).to_dict())
    process, url = launch(folder, model_dir / "model.tflite", folder / "audit.db")
    yield url, folder
    process.terminate()
    process.wait(timeout=20)


def launch(folder: Path, model: Path, log_db: Path):
    """`allx-edge serve` in a subprocess on a free loopback port: (process, sign-in URL)."""
    port = free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data")}
    env.pop("ALLX_SITE_CONFIG", None)
    command = [sys.executable, "-c", "from allx.edge_runner.cli import app; app()", "serve", "--model",
               str(model), "--port", str(port), "--log-db", str(log_db), "--camera", "none"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, wait_for_url(process, port)


def wait_for_url(process, port: int, timeout_s: float = 60.0) -> str:
    """The printed sign-in link, once the port accepts connections."""
    url, deadline, lines = None, time.monotonic() + timeout_s, []
    while url is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            pytest.fail(f"allx-edge serve exited {process.returncode}: {''.join(lines)}")
        lines.append(line)
        match = re.search(r"open: (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        url = match.group(1) if match else None
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return url
        time.sleep(0.2)
    pytest.fail(f"allx-edge serve did not listen on {port} in {timeout_s} s: {''.join(lines)}")


def write_fields(folder: Path) -> list[str]:
    paths = []
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        path = folder / f"field-{i + 1}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def test_technician_workflow_in_chromium(server, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium absent: apt-get install -y chromium (.ci/run does it when it runs as root)")
    url, _ = server
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 412, "height": 915}, accept_downloads=True).new_page()
            run_workflow(page, url, tmp_path)
        finally:
            browser.close()


def run_workflow(page, url: str, tmp_path: Path) -> None:
    page.goto(url)
    assert "token=" not in page.url  # the token moved into the cookie
    page.fill("input[name=sample_id]", "x" * 64)
    page.evaluate("document.querySelector('input[name=sample_id]').removeAttribute('maxlength')")
    page.fill("input[name=sample_id]", "x" * 65)  # past the limit: the server says so and keeps the form
    page.fill("input[name=operator]", "ana")
    page.click("#start button")
    assert "expected at most 64" in page.inner_text("#message")
    page.screenshot(path=str(tmp_path / "serve_start_error.png"), full_page=True)
    page.fill("input[name=sample_id]", "S-<b>7</b>")
    page.click("#start button")
    page.wait_for_selector("#upload")
    assert page.inner_text("#sample-id") == "S-<b>7</b>"  # shown as text, never as markup
    page.set_input_files("#files", write_fields(tmp_path))
    page.click("#upload button")
    page.wait_for_selector("#fields tbody tr:nth-child(3)")
    verdict = page.inner_text("#verdict")
    assert "3 field(s) used" in verdict, verdict
    check_pictures_and_layout(page, tmp_path)
    page.check("input[name=action][value=override]")
    page.select_option("select[name=label]", "Pre")
    page.fill("textarea[name=note]", "blasts seen <by eye>")
    page.click("#review-form button")
    page.wait_for_selector("#review")
    assert "override → Pre" in page.inner_text("#review") and "<by eye>" in page.inner_text("#review")
    page.screenshot(path=str(tmp_path / "serve_sample_page.png"), full_page=True)
    page.goto(url.split("?")[0] + "log")
    with page.expect_download() as download:
        page.click("#export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [row["kind"] for row in rows] == ["field", "field", "field", "sample", "review"]
    assert (rows[-1]["action"], rows[-1]["label"], rows[-1]["note"]) == ("override", "Pre", "blasts seen <by eye>")
    page.screenshot(path=str(tmp_path / "serve_log_page.png"), full_page=True)
    page.goto(url.split("?")[0] + "model")
    assert "This device's bench" in page.content() and "images/s" in page.inner_text("#bench")
    page.screenshot(path=str(tmp_path / "serve_model_page.png"), full_page=True)
    print(f"screenshots: {tmp_path}")


def test_monitor_page_and_header_alarm_in_chromium(tmp_path, monkeypatch):
    """A log whose last samples came through a changed camera: the header of every page says so, and the
    Monitor page draws the windows as an inline SVG chart with the alarm marked."""
    from monitor_logs import write_log

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium absent: apt-get install -y chromium (.ci/run does it when it runs as root)")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model_int8.tflite").write_bytes(tiny_models().int8.read_bytes())
    write_json(model_dir / layout.MANIFEST, {
        "model_file": "model_int8.tflite", "labels": list(LABELS),
        "sample_rule": {"threshold": 0.5, "inconclusive": 0.02, "samples": 100},
        "ood": {"method": "max_softmax", "threshold": 1.0, "flag_rate": 0.04, "held_out_images": 473}})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the log's sealing key where serve looks
    write_log(tmp_path / "audit.db", good=6, changed=6)
    process, url = launch(tmp_path, model_dir / "model_int8.tflite", tmp_path / "audit.db")
    try:
        with playwright_api.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_context(viewport={"width": 412, "height": 915}).new_page()
                page.goto(url)
                assert "Monitor alarm in the latest window" in page.inner_text("#alarm")
                page.click("#alarm")
                page.wait_for_selector("#monitor-chart svg")
                page.select_option("select[name=by]", "samples")
                page.fill("input[name=window]", "6")
                page.click("#monitor-form button")
                page.wait_for_selector("#monitor tbody tr:nth-child(2)")
                assert "samples 7-12" in page.inner_text("#monitor-alarm")
                assert page.locator("#monitor-chart circle.alarm").count() == 2  # OOD and inconclusive
                box = page.locator("#monitor-chart svg").bounding_box()
                assert box is not None and 300 < box["width"] <= 412 and box["height"] > 100
                page.screenshot(path=str(tmp_path / "serve_monitor_page.png"), full_page=True)
            finally:
                browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    print(f"screenshot: {tmp_path / 'serve_monitor_page.png'}")


# Predicates are passed as function source: an expression string would be eval'ed, which the page's CSP forbids.
LOADED = "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"


def check_pictures_and_layout(page, tmp_path: Path) -> None:
    """Every field's thumbnail loads, "Why?" brings its occlusion map, and the table fits a phone and a
    1280-px screen with file names wrapping only between words."""
    page.wait_for_function(f"() => ({LOADED})(Array.from(document.querySelectorAll('#fields td.picture img')))")
    assert page.locator("#fields td.picture img").count() == 3
    page.click("#fields tbody tr:first-child a[data-overlay]")
    page.wait_for_function(f"() => ({LOADED})(Array.from(document.querySelectorAll('#fields tr.overlay-row img')))")
    assert "Red: where hiding that part of the field" in page.inner_text("#fields tr.overlay-row")
    for width, height in ((412, 915), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        fits = page.evaluate("() => { const t = document.querySelector('#fields'), box = t.parentElement;"
                             " return box.scrollWidth <= box.clientWidth"
                             " && t.getBoundingClientRect().right <= document.documentElement.clientWidth; }")
        assert fits, f"the fields table overflows a {width}-px screen"
        assert page.evaluate("() => getComputedStyle(document.querySelector('#fields td.name')).wordBreak") == "normal"
        page.screenshot(path=str(tmp_path / f"serve_fields_{width}px.png"), full_page=True)
    page.set_viewport_size({"width": 412, "height": 915})
