"""The README's screenshots of `allx-edge serve`: the sample page on a phone and at 1280 px, with one field's
occlusion map open, and the Model page. Headless Chromium through Playwright against a real server.

The fields are generated smear-like images (allx.synthetic): the real data must not be redistributed.
One of them is blurred on purpose, so the page shows a field set aside with its reason.

Usage:
    python docs/screenshots.py --model MODEL_DIR [--out docs/]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.synthetic import make_image  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FIELDS = ("Snap_0142_Pre.jpg", "Snap_0143_Pre.jpg", "Snap_0144_Early.jpg", "Snap_0145_blurred.jpg")


def write_fields(folder: Path, stain: list[float] | None) -> list[str]:
    """Generated fields, moved to the model's mean stain colour (model.json quality.colour_mean) when it has
    one, so that the quality check judges their focus rather than their made-up colours."""
    rng = np.random.default_rng(3)
    paths = []
    for name in FIELDS:
        pixels = make_image("Pre" if "blurred" in name else name.split("_")[-1].split(".")[0], 448, rng)
        if stain is not None:
            shifted = pixels.astype(np.float32) - pixels.mean(axis=(0, 1)) + np.asarray(stain, np.float32)
            pixels = np.clip(shifted, 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels)
        if "blurred" in name:
            picture = picture.filter(ImageFilter.GaussianBlur(6))
        picture.save(folder / name, quality=92)
        paths.append(str(folder / name))
    return paths


def start_server(model: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data")}
    process = subprocess.Popen([sys.executable, "-c", "from allx.edge_runner.cli import app; app()", "serve",
                                "--model", str(model), "--port", str(port), "--camera", "none", "--threads", "1",
                                "--log-db", str(folder / "audit.db")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        found = re.search(r"open: (http://\S+)", line)
        if found:
            return process, found.group(1)
    raise SystemExit(f"allx-edge serve did not start (exit {process.wait()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an allx convert folder")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # the dev extra

    with tempfile.TemporaryDirectory() as temp:
        process, url = start_server(args.model, Path(temp))
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(url)
                page.fill("input[name=sample_id]", "S-2026-0142")
                page.fill("input[name=operator]", "ana")
                page.click("#start button")
                page.wait_for_selector("#upload")
                stain = (json.loads((args.model / "model.json").read_text()).get("quality") or {}).get("colour_mean")
                page.set_input_files("#files", write_fields(Path(temp), stain))
                page.click("#upload button")
                page.wait_for_selector(f"#fields tbody tr:nth-child({len(FIELDS)})", timeout=120_000)
                page.click("#fields tbody tr:first-child a[data-overlay]")
                page.wait_for_selector("#fields tr.overlay-row img", state="visible")
                page.wait_for_function("() => document.querySelector('#fields tr.overlay-row img').naturalWidth > 0",
                                       timeout=120_000)
                time.sleep(0.3)
                page.locator("#fields").screenshot(path=str(args.out / "serve_fields_1280.png"))
                page.set_viewport_size({"width": 412, "height": 915})
                page.locator("main").screenshot(path=str(args.out / "serve_sample_phone.png"))
                page.set_viewport_size({"width": 1280, "height": 900})
                page.goto(url.split("?")[0] + "model")
                page.locator("#model").screenshot(path=str(args.out / "serve_model_card.png"))
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"wrote {args.out}/serve_*.png")


if __name__ == "__main__":
    main()
