"""Benchmark: feature extraction by two workers (1 thread each) against one worker (1 thread).

    python benchmarks/multiworker.py                  # 600 real images (../shared/data/all-taleqani/Original)
    python benchmarks/multiworker.py --quick          # 60 generated 64 px images, anyone can run it

Both sides extract the default recipe's features (EfficientNet-Lite0 multiscale, the backbone's input
size) of the same images, each process with TensorFlow limited to one intra-op and one inter-op thread.
One worker runs `train.features.extract_features`, the one-process path of `allx train`. Two workers
(TF_CONFIG on 127.0.0.1, MultiWorkerMirroredStrategy) run what `allx train` runs on a cluster: each its
share (`train.sharding.extract_share`), then the all-gather (`gather_share`); their time runs from a
barrier after both have built the model to the end of the gather, on the chief. Neither includes
starting Python and TensorFlow or building the model. Both sides run one after the other in this run;
the load average of the machine before and after is recorded, because other work on it depresses the
ratio, and so is each process's CPU time for the measured part (all its threads), which shows whether two
workers do more work in all than one. Writes JSON (default benchmarks/results/multiworker.json) and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
BACKBONE = "efficientnet-lite0"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REAL_DATA, help="data folder (default: the real data set)")
    parser.add_argument("--quick", action="store_true", help="60 generated 64x64 images instead of real data")
    parser.add_argument("--images", type=int, default=600, help="images extracted (spread over the classes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "multiworker.json")
    parser.add_argument("--role", help=argparse.SUPPRESS)  # internal: one measured process
    args = parser.parse_args()
    if args.role:
        return measure(args.role, json.loads(args.data.read_text()))

    work = Path(tempfile.mkdtemp(prefix="allx-bench-mw-"))
    try:
        measure_both(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the generated images, the shares and the gathered features


def measure_both(args, work: Path) -> None:
    data, size = args.data, None
    if args.quick:
        from allx.synthetic import make_dataset

        data, size, args.images = make_dataset(work / "data", per_class=15, size=64), 64, min(args.images, 60)
    job = {"data": str(data), "relpaths": pick_images(data, args.images), "size": size}
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job))
    load_before = os.getloadavg()
    one = run_roles(["single"], job_file, work)[0]
    two = run_roles(["0", "1"], job_file, work)  # the chief's time covers both shares and the gather
    load_after = os.getloadavg()
    result = {"benchmark": "multiworker", "command": " ".join(["python benchmarks/multiworker.py", *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "data": "synthetic (--quick)" if args.quick else str(data), "images": len(job["relpaths"]),
              "backbone": BACKBONE, "features": "multiscale", "image_size": one["image_size"],
              "threads_per_worker": 1, "one_worker_s": one["seconds"], "two_workers_s": two[0]["seconds"],
              "two_workers_extract_s": two[0]["extract_seconds"],
              "speedup": round(one["seconds"] / two[0]["seconds"], 3),
              "one_worker_cpu_s": one["cpu_seconds"], "two_workers_cpu_s": [w["cpu_seconds"] for w in two],
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after], "cpus": os.cpu_count(),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "note": "two workers: from a barrier after the model builds to the end of the all-gather, on the chief"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['images']} images, 1 thread per worker: one worker {one['seconds']:.1f} s, two workers "
          f"{two[0]['seconds']:.1f} s -> speedup {result['speedup']:.2f}x (load average before "
          f"{load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs)")


def pick_images(data: Path, count: int) -> list[str]:
    """`count` images spread evenly over the sorted file list (every class, every block of file numbers)."""
    from allx.train.dataset import scan_dataset

    relpaths = sorted(relpath for relpath, _ in scan_dataset(data).items)
    step = max(1, len(relpaths) // count)
    return relpaths[::step][:count]


def run_roles(roles: list[str], job_file: Path, work: Path) -> list[dict]:
    ports = []
    for _ in roles:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    procs = []
    for role in roles:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
        if role != "single":
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": int(role)}})
        procs.append(subprocess.Popen([sys.executable, __file__, "--role", role, "--data", str(job_file)], env=env,
                                      cwd=work, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a measured process failed: exit codes {[p.returncode for p in procs]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def measure(role: str, job: dict) -> None:
    """One measured process: prints {"seconds": ..., ...} as its last line."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = None if role == "single" else tf.distribute.MultiWorkerMirroredStrategy()

    from allx.train.augment import Augmentation
    from allx.train.backbones import get_backbone
    from allx.train.features import extract_features
    from allx.train.sharding import all_gather, extract_share, gather_share, shares_of
    from allx.train.trainer import build_extractor

    backbone = get_backbone(BACKBONE)
    size = (job["size"], job["size"]) if job["size"] else tuple(backbone.input_size)
    _, _, _, extractor = build_extractor(backbone, backbone.default_weights, size, "multiscale")
    data, relpaths = Path(job["data"]), job["relpaths"]
    labels = [0] * len(relpaths)
    shape = tuple(int(d) for d in extractor.output_shape[1:])
    extractor.predict_on_batch(np.zeros((1, *size, 3), np.float32))  # the first call traces: not measured
    cpu = time.process_time()
    if strategy is None:
        start = time.perf_counter()
        extract_features(extractor, data, relpaths, labels, size, Path("single.npy"))
        seconds = extract = time.perf_counter() - start
    else:
        shares, index = shares_of(len(relpaths), 2), int(role)
        all_gather(strategy, np.zeros(1, np.int32))  # barrier: both workers start together
        start = time.perf_counter()
        mine = extract_share(extractor, data, relpaths, shares[index], size, Augmentation(), 0, Path(f"share{index}.npy"))
        extract = time.perf_counter() - start
        gather_share(strategy, mine, shares, 1, shape, Path(f"gathered{index}.npy"))
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 3), "extract_seconds": round(extract, 3), "image_size": list(size),
                      "cpu_seconds": round(time.process_time() - cpu, 3)}), flush=True)
    os._exit(0)  # skips TensorFlow's shutdown barrier, which would wait for the other worker


if __name__ == "__main__":
    main()
