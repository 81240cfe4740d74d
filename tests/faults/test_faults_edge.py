"""allx-edge: rejected models, damaged manifests, absurd thresholds, FIFOs, camera exit codes and --log paths."""

import csv
import json
import os
import shutil
import threading

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from typer.testing import CliRunner

import allx.edge_runner.camera as edge_camera
from allx.edge_runner.camera import CameraSummary
from allx.edge_runner.cli import app
from allx.edge_runner.status import NOTE

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "smear.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def model_folder(tiny, tmp_path, **manifest):
    folder = tmp_path / "conv"
    folder.mkdir(exist_ok=True)
    shutil.copy(tiny.int8, folder / "model_int8.tflite")
    document = {"format": "allx-tflite/1", "model_file": "model_int8.tflite", "labels": list(LABELS), **manifest}
    (folder / "model.json").write_text(json.dumps(document))
    return folder


def rejected_model(tiny, tmp_path):
    folder = tmp_path / "conv"
    folder.mkdir()
    shutil.copy(tiny.int8, folder / "model_int8.rejected.tflite")
    (folder / "model_int8.rejected.json").write_text(json.dumps({
        "format": "allx-tflite/1", "model_file": "model_int8.rejected.tflite", "labels": list(LABELS),
        "status": "rejected", "check": {"passed": False, "failures": ["float accuracy 0% does not beat chance"]}}))
    return folder / "model_int8.rejected.tflite"


def test_rejected_model_is_refused_by_classify_camera_and_bench(tiny, image, tmp_path):
    model = rejected_model(tiny, tmp_path)
    for args in (("classify", image, "-m", model), ("camera", "-m", model, "--headless"),
                 ("bench", "-m", model, "--runs", "1", "--warmup", "0")):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "status rejected" in result.stderr and "--allow-rejected" in result.stderr
        assert "does not beat chance" in result.stderr


def test_allowed_rejected_model_says_so_in_every_result(tiny, image, tmp_path):
    model = rejected_model(tiny, tmp_path)
    lines = invoke("classify", image, image.parent, "-m", model, "--allow-rejected", "--json",
                   "--csv", tmp_path / "out.csv")
    assert lines.exit_code == 0, lines.output
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert records and all(record["model_status"] == "rejected" for record in records)
    assert all(row["model_status"] == "rejected" for row in csv.DictReader(open(tmp_path / "out.csv")))
    table = invoke("classify", image, "-m", model, "--allow-rejected")
    assert table.exit_code == 0 and all(NOTE in line for line in table.stdout.splitlines()[1:] if line.strip())
    bench = invoke("bench", "-m", model, "--allow-rejected", "--runs", "2", "--warmup", "0",
                   "--json", tmp_path / "bench.json")
    assert bench.exit_code == 0 and NOTE in bench.stdout
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["model_status"] == "rejected"


def lone_rejected_copy(tiny, tmp_path):
    """What `allx convert` embeds in model_int8.rejected.tflite, copied alone under a plain name."""
    from allx.edge_runner.metadata import embed_metadata

    manifest = {"format": "allx-tflite/1", "model_file": "model_int8.rejected.tflite", "labels": list(LABELS),
                "status": "rejected", "check": {"passed": False, "failures": ["int8 accuracy drop 9 pp"]}}
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "only.tflite").write_bytes(embed_metadata(tiny.int8.read_bytes(), manifest, {}))
    return folder / "only.tflite"


def test_a_rejected_tflite_copied_alone_is_refused_everywhere(tiny, image, tmp_path):
    model = lone_rejected_copy(tiny, tmp_path)
    for args in (("classify", image, "-m", model), ("bench", "-m", model, "--runs", "1", "--warmup", "0"),
                 ("serve", "-m", model, "--log-db", tmp_path / "log.db", "--camera", "none")):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "status rejected" in result.stderr and "int8 accuracy drop 9 pp" in result.stderr
    allowed = invoke("classify", image, "-m", model, "--allow-rejected", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout.splitlines()[0])["model_status"] == "rejected"
    assert NOTE in allowed.stderr


def test_the_embedded_status_wins_over_a_passed_model_json_beside_it(tiny, image, tmp_path):
    """A rejected .tflite dropped into a passed model's folder under the passed name still refuses."""
    from allx.edge_runner.model import EdgeModel

    model = lone_rejected_copy(tiny, tmp_path)
    folder = model_folder(tiny, tmp_path, status="passed")
    shutil.copy(model, folder / "model_int8.tflite")
    result = invoke("classify", image, "-m", folder)
    assert result.exit_code == 2 and "status rejected" in result.stderr, result.output
    loaded = EdgeModel.load(folder, allow_rejected=True)
    assert loaded.rejected and loaded.card.source == "embedded"


@pytest.mark.parametrize("manifest, message", [
    ({"input": "224x224"}, "field input is str"),
    ({"labels": "Benign"}, "field labels is str"),
    ({"status": 1}, "field status is int"),
    ({"ood": {"method": "max_softmax", "threshold": 1e308}}, "field ood.threshold"),
    ({"ood": {"method": "max_softmax", "threshold": -0.5}}, "field ood.threshold"),
    ({"ood": {"method": "mahalanobis", "threshold": 3, "stats_file": "../../etc/passwd"}}, "field ood.stats_file"),
    ({"input": {"shape": [1, 32, 32]}}, "field input.shape"),
    ({"sample_rule": {"min_fields": "3"}}, "field sample_rule.min_fields"),
    ({"sample_rule": {"threshold": 2}}, "field sample_rule.threshold"),
    ({"operating_point": {"threshold": 0.4, "sensitivity": "high"}}, "field operating_point.sensitivity"),
    ({"operating_point": {"threshold": 1.5}}, "field operating_point.threshold"),
    ({"quality": {"focus_min": "sharp"}}, "field quality.focus_min"),
    ({"quality": {"colour_mean": [120, 80]}}, "field quality.colour_mean"),
    ({"ood": {"method": "max_softmax", "threshold": 0.5, "flag_rate": "5%"}}, "field ood.flag_rate"),
    ({"check": {"failures": "too many"}}, "field check.failures"),
    ({"check": {"quantized": [0.9]}}, "field check.quantized"),
    ({"model_file": "../../tiny_int8.tflite"}, "field model_file"),
    ({"model_file": "/etc/passwd"}, "field model_file"),
    ({"labels": ["Benign", "Benign", "Pre", "Pro"]}, "Benign named twice"),
    ({"labels": ["Benign", " ", "Pre", "Pro"]}, "label 2 is blank"),
])
def test_wrong_manifest_fields_are_one_line_exit_2(tiny, image, tmp_path, manifest, message):
    folder = model_folder(tiny, tmp_path, **manifest)
    result = invoke("classify", image, "-m", folder)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_manifest_is_read_into_typed_fields(tiny, tmp_path):
    """One check where model.json arrives; everything after reads typed fields, not the raw JSON."""
    from allx.decision import OperatingPoint, SampleRule
    from allx.edge_runner.model import EdgeModel
    from allx.edge_runner.quality import QualityLimits

    folder = model_folder(tiny, tmp_path, status="passed", operating_point={"threshold": 0.3, "n_benign": 5},
                          sample_rule={"min_fields": 4}, quality={"focus_min": 2, "colour_mean": [1, 2, 3]},
                          ood={"method": "max_softmax", "threshold": 0.4, "flag_rate": 0.05},
                          check={"failures": [], "quantized": {"accuracy": 0.9}})
    manifest = EdgeModel.load(folder).manifest
    assert manifest.labels == tuple(LABELS) and manifest.model_file == "model_int8.tflite"
    assert manifest.operating_point == OperatingPoint(threshold=0.3, n_benign=5)
    assert manifest.sample_rule == SampleRule(min_fields=4)
    assert isinstance(manifest.quality, QualityLimits) and manifest.quality.colour_mean == (1.0, 2.0, 3.0)
    assert (manifest.ood.method, manifest.ood.threshold, manifest.ood.flag_rate) == ("max_softmax", 0.4, 0.05)
    assert not manifest.rejected and manifest.document["status"] == "passed"


@pytest.mark.parametrize("manifest, message", [
    ({"labels": 5}, "field labels is int"),
    ({"operating_point": {"threshold": "low"}}, "field operating_point.threshold"),
])
def test_embedded_manifest_is_checked_like_model_json(tiny, image, tmp_path, manifest, message):
    """A lone .tflite carries its manifest; the same field checks apply to that copy."""
    from allx.edge_runner.metadata import MANIFEST_ENTRY, embed_entries

    document = {"format": "allx-tflite/1", "labels": list(LABELS), **manifest}
    model = tmp_path / "lone.tflite"
    model.write_bytes(embed_entries(tiny.int8.read_bytes(), {MANIFEST_ENTRY: json.dumps(document).encode()}))
    for command in (("classify", image, "-m", model), ("info", model)):
        result = invoke(*command)
        assert result.exit_code == 2 and message in result.stderr and "embedded metadata" in result.stderr, \
            result.output


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
    ('{"model_file": "model_int8.tflite", "precision": ' + "9" * 5000 + "}", "integer of 5000 digits"),
    ('{"model_file": "model_int8.tflite", "ood": {"method": "max_softmax", "threshold": NaN}}', "got NaN"),
])
def test_hostile_manifest_json_is_one_line_exit_2(tiny, image, tmp_path, text, message):
    folder = model_folder(tiny, tmp_path)
    (folder / "model.json").write_text(text)
    result = invoke("classify", image, "-m", folder)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_a_fifo_named_jpg_fails_at_once_instead_of_hanging(tiny, image, tmp_path):
    fifo = tmp_path / "smear.jpg"
    os.mkfifo(fifo)
    shutil.copy(image, tmp_path / "good.png")
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=runner.invoke(
        app, ["classify", str(fifo), str(tmp_path / "good.png"), "-m", str(tiny.int8), "--json"])))
    worker.daemon = True
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        with open(fifo, "wb"):  # release the reader so the test process can end
            pass
        pytest.fail("classify hung on a FIFO")
    result = outcome["result"]
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert any("not a regular file" in record.get("error", "") for record in records)


def test_a_fifo_as_model_or_labels_fails_at_once(tiny, image, tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    labels = tmp_path / "labels.fifo"
    os.mkfifo(labels)
    outcome = {}

    def run():
        outcome["model"] = runner.invoke(app, ["classify", str(image), "-m", str(fifo)])
        outcome["labels"] = runner.invoke(app, ["classify", str(image), "-m", str(tiny.int8), "--labels", str(labels)])

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        for path in (fifo, labels):  # release a blocked reader so the test process can end
            with open(path, "wb"):
                pass
        pytest.fail("classify hung on a FIFO given as --model or --labels")
    for result in outcome.values():
        assert result.exit_code == 2 and "not a regular file" in result.stderr, result.output


def test_repeated_labels_in_a_labels_file_are_refused(tiny, image, tmp_path):
    (tmp_path / "labels.txt").write_text("Benign\nEarly\nBenign\nPro\n")
    result = invoke("classify", image, "-m", tiny.int8, "--labels", tmp_path / "labels.txt")
    assert result.exit_code == 2 and "Benign named twice" in result.stderr, result.output


def summary(ended_by):
    return CameraSummary("0", 3, 3, 0, 1.0, 1.0, 10.0, 0.3, ended_by)


def test_camera_ctrl_c_exits_130_after_its_summary(tiny, monkeypatch):
    monkeypatch.setattr(edge_camera, "run_camera", lambda *a, **k: summary("interrupted"))
    result = invoke("camera", "-m", tiny.int8, "--headless")
    assert result.exit_code == 130 and "interrupted: 3 frames read" in result.stdout
    monkeypatch.setattr(edge_camera, "run_camera", lambda *a, **k: summary("source ended"))
    assert invoke("camera", "-m", tiny.int8, "--headless").exit_code == 0


def clip(tmp_path, frames: int):
    """A short MJPG video of flat grey frames (OpenCV writes and reads it)."""
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(frames):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    return video


def test_camera_log_pointing_at_a_folder_is_exit_2(tiny, tmp_path):
    video = clip(tmp_path, 3)
    result = invoke("camera", "-m", tiny.int8, "--headless", "--source", video, "--log", tmp_path)
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_classify_csv_to_dev_full_is_exit_2_and_the_device_stays(tiny, image):
    import stat

    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is absent on this machine")
    result = invoke("classify", image, "-m", tiny.int8, "--csv", "/dev/full")
    assert result.exit_code == 2 and "No space left on device" in result.stderr
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_two_camera_sessions_on_one_log_keep_both_sessions_rows(tiny, tmp_path):
    """The campaign lost the shorter of two sessions given the same --log; now both append."""
    video = clip(tmp_path, 5)
    log = tmp_path / "frames.csv"
    for frames in ("5", "2"):
        result = invoke("camera", "-m", tiny.int8, "--headless", "--source", video, "--log", log,
                        "--max-frames", frames)
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(log)))
    sessions = list(dict.fromkeys(row["session"] for row in rows))
    assert len(rows) == 7 and len(sessions) == 2
    assert [int(r["frame"]) for r in rows if r["session"] == sessions[1]] == [1, 2]
