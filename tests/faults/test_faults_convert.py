"""`allx convert` refuses a model that is wrong everywhere: absolute sanity beside the float-vs-int8 gate."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from convert_models import CLASSES, make_run_folder
from typer.testing import CliRunner

from allx.cli.main import app
from allx.convert.sanity import RecordedMetrics, chance_failures, record_failures

runner = CliRunner()


def report(float_accuracy, quantized_accuracy, images=40, labels=CLASSES):
    return SimpleNamespace(float=SimpleNamespace(accuracy=float_accuracy),
                           quantized=SimpleNamespace(accuracy=quantized_accuracy), precision="int8",
                           subset="val", images=images, labels=tuple(labels))


def test_zero_accuracy_with_zero_drop_fails_the_chance_check():
    truth = np.repeat(np.arange(4), 10)
    failures = chance_failures(report(0.0, 0.0), truth)
    assert len(failures) == 2 and all("does not beat chance" in f for f in failures)
    assert chance_failures(report(0.9, 0.875), truth) == []


def test_chance_is_the_most_common_class_not_one_over_k():
    truth = np.array([0] * 36 + [1, 2, 3, 3])  # always "Benign" already scores 90%
    assert chance_failures(report(0.9, 0.9), truth)


def test_recorded_metrics_must_agree_within_noise():
    assert record_failures(report(0.85, 0.84), RecordedMetrics(0.9, 100, CLASSES)) == []
    failures = record_failures(report(0.0, 0.0), RecordedMetrics(1.0, 24, CLASSES))
    assert len(failures) == 2 and "recorded in metrics.json" in failures[0]
    swapped = record_failures(report(0.9, 0.9), RecordedMetrics(0.9, 100, CLASSES[::-1]))
    assert any("same names in the same order" in f for f in swapped)


@pytest.fixture(scope="module")
def run_folder(synthetic_dir, tmp_path_factory):
    return make_run_folder(synthetic_dir, tmp_path_factory.mktemp("faults-convert"))


def convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_model_with_every_label_wrong_is_refused_with_exit_3(run_folder, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(run_folder.model, wrong / "model.keras")
    split = json.loads((run_folder.model.parent / "split.json").read_text())
    split["classes"] = split["classes"][::-1]
    (wrong / "split.json").write_text(json.dumps(split))
    (wrong / "labels.txt").write_text("\n".join(split["classes"]) + "\n")
    (wrong / "metrics.json").write_text(json.dumps({"accuracy": 1.0, "n": 24, "classes": split["classes"]}))
    result = convert(wrong / "model.keras", "--out", tmp_path / "out", "--float32")
    assert result.exit_code == 3, result.output
    assert "does not beat chance" in result.output and "recorded in metrics.json" in result.output
    assert (tmp_path / "out" / "model_float32.rejected.tflite").is_file()
    assert not (tmp_path / "out" / "model.json").exists(), "nothing is published as a passed model"


def test_a_sound_model_with_its_metrics_passes(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder.model.parent, run)
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "n": 24, "classes": list(CLASSES)}))
    result = convert(run / "model.keras", "--out", tmp_path / "out", "--float32")
    assert result.exit_code == 0, result.output


def test_a_damaged_metrics_json_is_exit_2(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder.model.parent, run)
    (run / "metrics.json").write_text('{"accuracy": "high", "n": 24}')
    result = convert(run / "model.keras", "--out", tmp_path / "out", "--float32")
    assert result.exit_code == 2 and "field accuracy" in result.output, result.output


def test_disk_full_while_publishing_is_exit_2_and_the_good_model_stays_whole(run_folder, tmp_path, monkeypatch):
    """ENOSPC at the manifest (the campaign filled a tmpfs): exit 2, and the model that passed before keeps
    its own out-of-distribution statistics (no new ood_stats_*.npz beside the old manifest)."""
    import errno

    import allx.files

    out = tmp_path / "out"
    first = convert(run_folder.layout, "--out", out, "--float32", "--max-drop", "10", "--max-class-drop", "40",
                    "--min-agreement", "0.85")
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "model.json").read_text())
    (out / manifest["ood"]["stats_file"]).write_bytes(b"the statistics of the model that passed before")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "convert.log"}
    replace_with = allx.files.replace_with

    def disk_full_at_manifest(temp, target):
        if target.name == "model.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        replace_with(temp, target)

    monkeypatch.setattr(allx.files, "replace_with", disk_full_at_manifest)
    again = convert(run_folder.layout, "--out", out, "--float32", "--max-drop", "10", "--max-class-drop", "40",
                    "--min-agreement", "0.85")
    assert again.exit_code == 2 and "No space left on device" in again.output, again.output
    assert "Traceback" not in again.output
    assert (out / manifest["ood"]["stats_file"]).read_bytes() == before[manifest["ood"]["stats_file"]]
    assert (out / "model.json").read_bytes() == before["model.json"]
