"""`allx-edge bench`'s library: models timed side by side, each result describing the model it loaded; its peak
memory is the bench process's own, not its parent's carried over through fork and exec."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_models import tiny_models

from allx.edge_runner.bench import bench_models, high_water_mark_mb, peak_rss_mb, report_markdown
from allx.errors import UsageError
from allx.files import sha256_file

PARENT_MB = 400
RUN_BENCH = "import sys; from allx.entry import allx_edge; sys.argv = ['allx-edge', *sys.argv[1:]]; allx_edge()"


def test_high_water_mark_reads_vmhwm(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t   87040 kB\nVmRSS:\t   80000 kB\n")
    assert high_water_mark_mb(status) == pytest.approx(85.0)
    status.write_text("Name:\tpython\n")
    assert high_water_mark_mb(status) is None
    assert high_water_mark_mb(tmp_path / "absent") is None


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc (VmHWM)")
def test_bench_from_a_large_parent_reports_its_own_peak(tmp_path):
    tiny = tiny_models()
    ballast = np.ones(PARENT_MB * 1024 * 1024, np.uint8)  # touched pages: resident in this process
    assert peak_rss_mb() > PARENT_MB  # the parent's own figure holds the buffer
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-c", RUN_BENCH, "bench", "-m", str(tiny.int8), "--runs", "3",
                             "--warmup", "1", "-t", "1", "--json", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    child_mb = json.loads(out.read_text())["results"][0]["peak_rss_mb"]
    assert 10 < child_mb < PARENT_MB / 2, child_mb  # ru_maxrss would have carried the parent's figure over
    assert ballast.sum() == ballast.size  # keep the buffer alive until the child has run


def test_two_models_side_by_side():
    tiny = tiny_models()
    report = bench_models([tiny.float32, tiny.int8], runs=3, warmup=1, threads=1)
    first, second = report.results
    assert first.speed_ratio == 1.0 and second.speed_ratio > 0 and second.runs == 3
    assert first.model_sha256 == sha256_file(tiny.float32) and first.file_size_bytes == tiny.float32.stat().st_size
    assert (first.precision, second.precision) == ("float32", "int8") and second.threads == 1
    assert report.to_dict()["kind"] == "bench" and tiny.int8.name in report_markdown(report)


@pytest.mark.parametrize("paths, runs, warmup", [([], 3, 1), (["m.tflite"], 0, 1), (["m.tflite"], 3, -1)])
def test_bad_options_are_a_usage_error(paths, runs, warmup):
    with pytest.raises(UsageError, match="expected"):
        bench_models(paths, runs=runs, warmup=warmup)
