"""`allx convert` refuses a model that is wrong everywhere: absolute sanity beside the float-vs-int8 gate."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from convert_models import CLASSES, make_run_folder
from typer.testing import CliRunner

from allx.cli.main import app
from allx.convert.sanity import chance_failures, record_failures

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
    assert record_failures(report(0.85, 0.84), (0.9, 100, CLASSES)) == []
    failures = record_failures(report(0.0, 0.0), (1.0, 24, CLASSES))
    assert len(failures) == 2 and "recorded in metrics.json" in failures[0]
    swapped = record_failures(report(0.9, 0.9), (0.9, 100, CLASSES[::-1]))
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
