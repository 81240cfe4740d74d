"""The drift monitor on real held-out smears: false alarms on a stable stream, detection of a camera change and of a
slow drift, and the time to read a 100,000-row audit log.

Per-field outcomes are measured ONCE, through the int8 model as allx-edge runs it (SampleSession.add_pixels:
quality check, OOD flag, operating point), on the TEST subset of the model's split (held out: with
`--group-by sequence`, blocks of consecutive file numbers never seen in training) under three cameras:
  clean     the images as they are;
  camera    a changed camera: the tungsten-like colour cast of benchmarks/site_calibration.py, then JPEG 35;
  drift x   the same cast at a fraction x of its strength (1/8 to 1; no re-compression): a lamp ageing.
Each class's test images in file-number order are cut into pseudo-samples of --fields consecutive fields
(convert.operating.pseudo_samples: neighbouring files are views of one slide, so the fields of a sample are
correlated as a real smear's are); each pseudo-sample's verdict comes from sample.aggregate under the
model's own rule, and a simulated technologist reviews every conclusive verdict and overrides it when it
differs from the sample's true class. Windows are then SIMULATED by drawing pseudo-samples with replacement
and judged by edge_runner.monitor.judge, the code `allx-edge monitor` runs, against the expected rates
the model folder states (limits_from in the output).

  false alarms   --windows stable windows of --weekly samples (a week) and of 6 samples: share alarming;
  step change    windows of 6 (and --weekly) samples all through the changed camera: share alarming in the
                 very first such window;
  slow drift     the cast grows linearly from 0 to full over --ramp weekly windows: first alarm window;
  100k rows      a log of >= --rows rows written through AuditLog.append (synchronous=OFF while writing,
                 to write it in minutes; the rows are the real records), then `monitor_log` timed on it.

Usage:
    nice -n 10 python benchmarks/monitor.py --model MODEL_DIR --split SPLIT.json --data DATA_DIR
        [--fields 5] [--weekly 30] [--windows 20000] [--ramp 12] [--rows 100000] [--out benchmarks/results/monitor.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from allx.convert.operating import pseudo_samples  # noqa: E402
from allx.edge_runner import provenance  # noqa: E402
from allx.edge_runner.audit import AuditLog  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.monitor import (SampleTally, add_row, judge, model_expectations, monitor_log,  # noqa: E402
                                      record_values)
from allx.decision import VERDICT_INCONCLUSIVE  # noqa: E402
from allx.edge_runner.sample import SampleSession, aggregate, rule_or_default  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.images import load_image  # noqa: E402
from site_calibration import CASTS, JPEG_QUALITY  # noqa: E402

DRIFT_LEVELS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
STEP_WINDOW = 6  # samples: the target is an alarm in the first such window through a changed camera
TARGET_PER_52 = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by allx convert --int8")
    parser.add_argument("--split", type=Path, required=True, help="the split the model was trained with")
    parser.add_argument("--data", type=Path, required=True, help="the data folder of the split")
    parser.add_argument("--fields", type=int, default=5, help="fields per pseudo-sample")
    parser.add_argument("--weekly", type=int, default=30, help="samples in a weekly window")
    parser.add_argument("--windows", type=int, default=20000, help="simulated windows per measurement")
    parser.add_argument("--ramp", type=int, default=12, help="weekly windows for the drift to reach full strength")
    parser.add_argument("--rows", type=int, default=100_000, help="audit-log rows for the read timing")
    parser.add_argument("--max-images", type=int, default=None, help="at most this many test images (evenly)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "monitor.json")
    return parser.parse_args(argv)


def camera(pixels: np.ndarray, strength: float, jpeg: bool) -> np.ndarray:
    """The tungsten cast at `strength` (0: none, 1: full), then JPEG re-compression when `jpeg`."""
    gain = 1.0 + strength * (np.asarray(CASTS["tungsten"], np.float32) - 1.0)
    cast = np.clip(pixels.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    if not jpeg:
        return cast
    buffer = io.BytesIO()
    Image.fromarray(cast).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def measure_fields(model: EdgeModel, data: Path, relpaths: list[str]) -> dict:
    """{condition: [FieldResult per image]} through SampleSession.add_pixels (quality, OOD, decision)."""
    conditions = {"clean": (0.0, False), "camera": (1.0, True), **{f"drift {x:g}": (x, False) for x in DRIFT_LEVELS}}
    results = {name: [] for name in conditions}
    session = SampleSession(model, "benchmark")
    for count, relpath in enumerate(relpaths, 1):
        pixels = load_image(data / relpath, model.input_size)
        for name, (strength, jpeg) in conditions.items():
            view = pixels if name == "clean" else camera(pixels, strength, jpeg)
            results[name].append(session.add_pixels(relpath, view))
        if count % 50 == 0:
            print(f"  measured {count}/{len(relpaths)} images x {len(conditions)} cameras", flush=True)
    return results


def sample_tallies(model: EdgeModel, fields: list, samples: list[list[int]], truth: list[int]) -> list[SampleTally]:
    """One tally per pseudo-sample: its fields' counters, its verdict, and a review of a conclusive verdict that
    overrides it when its answer (subtype, or Benign) is not the sample's true class."""
    rule = rule_or_default(model.manifest.sample_rule, model.manifest.operating_point)
    tallies = []
    for k, members in enumerate(samples):
        tally = SampleTally(f"s{k}", "")
        for i in members:
            record = provenance.sample_field_record(fields[i], model.labels, {}, None, tally.sample_id)
            add_row({tally.sample_id: tally}, "", "field", tally.sample_id, *record_values(record))
        verdict = aggregate([fields[i] for i in members], model.labels, rule, tally.sample_id)
        tally.verdict = verdict.verdict
        if verdict.verdict != VERDICT_INCONCLUSIVE:  # the label a review confirms or overrides, as the log records it
            answer = provenance.sample_verdict_record(verdict, model.labels, {}, None)["label"]
            tally.reviewed, tally.overridden = True, answer != model.labels[truth[members[0]]]
        tallies.append(tally)
    return tallies


def alarm_share(pool: list[SampleTally], size: int, windows: int, expected: dict, rng: random.Random) -> dict:
    """Share of `windows` windows of `size` samples drawn from `pool` that alarm, overall and per rate."""
    alarmed, by_rate = 0, {}
    for _ in range(windows):
        window = judge("", rng.choices(pool, k=size), expected)
        alarmed += bool(window.alarms)
        for name in window.alarms:
            by_rate[name] = by_rate.get(name, 0) + 1
    return {"windows": windows, "alarming": alarmed, "share": alarmed / windows, "interval_95": interval(alarmed, windows),
            "by_rate": {name: count / windows for name, count in sorted(by_rate.items())}}


def interval(hits: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of a share."""
    from scipy.stats import beta  # benchmarks only; scipy comes with scikit-learn (the train extra)

    low = 0.0 if hits == 0 else float(beta.ppf(0.025, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(0.975, hits + 1, n - hits))
    return low, high


def drift_delays(pools: dict, weekly: int, ramp: int, repeats: int, expected: dict, rng: random.Random) -> dict:
    """Weekly windows whose cast grows linearly to full over `ramp` windows: the window of the first alarm."""
    levels = (0.0, *DRIFT_LEVELS)
    firsts = []
    for _ in range(repeats):
        first = None
        for week in range(1, 3 * ramp + 1):
            strength = min(1.0, week / ramp)
            level = min(levels, key=lambda x: abs(x - strength))
            pool = pools["clean"] if level == 0 else pools[f"drift {level:g}"]
            if judge("", rng.choices(pool, k=weekly), expected).alarms:
                first = week
                break
        firsts.append(first if first is not None else 3 * ramp + 1)
    firsts = np.asarray(firsts)
    return {"ramp_windows": ramp, "repeats": repeats, "first_alarm_median": float(np.median(firsts)),
            "first_alarm_p90": float(np.percentile(firsts, 90)),
            "strength_at_median": min(1.0, float(np.median(firsts)) / ramp),
            "never_within": int((firsts > 3 * ramp).sum())}


def write_big_log(path: Path, model: EdgeModel, fields: list, samples: list[list[int]], rows: int) -> int:
    """A log of at least `rows` real records: each pseudo-sample's fields, verdict and a review, over and over."""
    facts = provenance.model_facts(model)
    rule = rule_or_default(model.manifest.sample_rule, model.manifest.operating_point)
    written, round_ = 0, 0
    with AuditLog.open(path) as log:
        log.connection.execute("PRAGMA synchronous = OFF")  # writing speed only; reading is what is measured
        while written < rows:
            for k, members in enumerate(samples):
                sample_id = f"r{round_}-s{k}"
                for i in members:
                    log.append(provenance.sample_field_record(fields[i], model.labels, facts, "bench", sample_id))
                verdict = aggregate([fields[i] for i in members], model.labels, rule, sample_id)
                log.append(provenance.sample_verdict_record(verdict, model.labels, facts, "bench"))
                log.review(sample_id, operator="bench")
                written += len(members) + 2
                if written >= rows:
                    break
            round_ += 1
    return written


def time_monitor(path: Path, model_dir: Path, repeats: int = 3) -> dict:
    """Wall and CPU seconds of `allx-edge monitor`'s work on the log; the load average says how busy the machine
    was (this one is shared: wall time waits for a core, CPU time does not)."""
    seconds, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        report = monitor_log(path, model_dir, size=STEP_WINDOW)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"seconds": seconds, "median_s": float(np.median(seconds)), "cpu_seconds": cpu,
            "median_cpu_s": float(np.median(cpu)), "load_average_1min": os.getloadavg()[0],
            "cores": os.cpu_count(), "windows": len(report.windows)}


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    split = json.loads(args.split.read_text())
    model = EdgeModel.load(args.model)
    relpaths = sorted(split["test"])
    if args.max_images and len(relpaths) > args.max_images:
        relpaths = [relpaths[int(i)] for i in np.linspace(0, len(relpaths) - 1, args.max_images)]
    truth = [model.labels.index(p.split("/")[0]) for p in relpaths]
    samples = pseudo_samples(relpaths, truth, None, args.fields)
    expected, limits_from = model_expectations(args.model)
    print(f"{len(relpaths)} test images, {len(samples)} pseudo-samples of {args.fields} fields; limits from "
          f"{limits_from}: " + ", ".join(f"{name} {e.rate:.3f} (n={e.n})" for name, e in expected.items()), flush=True)
    start = time.perf_counter()
    fields = measure_fields(model, args.data, relpaths)
    measure_s = time.perf_counter() - start
    pools = {name: sample_tallies(model, results, samples, truth) for name, results in fields.items()}
    observed = {name: observed_rates(pool) for name, pool in pools.items()}
    stable = {"weekly": alarm_share(pools["clean"], args.weekly, args.windows, expected, rng),
              "six": alarm_share(pools["clean"], STEP_WINDOW, args.windows, expected, rng)}
    step = {"six": alarm_share(pools["camera"], STEP_WINDOW, args.windows // 10, expected, rng),
            "weekly": alarm_share(pools["camera"], args.weekly, args.windows // 10, expected, rng)}
    per_level = {name: alarm_share(pools[name], args.weekly, args.windows // 10, expected, rng)["share"]
                 for name in pools if name.startswith("drift")}
    drift = drift_delays(pools, args.weekly, args.ramp, args.windows // 20, expected, rng)
    print("writing the big log ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="allx-monitor-") as folder:
        log_path = Path(folder) / "audit.db"
        rows = write_big_log(log_path, model, fields["clean"], samples, args.rows)
        timing = {"rows": rows, "log_mb": round(log_path.stat().st_size / 1e6, 1), **time_monitor(log_path, args.model)}
    manifest = model.manifest.document
    result = {"kind": "benchmark", "benchmark": "monitor",
              "command": "python benchmarks/monitor.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "model": manifest.get("model_file"), "precision": manifest.get("precision"),
              "split_kind": (manifest.get("origin") or {}).get("split_kind"), "test_images": len(relpaths),
              "pseudo_samples": len(samples), "fields_per_sample": args.fields, "weekly_samples": args.weekly,
              "measure_s": round(measure_s, 1), "limits_from": limits_from,
              "expected": {name: e.to_dict() for name, e in expected.items()}, "observed": observed,
              "false_alarms": {**stable, "per_52_weekly": 52 * stable["weekly"]["share"],
                               "per_52_weekly_interval": [52 * x for x in stable["weekly"]["interval_95"]],
                               "target_per_52": TARGET_PER_52},
              "step_change": step, "drift_alarm_share_per_weekly_window": per_level, "slow_drift": drift,
              "read_100k": timing}
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("observed", "false_alarms", "step_change",
                                                   "drift_alarm_share_per_weekly_window", "slow_drift", "read_100k")},
                     indent=1))
    print(f"wrote {args.out}")
    return 0


def observed_rates(pool: list[SampleTally]) -> dict:
    """The rates over every pseudo-sample of one camera (what the windows are drawn from)."""
    window = judge("all", pool, {})
    return {name: window.rate(name) for name in window.counts} | {"mean_confidence": window.mean_confidence}


if __name__ == "__main__":
    sys.exit(main())
