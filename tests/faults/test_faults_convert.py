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


def wrong_label_run(run_folder, tmp_path):
    """The run's model beside a split.json whose class order is reversed: every label is wrong."""
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(run_folder.model, wrong / "model.keras")
    split = json.loads((run_folder.model.parent / "split.json").read_text())
    split["classes"] = split["classes"][::-1]
    (wrong / "split.json").write_text(json.dumps(split))
    return wrong, split


def test_model_with_every_label_wrong_is_refused_with_exit_3(run_folder, tmp_path):
    wrong, split = wrong_label_run(run_folder, tmp_path)
    (wrong / "labels.txt").write_text("\n".join(split["classes"]) + "\n")
    (wrong / "metrics.json").write_text(json.dumps({"accuracy": 1.0, "n": 24, "classes": split["classes"]}))
    result = convert(wrong / "model.keras", "--out", tmp_path / "out", "--float32")
    assert result.exit_code == 3, result.output
    assert "does not beat chance" in result.output and "recorded in metrics.json" in result.output
    assert (tmp_path / "out" / "model_float32.rejected.tflite").is_file()
    assert not (tmp_path / "out" / "model.json").exists(), "nothing is published as a passed model"


def test_accuracy_control_is_not_tried_for_a_float_model_below_chance(run_folder, tmp_path):
    """No int8 variant can beat the float model it copies: say so instead of spending conversions."""
    wrong, _ = wrong_label_run(run_folder, tmp_path)
    result = convert(wrong / "model.keras", "--out", tmp_path / "out", "--int8", "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert "float model itself does not beat chance" in document["accuracy_control_note"]
    assert not document.get("accuracy_control"), document.get("accuracy_control")


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


def folder_state(out):
    """file name -> bytes of a convert folder (its log aside: every run appends to it)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "convert.log"}


def test_ctrl_c_at_any_moment_leaves_the_old_model_or_the_new_one_whole(run_folder, tmp_path):
    """The real command in a subprocess, a real SIGINT at moments spread over a whole run (the campaign's
    'Ctrl-C at a random moment'): during start-up, conversion, the check, publishing and shutdown. Whatever
    the moment, the exit code is 0 or 130 with one line, and the folder is the old model or the new one, whole."""
    import signal
    import subprocess
    import sys
    import time

    from allx.edge_runner.metadata import read_embedded

    out = tmp_path / "out"
    command = [sys.executable, "-c", "from allx.entry import allx; allx()", "convert", str(run_folder.model),
               "--out", str(out), "--int8"]
    assert convert(run_folder.model, "--out", out, "--int8").exit_code == 0
    old = folder_state(out)
    began = time.monotonic()
    full = subprocess.run([*command, "--target-sensitivity", "0.95"], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    new, duration = folder_state(out), time.monotonic() - began
    assert new != old  # another operating point: the two models can be told apart
    for fraction in (0.1, 0.45, 0.75, 0.9):
        before, settings = (new, "0.99") if fraction in (0.45, 0.9) else (old, "0.95")
        shutil.rmtree(out)
        out.mkdir()
        for name, data in before.items():
            (out / name).write_bytes(data)
        # SIG_DFL in the child: a pytest started in the background hands its children SIGINT ignored.
        process = subprocess.Popen([*command, "--target-sensitivity", settings], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(fraction * duration)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode in (0, 130) and "Traceback" not in stderr, (fraction, process.returncode, stderr)
        if process.returncode == 130:
            assert stderr.endswith("error: interrupted\n"), stderr
        after = folder_state(out)
        assert set(after) == set(before), (fraction, sorted(after))  # no temp or half-named files left
        manifest = json.loads(after["model.json"])
        assert json.loads(after["model_int8.json"]) == manifest
        assert read_embedded(after["model_int8.tflite"], out).manifest == manifest  # model and manifest agree
        assert after == before or after[manifest["model_file"]] != before[manifest["model_file"]], fraction
