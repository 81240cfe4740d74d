"""`allx-edge bench`'s library: models timed side by side, each result describing the model it loaded."""

import pytest
from edge_models import tiny_models

from allx.edge_runner.bench import bench_models, report_markdown
from allx.errors import UsageError
from allx.files import sha256_file


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
