"""`allx-edge serve` under two faults, loopback only: a huge refused upload, and an upload that waits on a locked log.

Starts the real server (the CLI in a subprocess, as serve_load.py does), then:
1. memory: uploads one file of --huge-mb (default 300) MB, far over the 20 MB per-file limit, and reads
   the server's resident memory (Linux VmRSS before, VmHWM peak after) around it;
2. a locked log: another process (this script) holds the audit log locked (BEGIN EXCLUSIVE), an upload of
   two fields starts, /health is asked --health-calls times while that upload waits, then the lock goes
   and the upload completes; it records each /health latency, whether the upload was still waiting when
   each answered, and the upload's status and log rows.
Bounded: every request has a timeout; the script stops the server by itself.

Usage:
    python benchmarks/serve_hardening.py --quick     # MobileNetV2 int8 224x224 (random weights), as serve_load.py
    python benchmarks/serve_hardening.py --model OUT_DIR_OR_TFLITE
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from allx import __version__  # noqa: E402
from allx.edge_runner.audit import AuditLog  # noqa: E402
from allx.edge_runner.bench import machine_info  # noqa: E402
from allx.files import write_json  # noqa: E402
from benchmarks.edge_throughput import DEFAULT_MODEL, build_default_model  # noqa: E402
from benchmarks.serve_load import start_server  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "serve_hardening.json"
TIMEOUT_S = 120.0
LOCK_HELD_S = 3.0  # under the server's 5 s busy wait: the upload's rows are written once the lock goes


def memory_mb(pid: int, key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def start_sample(http: httpx.Client, sample_id: str) -> str:
    response = http.post("/api/samples", json={"sample_id": sample_id, "operator": "bench"})
    response.raise_for_status()
    return response.json()["key"]


def huge_upload(http: httpx.Client, pid: int, folder: Path, megabytes: int) -> dict:
    """One sparse file of `megabytes` MB uploaded from disk (the client never holds it in memory)."""
    huge = folder / "huge.png"
    with open(huge, "wb") as file:
        file.truncate(megabytes * 1024 * 1024)
    key = start_sample(http, "memory")
    before, peak_before = memory_mb(pid, "VmRSS"), memory_mb(pid, "VmHWM")
    started = time.perf_counter()
    with open(huge, "rb") as file:
        response = http.post(f"/api/samples/{key}/fields", files=[("files", ("huge.png", file, "image/png"))])
    return {"file_mb": megabytes, "status": response.status_code, "refusal": response.json().get("refused"),
            "seconds": round(time.perf_counter() - started, 2), "server_rss_before_mb": before,
            "server_peak_rss_before_mb": peak_before, "server_peak_rss_after_mb": memory_mb(pid, "VmHWM"), "server_rss_after_mb": memory_mb(pid, "VmRSS")}


def locked_log_upload(http: httpx.Client, log_db: Path, health_calls: int) -> dict:
    key = start_sample(http, "locked")
    files = [("files", (f"f{i}.png", png(i), "image/png")) for i in range(2)]
    outcome = {}
    locker = sqlite3.connect(log_db, timeout=TIMEOUT_S)
    locker.execute("begin exclusive")
    locked_at = time.perf_counter()
    uploading = threading.Thread(target=lambda: outcome.update(
        response=http.post(f"/api/samples/{key}/fields", files=files), ended=time.perf_counter()))
    uploading.start()
    time.sleep(0.5)  # the upload reaches the log and waits there
    health = []
    for _ in range(health_calls):
        started = time.perf_counter()
        status = http.get("/health").status_code
        health.append({"seconds": round(time.perf_counter() - started, 4), "status": status,
                       "upload_waiting": uploading.is_alive()})
        time.sleep(max(0.0, (LOCK_HELD_S - 0.5) / health_calls - health[-1]["seconds"]))
    time.sleep(max(0.0, LOCK_HELD_S - (time.perf_counter() - locked_at)))
    locker.rollback()
    locker.close()
    uploading.join(TIMEOUT_S)
    response = outcome["response"]
    with AuditLog.open(log_db, readonly=True) as log:
        rows = [r for r in log.rows() if r["sample_id"] == "locked"]
    return {"lock_held_s": LOCK_HELD_S, "health": health,
            "health_max_s": max(h["seconds"] for h in health),
            "health_answered_while_upload_waited": sum(h["upload_waiting"] and h["status"] == 200 for h in health),
            "upload_status": response.status_code, "upload_seconds": round(outcome["ended"] - locked_at, 2),
            "upload_log_warning": response.json().get("log_warning"),
            "log_rows": [(r["kind"], r["image"]) for r in rows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A .tflite or an allx convert folder.")
    parser.add_argument("--quick", action="store_true", help="The default model (built once in models/bench/).")
    parser.add_argument("--huge-mb", type=int, default=300, help="Size of the refused upload, MB.")
    parser.add_argument("--health-calls", type=int, default=5, help="/health requests while the upload waits.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results.")
    args = parser.parse_args()
    if args.model is None and not args.quick:
        parser.error("give --model, or --quick for the default model")
    model = args.model or build_default_model(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory(prefix="allx-serve-hardening-") as tmp:
        process, base, token = start_server(model, Path(tmp))
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S) as http:
                memory = huge_upload(http, process.pid, Path(tmp), args.huge_mb)
                locked = locked_log_upload(http, Path(tmp) / "audit.db", args.health_calls)
        finally:
            process.terminate()
            process.wait(timeout=30)
    document = {"kind": "serve_hardening", "allx_version": __version__, "model": str(model),
                "machine": machine_info().__dict__, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "huge_upload": memory, "locked_log": locked}
    write_json(args.out, document)
    print(f"huge upload: {memory['status']}, server RSS {memory['server_rss_before_mb']} MB before, peak "
          f"{memory['server_peak_rss_after_mb']} MB after; /health max {locked['health_max_s']} s while the upload "
          f"waited ({locked['health_answered_while_upload_waited']}/{args.health_calls}); upload "
          f"{locked['upload_status']} after {locked['upload_seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
