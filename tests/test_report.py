"""`allx report`: inputs made by their real writers (edge_runner.bench, convert.check, train.metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.cli.main import app
from allx.layout import SplitKind
from allx.report.inputs import kind_of

LABELS = ("Benign", "Early", "Pre", "Pro")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def bench_json(path: Path, device: str, models: dict[str, list[float]], samples: bool = False) -> Path:
    """An `allx-edge bench --json` file: BenchReport.to_dict() of the given per-model latencies (ms)."""
    from allx.edge_runner.bench import BenchReport, BenchResult, LatencyStats, MachineInfo

    results = []
    for name, latencies in models.items():
        stats = LatencyStats.from_ms(latencies)
        results.append(BenchResult(
            model=f"/models/{name}.tflite", precision=name.split("_")[-1], file_size_bytes=4_200_000,
            input_shape=(1, 224, 224, 3), input_dtype="uint8", runtime="ai-edge-litert 2.3.0", threads=4,
            delegate="cpu", load_ms=35.0, warmup=10, runs=len(latencies), latency_ms=stats,
            throughput_ips=1000.0 / stats.mean, peak_rss_mb=180.0))
    data = BenchReport(MachineInfo(device, 4, "aarch64", "Linux 6.6", "3.11.2"), tuple(results),
                       "2025-01-01T00:00:00+00:00").to_dict()
    for row, latencies in zip(data["results"], models.values()):
        if samples:
            row["samples_ms"] = latencies
        else:  # a file from an older allx-edge: no p95, no raw samples
            del row["latency_ms"]["p95"], row["latency_ms"]["samples"]
    path.write_text(json.dumps(data))
    return path


def check_dict(quantized_errors: int, seed: int = 0) -> dict:
    """CheckReport.to_dict() from convert.check.summarize: 40 val images, int8 wrong on `quantized_errors` of them."""
    from allx.convert.check import CheckPredictions, summarize
    from allx.convert.modes import Thresholds

    truth = np.repeat(np.arange(4), 10)
    float_probs = np.eye(4, dtype=np.float32)[truth] * 0.9 + 0.025
    quant_probs = float_probs.copy()
    wrong = np.random.default_rng(seed).choice(np.flatnonzero(truth != 0), quantized_errors, replace=False)
    quant_probs[wrong] = np.roll(quant_probs[wrong], 1, axis=1)
    predictions = CheckPredictions(tuple(f"x/{i}.jpg" for i in range(40)), truth, float_probs, quant_probs)
    # 40 identical answers bound the agreement at ~0.977 (convert.gate): fidelity is judged on 0.95 here
    report, = [summarize(predictions, LABELS, "int8", "val", Thresholds(min_agreement=0.95), [5.0] * 40, ())]
    return report.to_dict()


def manifest_json(path: Path, quantized_errors: int = 0, model_file: str = "model_int8.tflite") -> Path:
    """A model.json as convert.manifest.build_manifest lays it out (its TensorFlow version lookup left out)."""
    from allx.convert.manifest import FORMAT

    check = check_dict(quantized_errors)
    manifest = {"format": FORMAT, "model_file": model_file, "precision": "int8",
                "status": "passed" if check["passed"] else "rejected", "labels": list(LABELS),
                "origin": {"split": "split.json beside the model", "data": "meta.data_dir of the split"},
                "check": check, "thresholds": check["thresholds"], "created": "2025-01-01T00:00:00+00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def evaluation_json(path: Path, split_kind: str | None = None) -> Path:
    """`allx evaluate --json`: train.metrics.classification_metrics plus the keys evaluate_model adds."""
    from allx.train.metrics import classification_metrics

    truth = np.repeat(np.arange(4), 12)
    probabilities = np.eye(4)[truth] * 0.7 + 0.075
    probabilities[[13, 30]] = np.eye(4)[[0, 1]] * 0.7 + 0.075  # two malignant images called something else
    metrics = classification_metrics(probabilities, truth, LABELS)
    metrics.update(subset="test", model="/runs/r1/model.keras", skipped=[], split_kind=split_kind or SplitKind.NEAR_DUPLICATE.value)
    path.write_text(json.dumps(metrics))
    return path


def run_report(tmp_path: Path, *inputs: Path, markdown: bool = True):
    args = ["report", *map(str, inputs), "--out", str(tmp_path / "out" / "site.html")]
    if markdown:
        args += ["--markdown", str(tmp_path / "out" / "site.md")]
    return runner.invoke(app, args)


def test_full_report_is_self_contained_with_images_numbers_and_markdown_twin(tmp_path):
    bench = bench_json(tmp_path / "pi4.json", "Raspberry Pi 4 Model B", {
        "model_int8": list(np.linspace(40.0, 60.0, 50)), "model_float32": list(np.linspace(150.0, 190.0, 50))})
    manifest, evaluation = manifest_json(tmp_path / "model.json", 1), evaluation_json(tmp_path / "e.json")
    result = run_report(tmp_path, bench, manifest, evaluation)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert 'name="viewport"' in page and "overflow-x:auto" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # latency, per-class float vs int8, confusion matrix
    import base64

    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    data = json.loads(bench.read_text())
    for row in data["results"]:  # p50 and model size of each model, as written in the table
        assert f"{row['latency_ms']['p50']:.1f}" in page
    check = json.loads((tmp_path / "model.json").read_text())["check"]
    assert f"{check['quantized']['accuracy'] * 100:.1f}%" in page and f"{check['agreement'] * 100:.1f}%" in page
    assert "4.2" in page and "Raspberry Pi 4 Model B" in page
    markdown = (tmp_path / "out" / "site.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert len(linked) == 3
    assert all((tmp_path / "out" / name).read_bytes().startswith(PNG_MAGIC) for name in linked)
    assert "| device |" in markdown and "Limits of the evidence" in markdown
    for text in (page, markdown):
        assert "Decision support only" in text and "One hospital" in text
        assert "Split taken from: split.json beside the model" in text
        assert "model.json: not stated" in text  # the check's split kind is unknown, the evaluation's grouped
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_verdict_reflects_speed_and_what_int8_cost(tmp_path):
    slow = bench_json(tmp_path / "pi4.json", "Pi 4", {"model_int8": [100.0] * 40}, samples=True)
    fast = bench_json(tmp_path / "pi5.json", "Pi 5", {"model_int8": [40.0] * 40}, samples=True)
    manifest = manifest_json(tmp_path / "model.json", quantized_errors=0)
    result = run_report(tmp_path, slow, fast, manifest, markdown=False)
    assert result.exit_code == 0, result.output
    verdicts = {line.split(":")[0]: line for line in result.output.splitlines() if line.startswith("Pi ")}
    assert "about 36,000 images per hour at p95 100.0 ms" in verdicts["Pi 4"]  # 3,600,000 / 100 ms
    assert "about 90,000 images per hour at p95 40.0 ms" in verdicts["Pi 5"]
    assert "int8 matches or beats the float model" in verdicts["Pi 4"]
    page = (tmp_path / "out" / "site.html").read_text()
    assert "36,000" in page and "90,000" in page


def test_failed_int8_check_is_a_warning_in_the_verdict(tmp_path):
    check = check_dict(quantized_errors=4)
    assert not check["passed"]
    (tmp_path / "check.json").write_text(json.dumps(check))  # the `allx convert --json` shape
    bench = bench_json(tmp_path / "pi.json", "Pi 4", {"model_int8": [50.0] * 20})
    result = run_report(tmp_path, bench, tmp_path / "check.json", markdown=False)
    assert result.exit_code == 0, result.output
    assert f"int8 FAILED its accuracy check ({-check['drop_pp']:+.1f} pp accuracy" in result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert 'class="warning"' in page and "do not deploy it" in page
    # no p95 or samples in the file: p99 stands in, and the rate is a lower bound
    assert "at least 72,000 images per hour at p95 &lt;= 50.0 ms" in page


def test_each_benchmarked_model_is_paired_with_its_own_check(tmp_path):
    manifest_json(tmp_path / "a" / "model.json", 0, "a_int8.tflite")
    manifest_json(tmp_path / "b" / "model.json", 4, "b_int8.tflite")
    bench = bench_json(tmp_path / "pi.json", "Pi 4", {"a_int8": [20.0] * 10, "b_int8": [25.0] * 10})
    result = run_report(tmp_path, bench, tmp_path / "a", tmp_path / "b", markdown=False)  # convert OUT_DIRs
    assert result.exit_code == 0, result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("Pi 4:"))
    first, second = verdict.split("b_int8.tflite (", 1)
    assert "int8 matches or beats" in first and "FAILED" not in first
    assert "int8 FAILED its accuracy check" in second


def test_bench_only_report_says_accuracy_is_missing(tmp_path):
    bench = bench_json(tmp_path / "pi.json", "Pi 4", {"model_int8": [30.0, 31.0, 35.0]})
    result = run_report(tmp_path, bench)
    assert result.exit_code == 0, result.output
    for text in ((tmp_path / "out" / "site.html").read_text(), (tmp_path / "out" / "site.md").read_text()):
        assert "No accuracy file was given" in text
        assert "Float vs int8" not in text and "Confusion matrix" not in text
    assert len(list((tmp_path / "out").glob("site_*.png"))) == 1


def test_accuracy_only_report_says_speed_is_missing_and_states_the_split(tmp_path):
    grouped = evaluation_json(tmp_path / "grouped.json")
    image_level = evaluation_json(tmp_path / "plain.json", "image-level (split without near-duplicate grouping)")
    result = run_report(tmp_path, grouped, markdown=False)
    page = (tmp_path / "out" / "site.html").read_text()
    assert result.exit_code == 0 and "No device benchmark was given" in page
    assert "the split kept near-duplicate images together" in page and "Image-level evaluation" not in page
    assert "No conversion check was given" in page
    metrics = json.loads(grouped.read_text())
    assert f"{metrics['malignant_sensitivity'] * 100:.1f}%" in page
    run_report(tmp_path, image_level, markdown=False)
    page = (tmp_path / "out" / "site.html").read_text()
    assert "near-duplicates were not kept together" in page and "Image-level evaluation" in page


def test_benchmark_script_results_get_a_table(tmp_path):
    script = {"benchmark": "training_speed", "date": "2025-01-01", "epochs": 10, "cached_s": 12.5, "naive_s": 80.25,
              "speedup": 6.42, "machine": {"cpu": "x86_64", "python": "3.12"},
              "rows": [{"precision": "int8", "p50_ms": 4.5}, {"precision": "float32", "p50_ms": 15.0}]}
    (tmp_path / "speed.json").write_text(json.dumps(script))
    result = run_report(tmp_path, tmp_path / "speed.json")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert "training_speed" in page and "6.42" in page and "machine.cpu" in page and "float32" in page


def test_unusable_files_are_named_in_one_line_with_exit_2(tmp_path):
    good = bench_json(tmp_path / "good.json", "Pi 4", {"model_int8": [30.0] * 5})
    (tmp_path / "broken.json").write_text('{"machine": {"cpu_model"')
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "unchecked.json").write_text(json.dumps({"format": "allx-tflite/1", "model_file": "m.tflite"}))
    bad_field = json.loads(good.read_text())
    bad_field["results"][0]["latency_ms"]["p50"] = "fast"
    (tmp_path / "field.json").write_text(json.dumps(bad_field))
    bad = ("broken.json", "other.json", "field.json", "absent.json", "unchecked.json")
    result = run_report(tmp_path, good, *(tmp_path / name for name in bad))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5 input files are unusable")
    for name in bad:
        assert name in lines[0]
    assert "latency_ms.p50" in lines[0] and "without an accuracy check" in lines[0] and "good.json" not in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "out" / "site.html").exists()


def test_unwritable_output_is_one_error_line(tmp_path):
    bench = bench_json(tmp_path / "pi.json", "Pi 4", {"model_int8": [30.0] * 5})
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["report", str(bench), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "taken" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("data, kind", [
    ({"benchmark": "x", "machine": {}, "results": []}, "benchmark"),
    ({"machine": {}, "results": []}, "bench"),
    ({"format": "allx-tflite/1", "check": {"passed": 1, "float": 1, "quantized": 1, "agreement": 1, "per_class": 1}},
     "check"),
    ({"passed": 1, "float": 1, "quantized": 1, "agreement": 1, "per_class": 1}, "check"),
    ({"accuracy": 1, "per_class": {}, "confusion_matrix": [], "classes": []}, "evaluation"),
    ({"format": "allx-tflite/1"}, None),  # a manifest of an unchecked model has nothing to report
    ({"accuracy": 0.9}, None),
])
def test_kind_is_told_by_keys(data, kind):
    assert kind_of(data) == kind


def test_text_from_a_site_file_is_escaped_not_run(tmp_path):
    name = 'Pi | <script>alert(1)</script><img src="http://x/y.png">'
    bench = bench_json(tmp_path / "pi.json", name, {"m_int8": [9.0] * 5})
    result = run_report(tmp_path, bench)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert "<script>" not in page and 'src="http://' not in page and "&lt;script&gt;" in page
    markdown = (tmp_path / "out" / "site.md").read_text()
    assert "| Pi \\| \\<script>" in markdown  # the pipe does not split the row, the tag is text


def test_rates_round_to_two_figures_and_lower_bounds_round_down():
    from allx.text import about, wilson_interval

    assert about(97_297) == "97,000" and about(36_000) == "36,000" and about(49_875, down=True) == "49,000"
    low, high = wilson_interval(1.0, 40)  # 40 of 40 right still leaves room below 100%
    assert 0.90 < low < 0.92 and high == 1.0
    low, high = wilson_interval(0.5, 100)
    assert low < 0.5 < high and abs((0.5 - low) - (high - 0.5)) < 1e-9


def test_operating_points_of_convert_and_evaluate_are_reported(tmp_path):
    manifest = manifest_json(tmp_path / "model.json")
    data = json.loads(manifest.read_text())
    data["operating_point"] = {"threshold": 0.1234, "target_sensitivity": 0.99, "sensitivity": 0.995,
                               "specificity": 0.9612, "n_malignant": 400, "n_benign": 80, "chosen_on": "val"}
    data["sample_rule"] = {"threshold": 0.2, "samples": 96, "chosen_on": "val pseudo-samples of 5 consecutive fields",
                           "sensitivity": 1.0, "specificity": 0.9875, "inconclusive": 0.0208}
    manifest.write_text(json.dumps(data))
    evaluation = evaluation_json(tmp_path / "e.json")
    metrics = json.loads(evaluation.read_text())
    metrics["at_operating_point"] = {"threshold": 0.1, "target_sensitivity": 0.99, "chosen_on": "val",
                                     "subset": "test", "subset_sensitivity": 0.9833, "subset_specificity": 0.9444}
    evaluation.write_text(json.dumps(metrics))
    result = run_report(tmp_path, manifest, evaluation)
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "site.md").read_text()
    assert "single field (1 - p(Benign) >= 0.1234)" in markdown and "96.1%" in markdown and "98.8%" in markdown
    assert "at the val-chosen point for sensitivity >= 0.99" in markdown and "94.4%" in markdown


def test_a_cv_run_folder_renders_folds_mean_interval_grouping_and_plot(cv_run, tmp_path):
    outcome, run, _ = cv_run
    assert outcome.exit_code == 0, outcome.output
    document = json.loads((run / "cv.json").read_text())
    result = run_report(tmp_path, run)
    assert result.exit_code == 0, result.output
    page, markdown = (tmp_path / "out" / "site.html").read_text(), (tmp_path / "out" / "site.md").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    import base64

    assert (run / "cv.png").read_bytes() in [base64.b64decode(image) for image in images]
    assert re.search(r"!\[[^\]]*\]\(site_cv_1\.png\)", markdown)
    for text in (page, markdown):
        assert "Cross-validation: efficientnet-lite0, 3 folds" in text and "No accuracy file" not in text
        assert SplitKind.SEQUENCE.words in text and f'split_kind "{SplitKind.SEQUENCE.value}"' in text.replace("&quot;", '"')
        for name in ("accuracy", "malignant_sensitivity", "benign_specificity", "recall_Benign", "recall_Pro"):
            entry = document["summary"][name]
            assert f"{entry['mean'] * 100:.1f}% ({entry['low'] * 100:.1f}-{entry['high'] * 100:.1f}%)" in text, name
            for value in entry["folds"]:
                assert f"{value * 100:.1f}%" in text
        assert "recall Benign" in text and "worst fold" in text and "training augmentation: dihedral" in text


def test_an_interrupted_cv_is_a_warning_and_a_folder_without_records_is_named(cv_run, tmp_path):
    _, run, _ = cv_run
    document = json.loads((run / "cv.json").read_text())
    document.update(folds_done=1, complete=False, results=document["results"][:1])
    (tmp_path / "cv.json").write_text(json.dumps(document))
    result = run_report(tmp_path, tmp_path / "cv.json")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert "Interrupted: only 1 of 3 folds finished" in page and "No cv.png beside cv.json" in page
    (tmp_path / "empty").mkdir()
    result = run_report(tmp_path, tmp_path / "empty")
    assert result.exit_code == 2 and "without model.json, cv.json or metrics.json" in result.output


def test_an_audit_log_adds_the_monitor_chart_and_table_with_limits_from_the_model_given(tmp_path):
    from monitor_logs import write_log

    manifest = manifest_json(tmp_path / "model" / "model.json", 1)  # its check: 1 - accuracy is the override rate
    write_log(tmp_path / "audit.db", good=6, review="Benign")  # every sample's answer overridden
    result = run_report(tmp_path, tmp_path / "audit.db", manifest.parent)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "site.html").read_text()
    assert "Drift monitor (audit.db)" in page and page.count("<svg") == 1 and "circle" in page
    assert "Monitor alarm in the latest window" in page and "100.0% (6/6) ALARM" in page
    assert "model.json check: 1 - accuracy per image on 40 val images" in page
    markdown = (tmp_path / "out" / "site.md").read_text()
    drawing, = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", markdown)
    assert (tmp_path / "out" / drawing).read_text().startswith("<svg")
    alone = run_report(tmp_path, tmp_path / "audit.db", markdown=False)  # no model: rates, no limits
    assert alone.exit_code == 0 and "no limits, no alarms" in (tmp_path / "out" / "site.html").read_text()
