"""Benchmark: feature extraction by two workers (1 thread each) against one worker (1 thread), and
against the machine's ceiling for this work: two independent processes extracting half each.

    python benchmarks/multiworker.py                  # 600 real images (../shared/data/all-taleqani/Original)
    python benchmarks/multiworker.py --quick          # 60 generated 64 px images, anyone can run it

All sides extract the default recipe's features (EfficientNet-Lite0 multiscale, the backbone's input
size) of the same images, each process with TensorFlow limited to one intra-op and one inter-op thread
(train.worker.limit_threads, what `allx train` sets for two workers on a 2-CPU host).
- One worker runs `train.features.extract_features`, the one-process path of `allx train`.
- Two workers (TF_CONFIG on 127.0.0.1, MultiWorkerMirroredStrategy) run what `allx train` runs on a
  cluster: each its share (`train.sharding.extract_share`), then the all-gather (`gather_share`); their
  time runs from a barrier after both have built the model to the end of the gather, on the chief.
- The ceiling: two independent processes (no strategy, no TF_CONFIG) run `extract_share` on the same two
  shares at the same time, from a barrier of their own; their time is the slower one's. Two workers can
  at best match it: the ratio one worker / ceiling is what this machine allows for this work.
Neither includes starting Python and TensorFlow or building the model. The sides run one after the other
in this run, `--rounds` times (alternating; the JSON keeps every round and the medians); the load
average before and after is recorded, because other work on the machine depresses the ratios, and so
is each process's CPU time for the measured part (all its threads), which shows whether two processes
do more work per image than one. Writes JSON (default benchmarks/results/multiworker.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
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
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three sides, alternating")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "multiworker.json")
    parser.add_argument("--role", help=argparse.SUPPRESS)  # internal: one measured process
    args = parser.parse_args()
    if args.role:
        return measure(args.role, json.loads(args.data.read_text()))

    work = Path(tempfile.mkdtemp(prefix="allx-bench-mw-"))
    try:
        measure_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the generated images, the shares and the gathered features


def measure_all(args, work: Path) -> None:
    data, size = args.data, None
    if args.quick:
        from allx.synthetic import make_dataset

        data, size, args.images = make_dataset(work / "data", per_class=15, size=64), 64, min(args.images, 60)
    job = {"data": str(data), "relpaths": pick_images(data, args.images), "size": size}
    job_file = work / "job.json"
    job_file.write_text(json.dumps(job))
    load_before = os.getloadavg()
    rounds = []
    for _ in range(max(1, args.rounds)):
        one = run_roles(["single"], job_file, work)[0]
        two = run_roles(["0", "1"], job_file, work)  # the chief's time covers both shares and the gather
        halves = run_roles(["half0", "half1"], job_file, work)
        rounds.append({"one_worker_s": one["seconds"], "two_workers_s": two[0]["seconds"],
                       "two_workers_extract_s": two[0]["extract_seconds"],
                       "independent_halves_s": max(h["seconds"] for h in halves),
                       "one_worker_cpu_s": one["cpu_seconds"], "two_workers_cpu_s": [w["cpu_seconds"] for w in two],
                       "two_workers_extract_cpu_s": [w["extract_cpu_seconds"] for w in two],
                       "independent_halves_cpu_s": [h["cpu_seconds"] for h in halves],
                       "threads": {"one_worker": one["threads"], "two_workers": [w["threads"] for w in two],
                                   "independent_halves": [h["threads"] for h in halves]}})
    load_after = os.getloadavg()
    result = summarize(args, job, one["image_size"], rounds, load_before, load_after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['images']} images, 1 thread per process: one worker {result['one_worker_s']:.1f} s, two workers "
          f"{result['two_workers_s']:.1f} s -> speedup {result['speedup']:.2f}x; two independent halves "
          f"{result['independent_halves_s']:.1f} s -> ceiling {result['ceiling_speedup']:.2f}x (load average before "
          f"{load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} CPUs)")


def summarize(args, job: dict, image_size, rounds: list[dict], load_before, load_after) -> dict:
    """The medians over the rounds (every round kept as well), ratios and CPU per image."""
    def median(key):
        return round(statistics.median(r[key] for r in rounds), 3)

    def median_sum(key):
        return round(statistics.median(sum(r[key]) for r in rounds), 3)

    images = len(job["relpaths"])
    one, two, halves = median("one_worker_s"), median("two_workers_s"), median("independent_halves_s")
    cpu_one, cpu_two, cpu_halves = (median("one_worker_cpu_s"), median_sum("two_workers_extract_cpu_s"),
                                    median_sum("independent_halves_cpu_s"))
    return {"benchmark": "multiworker", "command": " ".join(["python benchmarks/multiworker.py", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": "synthetic (--quick)" if args.quick else str(job["data"]), "images": images,
            "backbone": BACKBONE, "features": "multiscale", "image_size": image_size, "threads_per_worker": 1,
            "rounds": len(rounds), "one_worker_s": one, "two_workers_s": two,
            "two_workers_extract_s": median("two_workers_extract_s"), "speedup": round(one / two, 3),
            "independent_halves_s": halves, "ceiling_speedup": round(one / halves, 3),
            "share_of_ceiling": round(halves / two, 3),
            "one_worker_cpu_s": cpu_one, "two_workers_cpu_s": rounds[len(rounds) // 2]["two_workers_cpu_s"],
            "cpu_ms_per_image": {"one_worker": round(1000 * cpu_one / images, 2),
                                 "two_workers_extraction": round(1000 * cpu_two / images, 2),
                                 "independent_halves": round(1000 * cpu_halves / images, 2)},
            "per_round": rounds,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after], "cpus": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "note": "two workers: from a barrier after the model builds to the end of the all-gather, on the chief; "
                    "independent halves: two processes without a strategy, each extracting one worker's share at "
                    "the same time (the machine's ceiling for this work); medians over the rounds"}


def pick_images(data: Path, count: int) -> list[str]:
    """`count` images spread evenly over the sorted file list (every class, every block of file numbers)."""
    from allx.train.dataset import scan_dataset

    relpaths = sorted(relpath for relpath, _ in scan_dataset(data).items)
    step = max(1, len(relpaths) // count)
    return relpaths[::step][:count]


def run_roles(roles: list[str], job_file: Path, work: Path) -> list[dict]:
    """Run the measured processes of one side together, in a folder of their own (barrier files, shares)."""
    here = tempfile.mkdtemp(dir=work, prefix="side-")
    ports = []
    for _ in roles:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    procs = []
    for role in roles:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
        env.pop("TF_CONFIG", None)
        if role.isdigit():
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": int(role)}})
        procs.append(subprocess.Popen([sys.executable, __file__, "--role", role, "--data", str(job_file)], env=env,
                                      cwd=here, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=3600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a measured process failed: exit codes {[p.returncode for p in procs]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def meet(role: str, others: list[str], timeout: float = 600.0) -> None:
    """A barrier of independent processes (no TensorFlow collectives): each leaves a file, then waits for
    the others' files in the current folder."""
    Path(f"ready-{role}").touch()
    deadline = time.monotonic() + timeout
    while not all(Path(f"ready-{other}").exists() for other in others):
        if time.monotonic() > deadline:
            raise SystemExit(f"{role}: the other processes {others} never got ready")
        time.sleep(0.005)


def os_threads() -> int:
    """Threads of this process now (Linux), 0 where unknown."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return next((int(line.split()[1]) for line in lines if line.startswith("Threads:")), 0)


def measure(role: str, job: dict) -> None:
    """One measured process: prints {"seconds": ..., ...} as its last line."""
    import numpy as np
    import tensorflow as tf

    from allx.train.worker import limit_threads

    limit_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if role.isdigit() else None

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
    shares, index = shares_of(len(relpaths), 2), int(role[-1]) if role != "single" else 0
    if role.startswith("half"):
        meet(role, ["half0", "half1"])
    elif strategy is not None:
        all_gather(strategy, np.zeros(1, np.int32))  # barrier: both workers start together
    cpu, start = time.process_time(), time.perf_counter()
    if role == "single":
        extract_features(extractor, data, relpaths, labels, size, Path(f"single-{os.getpid()}.npy"))  # never cached
    else:
        mine = extract_share(extractor, data, relpaths, shares[index], size, Augmentation(), 0,
                             Path(f"{role}-{os.getpid()}.npy"))
    extract, extract_cpu = time.perf_counter() - start, time.process_time() - cpu
    if strategy is not None:
        gather_share(strategy, mine, shares, 1, shape, Path(f"gathered{index}.npy"))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    threads = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "os_threads": os_threads()}
    print(json.dumps({"seconds": round(seconds, 3), "extract_seconds": round(extract, 3), "image_size": list(size),
                      "cpu_seconds": round(cpu_seconds, 3), "extract_cpu_seconds": round(extract_cpu, 3),
                      "threads": threads}), flush=True)
    os._exit(0)  # skips TensorFlow's shutdown barrier, which would wait for the other worker


if __name__ == "__main__":
    main()
