"""Load on `allx-edge serve`, loopback only: N concurrent clients each upload one sample of M fields at once.

Starts the real server (the CLI, in a subprocess, on 127.0.0.1 and a free port), releases the clients
together, and checks the audit log afterwards: every field row present exactly once (one row per
(sample, image) with the uploaded bytes' sha256), one verdict row per sample, and the hash chain
intact. Reports the upload requests' latency (p50/p95/max) and the fields classified per second.
Bounded: one request per client, each with a timeout; the script stops by itself.

Usage:
    python benchmarks/serve_load.py --quick
        MobileNetV2 int8 224x224 built once (models/bench/, as edge_throughput.py) and generated images
    python benchmarks/serve_load.py --model OUT_DIR_OR_TFLITE --images ../shared/data/all-taleqani/Original
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from allx import __version__, layout  # noqa: E402
from allx.files import write_json  # noqa: E402
from allx.edge_runner.audit import AuditLog  # noqa: E402
from allx.edge_runner.bench import machine_info  # noqa: E402
from benchmarks.edge_throughput import DEFAULT_MODEL, build_default_model, generated_images, image_list  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "serve_load.json"
REQUEST_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, folder: Path) -> tuple[subprocess.Popen, str, str]:
    """(process, base URL, token) of a real `allx-edge serve` on loopback, once it listens."""
    port = free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data")}
    command = [sys.executable, "-c", "from allx.edge_runner.cli import app; app()", "serve", "--model", str(model),
               "--port", str(port), "--log-db", str(folder / "audit.db"), "--camera", "none"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    for line in process.stdout:
        match = re.search(r"open: (http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
        if match:
            base, token = match.groups()
            break
    else:
        sys.exit(f"error: allx-edge serve exited {process.wait()} before printing its address")
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "health", timeout=2).status_code == 200:
                return process, base, token
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    sys.exit("error: allx-edge serve did not answer /health in 120 s")


def run_client(base: str, token: str, number: int, files: list[tuple[str, bytes]], start: threading.Barrier) -> dict:
    """Start one sample, wait for every client, upload its fields in one request; the timing of that request."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S) as http:
        key = http.post("/api/samples", json={"sample_id": f"load-{number:02d}", "operator": "load"}).json()["key"]
        start.wait()
        began = time.perf_counter()
        parts = [("files", (name, data, "image/jpeg")) for name, data in files]
        response = http.post(f"/api/samples/{key}/fields", files=parts)
        ended = time.perf_counter()
    body = response.json()
    return {"status": response.status_code, "seconds": ended - began, "began": began, "ended": ended,
            "added": len(body.get("added", [])),
            "refused": len(body.get("refused", [])), "log_warning": body.get("log_warning")}


def check_log(path: Path, expected: dict[tuple[str, str], str]) -> dict:
    """Compare the audit log with what was sent: lost, duplicated or wrong field rows; verdict rows; chain."""
    with AuditLog.open(path, readonly=True) as log:
        rows = log.rows()
        problems = log.verify()
    fields = [(r["sample_id"], r["image"], r["image_sha256"]) for r in rows if r["kind"] == "field"]
    seen = {(sample, image) for sample, image, _ in fields}
    wrong = [f for f in fields if expected.get(f[:2]) != f[2]]
    return {"field_rows": len(fields), "expected_field_rows": len(expected), "lost": len(set(expected) - seen),
            "duplicated": len(fields) - len(seen), "wrong_sha256": len(wrong),
            "sample_rows": sum(r["kind"] == "sample" for r in rows), "chain_problems": problems}


def measure(model: Path, images: list[Path], clients: int, fields: int) -> dict:
    payloads = [[(f"c{c:02d}-f{f:02d}{images[(c * fields + f) % len(images)].suffix}",
                  images[(c * fields + f) % len(images)].read_bytes()) for f in range(fields)] for c in range(clients)]
    expected = {(f"load-{c:02d}", name): hashlib.sha256(data).hexdigest()
                for c, files in enumerate(payloads) for name, data in files}
    with tempfile.TemporaryDirectory(prefix="allx-serve-load-") as tmp:
        process, base, token = start_server(model, Path(tmp))
        try:
            barrier = threading.Barrier(clients)
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(lambda c: run_client(base, token, c, payloads[c], barrier), range(clients)))
            # From the first upload sent to the last answer (sample creation and client setup not counted).
            wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
            peak_rss_mb = peak_rss(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
        log = check_log(Path(tmp) / "audit.db", expected)
    seconds = np.array([r["seconds"] for r in results])
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"clients": clients, "fields_per_client": fields, "status_codes": sorted({r["status"] for r in results}),
            "fields_added": sum(r["added"] for r in results), "fields_refused": sum(r["refused"] for r in results),
            "log_warnings": sum(bool(r["log_warning"]) for r in results),
            "upload_latency_s": {"p50": round(float(p50), 3), "p95": round(float(p95), 3),
                                 "max": round(float(seconds.max()), 3), "mean": round(float(seconds.mean()), 3)},
            "wall_s": round(wall, 3), "fields_per_s": round(clients * fields / wall, 2),
            "server_peak_rss_mb": peak_rss_mb, "log": log}


def peak_rss(pid: int) -> float | None:
    """The server's peak resident memory (Linux VmHWM), to judge whether it fits a 2 GB Pi."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A .tflite or an allx convert folder (default with --quick: "
                        "MobileNetV2 int8 built in models/bench/).")
    parser.add_argument("--images", type=Path, help="Folder of images to upload (default: generated 224x224 JPEGs).")
    parser.add_argument("--clients", type=int, default=20, help="Concurrent uploads.")
    parser.add_argument("--fields", type=int, default=10, help="Images in each upload.")
    parser.add_argument("--quick", action="store_true", help="The default model and generated images.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results.")
    args = parser.parse_args()
    if args.model is None and not args.quick:
        parser.error("give --model, or --quick for the default model")
    model = args.model or build_default_model(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        images = (image_list(args.images, args.clients * args.fields) if args.images
                  else generated_images(Path(tmp) / "images", args.clients * args.fields))
        result = measure(model, images, args.clients, args.fields)
    ok = result["log"]["lost"] == result["log"]["duplicated"] == result["log"]["wrong_sha256"] == 0 \
        and not result["log"]["chain_problems"] and result["fields_added"] == args.clients * args.fields
    report = {"kind": layout.RecordKind.BENCHMARK.value, "benchmark": "serve_load", "ok": ok, "model": str(model),
              "images": str(args.images) if args.images else "generated 224x224 JPEGs", "allx_version": __version__,
              "machine": vars(machine_info()), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python " + " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]), **result}
    write_json(args.out, report)
    latency = result["upload_latency_s"]
    print(f"{args.clients} concurrent uploads x {args.fields} fields: p50 {latency['p50']} s, p95 {latency['p95']} s, "
          f"max {latency['max']} s; {result['fields_per_s']} fields/s; server peak RSS "
          f"{result['server_peak_rss_mb']} MB; log: {result['log']['field_rows']} field rows, "
          f"lost {result['log']['lost']}, duplicated {result['log']['duplicated']}, chain problems "
          f"{len(result['log']['chain_problems'])} -> {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
