"""Latency benchmark: load time, invoke latency percentiles, throughput, memory, and an end-to-end figure."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from allx.edge_runner.manifest_check import REJECTED
from allx.edge_runner.model import EdgeModel
from allx.errors import DataError, ImageError, UsageError
from allx.images import is_image_file
from allx.layout import RecordKind
from allx.text import markdown_table


@dataclass(frozen=True)
class LatencyStats:
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    samples: tuple[float, ...] = ()  # every measured latency, in run order (for distribution plots)

    @classmethod
    def from_ms(cls, values_ms: Sequence[float]) -> "LatencyStats":
        v = np.asarray(values_ms, np.float64)
        p50, p90, p95, p99 = np.percentile(v, [50, 90, 95, 99])
        return cls(float(v.mean()), float(v.std()), float(v.min()), float(p50), float(p90), float(p95),
                   float(p99), float(v.max()), tuple(round(float(x), 4) for x in v))


@dataclass(frozen=True)
class EndToEnd:
    """Sequential decode + resize + invoke per image, on real files (no overlap: the worst case)."""
    images: int
    failures: int
    latency_ms: LatencyStats
    images_per_s: float


@dataclass(frozen=True)
class TtaCost:
    """One image's predict() (quantize + invoke + dequantize) with and without averaging over 8 views."""
    single_ms: LatencyStats
    tta_ms: LatencyStats
    ratio: float  # TTA median / single median: the latency cost of averaging over the views (medians: robust
                  # to a busy machine's spikes)


@dataclass(frozen=True)
class BenchResult:
    model: str
    precision: str | None
    file_size_bytes: int
    input_shape: tuple[int, ...]
    input_dtype: str
    runtime: str
    threads: int
    delegate: str
    load_ms: float
    warmup: int
    runs: int
    latency_ms: LatencyStats
    throughput_ips: float
    peak_rss_mb: float | None
    speed_ratio: float = 1.0
    end_to_end: EndToEnd | None = None
    tta: TtaCost | None = None
    model_sha256: str = ""
    features_off: tuple[str, ...] = ()  # codes of edge_runner.metadata.FEATURES the model runs without
    warnings: tuple[str, ...] = ()  # what allx-edge said about the model at load
    model_status: str | None = None  # the manifest's status ("passed", "rejected"; None: no manifest)


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cores: int
    machine: str
    os: str
    python: str


@dataclass(frozen=True)
class BenchReport:
    machine: MachineInfo
    results: tuple[BenchResult, ...]
    created: str

    def to_dict(self) -> dict:
        return {"kind": RecordKind.BENCH.value, **dataclasses.asdict(self)}


def bench_models(paths: Sequence[str | Path], runs: int = 100, warmup: int = 10, threads: int | None = None,
                 delegate: str = "auto", images: str | Path | None = None, labels=None,
                 on_model: Callable[[str], None] | None = None, tta: bool = False,
                 allow_rejected: bool = False) -> BenchReport:
    """Benchmark each model in turn; speed_ratio = first model's mean latency / this model's. A rejected
    model is refused (ModelError) unless `allow_rejected`; its result then has model_status "rejected"."""
    if not paths:
        raise UsageError("got no models, expected at least one --model")
    if runs < 1 or warmup < 0:
        raise UsageError(f"got runs={runs}, warmup={warmup}, expected runs >= 1 and warmup >= 0")
    image_paths = list_images(Path(images)) if images is not None else None
    results = []
    for path in paths:
        if on_model is not None:
            on_model(str(path))
        result = bench_model(path, runs, warmup, threads, delegate, image_paths, labels, tta, allow_rejected)
        if results:
            result = dataclasses.replace(result, speed_ratio=results[0].latency_ms.mean / result.latency_ms.mean)
        results.append(result)
    return BenchReport(machine_info(), tuple(results), datetime.now(timezone.utc).isoformat(timespec="seconds"))


def bench_model(path, runs: int, warmup: int, threads: int | None, delegate: str,
                image_paths: list[Path] | None, labels=None, tta: bool = False,
                allow_rejected: bool = False) -> BenchResult:
    start = time.perf_counter()
    model = EdgeModel.load(path, threads=threads, delegate=delegate, labels=labels, allow_rejected=allow_rejected)
    load_ms = (time.perf_counter() - start) * 1000.0
    pixels = np.random.default_rng(0).integers(0, 256, (*model.input_size, 3), dtype=np.uint8)
    latencies = time_invoke(model, pixels, runs, warmup)
    stats = LatencyStats.from_ms(latencies)
    end_to_end = time_end_to_end(model, image_paths[:runs]) if image_paths else None
    tta_cost = time_tta(model, pixels, max(1, runs // 8), min(warmup, 2)) if tta else None
    return BenchResult(
        model=str(model.model_path), precision=model.manifest.precision or guess_precision(model),
        file_size_bytes=len(model.card.content), input_shape=tuple(int(n) for n in model.input["shape"]),
        input_dtype=model.input_dtype.name, runtime=model.runtime, threads=model.threads,
        delegate=model.delegate, load_ms=load_ms, warmup=warmup, runs=runs, latency_ms=stats,
        throughput_ips=1000.0 / stats.mean if stats.mean > 0 else 0.0, peak_rss_mb=peak_rss_mb(),
        end_to_end=end_to_end, tta=tta_cost, model_sha256=model.sha256, features_off=model.card.features_off,
        warnings=model.warnings, model_status=REJECTED if model.rejected else model.manifest.status)


def time_invoke(model: EdgeModel, pixels: np.ndarray, runs: int, warmup: int) -> list[float]:
    """Bare invoke() latencies in ms, the input set once: the interpreter's own speed."""
    model.set_input(pixels)
    for _ in range(warmup):
        model.invoke()
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        model.invoke()
        latencies.append((time.perf_counter() - start) * 1000.0)
    return latencies


def time_tta(model: EdgeModel, pixels: np.ndarray, runs: int, warmup: int) -> TtaCost:
    """predict() of one image without and with TTA, alternating so both see the same machine state."""
    timings = {False: [], True: []}
    for i in range(warmup + runs):
        for tta in (False, True):
            model.tta = tta
            start = time.perf_counter()
            model.predict(pixels)
            if i >= warmup:
                timings[tta].append((time.perf_counter() - start) * 1000.0)
    model.tta = False
    single, averaged = LatencyStats.from_ms(timings[False]), LatencyStats.from_ms(timings[True])
    return TtaCost(single, averaged, averaged.p50 / single.p50 if single.p50 > 0 else 0.0)


def time_end_to_end(model: EdgeModel, image_paths: Sequence[Path]) -> EndToEnd:
    latencies, failures = [], 0
    for path in image_paths:
        start = time.perf_counter()
        try:
            model.predict(model.load_pixels(path))
        except ImageError:
            failures += 1
            continue
        latencies.append((time.perf_counter() - start) * 1000.0)
    if not latencies:
        raise DataError(f"none of {len(image_paths)} images could be read, expected readable images")
    stats = LatencyStats.from_ms(latencies)
    return EndToEnd(len(image_paths), failures, stats, 1000.0 / stats.mean)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"--images {folder}: got {'a file' if folder.exists() else 'no such folder'}, "
                        "expected a folder of images")
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not paths:
        raise DataError(f"--images {folder}: no image files found, expected {', '.join(('.jpg', '.png', '...'))}")
    return paths


def guess_precision(model: EdgeModel) -> str:
    return {"uint8": "int8", "int8": "int8"}.get(model.input_dtype.name, model.input_dtype.name)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (cumulative over the models benched before).

    Linux: VmHWM of /proc/self/status, which exec resets, so the figure is this program's own. The
    getrusage ru_maxrss figure is not: Linux carries it from the parent through fork and exec, so a bench
    started by a 700 MB Python process would report 700 MB for a 3 MB model. Elsewhere ru_maxrss is the
    only figure there is (None on Windows)."""
    own = high_water_mark_mb(Path("/proc/self/status"))
    if own is not None:
        return own
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def high_water_mark_mb(status: Path) -> float | None:
    """The VmHWM line of a /proc/PID/status file in MB (None where there is no such file or line)."""
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # the kernel writes kB
    return None


def machine_info() -> MachineInfo:
    return MachineInfo(cpu_model(), os.cpu_count() or 1, platform.machine(),
                       f"{platform.system()} {platform.release()}", platform.python_version())


def cpu_model() -> str:
    """CPU name from /proc/cpuinfo ("model name" on x86, "Model" on a Raspberry Pi), else platform's."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key.strip(), value.strip())
    return found.get("model name") or found.get("Model") or found.get("Hardware") or platform.processor() or "unknown"


BENCH_COLUMNS = ("model", "precision", "size MB", "runtime", "threads", "delegate", "load ms", "mean ms", "std", "min",
                 "p50", "p90", "p95", "p99", "max", "img/s", "speed vs first", "peak RSS MB", "end-to-end ms")


def bench_row(r: BenchResult) -> tuple:
    """One model's cells of the bench table, in BENCH_COLUMNS order."""
    s = r.latency_ms
    e2e = f"{r.end_to_end.latency_ms.mean:.2f} ({r.end_to_end.images} img)" if r.end_to_end else "-"
    rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
    latency = (s.mean, s.std, s.min, s.p50, s.p90, s.p95, s.p99, s.max)
    return (Path(r.model).name, r.precision, f"{r.file_size_bytes / 1e6:.2f}", r.runtime, r.threads, r.delegate,
            f"{r.load_ms:.1f}", *(f"{value:.2f}" for value in latency), f"{r.throughput_ips:.1f}",
            f"{r.speed_ratio:.2f}x", rss, e2e)


def report_markdown(report: BenchReport) -> str:
    """A Markdown section the site report can include as is."""
    m = report.machine
    lines = [f"### allx-edge bench ({report.created})", "",
             f"Machine: {m.cpu_model}, {m.cores} cores, {m.machine}, {m.os}, Python {m.python}.", "",
             *markdown_table(BENCH_COLUMNS, (bench_row(r) for r in report.results),
                             right={2, 4, *range(6, len(BENCH_COLUMNS))})]
    lines += [""] + [f"TTA, {Path(r.model).name}: predict median {r.tta.single_ms.p50:.2f} ms -> {r.tta.tta_ms.p50:.2f} "
                     f"ms averaged over 8 views ({r.tta.ratio:.2f}x)." for r in report.results if r.tta]
    lines += ["", f"Latency: bare invoke() over {report.results[0].runs} runs after "
              f"{report.results[0].warmup} warm-up runs. Peak RSS is the bench process's own peak so far "
              "(VmHWM on Linux; cumulative over the models before it). "
              "End-to-end: decode + resize + invoke per image, one after another.", ""]
    return "\n".join(lines)
