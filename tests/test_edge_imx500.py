"""`allx-edge camera --imx500` without the camera: tensor decoding, and a stand-in Picamera2 with its IMX500
helper feeding the same sample, log and quality path as other frames."""

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.edge_runner import imx500
from allx.edge_runner.cli import app
from allx.errors import DataError, MissingDependency, ModelError

LABELS = ("Benign", "Early", "Pre", "Pro")
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
runner = CliRunner()


def test_decoding_gives_the_probabilities_of_the_one_class_output():
    probabilities = imx500.decode_outputs([np.array([[0.1, 0.6, 0.2, 0.1]], np.float32)], 4)
    np.testing.assert_allclose(probabilities, [0.1, 0.6, 0.2, 0.1], atol=1e-6)
    eight_bit = np.array([0.1016, 0.5977, 0.1992, 0.0977])  # a softmax on the chip sums to 1 only roughly
    assert imx500.decode_outputs([eight_bit], 4).sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("outputs, expected", [
    ([np.zeros(5)], "expected one with 4 class probabilities"),
    ([], "expected one with 4 class probabilities"),
    ([np.array([0.5, 0.5, 0.5, 0.5])], "summing to 1"),
    ([np.array([1.2, -0.2, 0.0, 0.0])], "summing to 1"),
])
def test_decoding_refuses_what_is_not_this_models_output(outputs, expected):
    with pytest.raises(ModelError, match=expected):
        imx500.decode_outputs(outputs, 4)


def test_a_packerout_zip_needs_imx500_package(tmp_path, monkeypatch):
    package = tmp_path / "packerOut.zip"
    package.write_bytes(b"PK")
    monkeypatch.setattr(imx500.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependency, match="sudo apt install imx500-tools"):
        imx500.network_file(package)
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"TFL3")
    with pytest.raises(DataError, match="expected .rpk or packerOut.zip"):
        imx500.network_file(tflite)
    rpk = tmp_path / "network.rpk"
    rpk.write_bytes(b"rpk")
    assert imx500.network_file(rpk) == rpk


class FakeCamera:
    """Picamera2 and its IMX500 helper as the Pi has them, with tensors given by the test."""

    frames: list = []

    def __init__(self, outputs):
        self.outputs = list(outputs)
        camera = self

        class IMX500:
            camera_num = 0

            def __init__(self, network):
                camera.network = network

            def get_outputs(self, metadata, add_batch=False):
                assert add_batch
                return metadata["outputs"]

        class Request:
            def __init__(self, frame, outputs):
                self.frame, self.outputs = frame, outputs

            def make_array(self, name):
                return self.frame

            def get_metadata(self):
                return {"outputs": self.outputs}

            def release(self):
                pass

        class Picamera2:
            def __init__(self, number):
                pass

            def create_preview_configuration(self, main):
                return main

            def start(self, config):
                pass

            def stop(self):
                pass

            def capture_request(self):
                if not camera.outputs:
                    raise RuntimeError("camera gone")
                outputs = camera.outputs.pop(0)
                shade = 60 + 10 * len(camera.outputs)
                frame = np.full((48, 64, 3), shade, np.uint8)
                frame[::4] = 200  # some texture: the quality check measures focus
                return Request(frame, outputs)

        self.modules = {"picamera2": types.SimpleNamespace(Picamera2=Picamera2),
                        "picamera2.devices": types.SimpleNamespace(IMX500=IMX500)}

    def install(self, monkeypatch):
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)


def model_folder(tmp_path, status="passed"):
    folder = tmp_path / "imx500"
    folder.mkdir()
    (folder / "packerOut-rpk").mkdir()
    network = folder / "packerOut-rpk" / "network.rpk"
    network.write_bytes(b"stand-in rpk")
    manifest = {"kind": "manifest", "format": "allx-imx500/1", "precision": "imx500", "status": status,
                "labels": list(LABELS), "input": {"shape": [1, 32, 32, 3], "dtype": "uint8", "scale": 1.0,
                                                  "zero_point": 0},
                "check": {"failures": ["overall drop bound 3 pp > 1.5 pp"] if status == "rejected" else []}}
    (folder / "model.json").write_text(json.dumps(manifest))
    return network


def test_camera_imx500_takes_the_sample_and_log_path(tmp_path, monkeypatch):
    network = model_folder(tmp_path)
    tensors = [None, None,  # the network is still loading: these frames carry no output and are skipped
               [np.array([[0.05, 0.85, 0.05, 0.05]])], [np.array([[0.1, 0.7, 0.1, 0.1]])],
               [np.array([[0.9, 0.04, 0.03, 0.03]])]]
    fake = FakeCamera(tensors)
    fake.install(monkeypatch)
    log = tmp_path / "frames.csv"
    outcome = runner.invoke(app, ["camera", "--imx500", str(network), "--headless", "--max-frames", "3",
                                  "--log", str(log), "--sample", "P-7", "--no-log"])
    assert outcome.exit_code == 0, outcome.output
    assert fake.network == str(network)
    rows = list(csv.DictReader(log.open()))
    assert [row["label"] for row in rows] == ["Early", "Early", "Benign"]
    assert float(rows[0]["score"]) == pytest.approx(0.85, abs=1e-6)
    assert {row["model_status"] for row in rows} == {"passed"}
    assert "P-7" in outcome.output and "3 frames" in outcome.output.replace("frames read", "frames")


def test_camera_imx500_refuses_a_rejected_network_and_model_plus_imx500(tmp_path, monkeypatch):
    network = model_folder(tmp_path, "rejected")
    FakeCamera([]).install(monkeypatch)
    outcome = runner.invoke(app, ["camera", "--imx500", str(network), "--headless", "--max-frames", "1"])
    assert outcome.exit_code == 2 and "status rejected" in outcome.output
    outcome = runner.invoke(app, ["camera", "--imx500", str(network), "--model", str(network)])
    assert outcome.exit_code == 2 and "got both --model and --imx500" in outcome.output


def test_picamera2_absent_is_one_clear_error(tmp_path, monkeypatch):
    network = model_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "picamera2", None)
    outcome = runner.invoke(app, ["camera", "--imx500", str(network), "--headless"])
    assert outcome.exit_code == 2 and imx500.APT_INSTALL in outcome.output


def recorded_mct_outputs() -> list[dict]:
    """MCT's exported model's own outputs on check images, with the label the check gave each: recorded by
    benchmarks/imx500.py in the tool environment, which CI does not have."""
    samples = []
    for path in sorted(RESULTS.glob("imx500_*.json")):
        for row in json.loads(path.read_text()).get("results", []):  # imx500_diagnosis.json has none
            samples += row.get("decoding", {}).get("samples", [])
    return samples


def test_camera_decoding_gives_the_mct_models_labels_on_the_same_images(tmp_path):
    samples = recorded_mct_outputs()
    assert len(samples) >= 16, "benchmarks/results/imx500_*.json lost its recorded MCT outputs"
    source = types.SimpleNamespace(outputs=None)
    model = imx500.Imx500Model.load(model_folder(tmp_path), source)
    frame = np.zeros((32, 32, 3), np.uint8)
    for sample in samples:
        stream = np.asarray(sample["outputs"], np.float32)  # as Picamera2 reads the tensor from the metadata
        source.outputs = [np.expand_dims(stream.reshape((len(LABELS),), order="F"), 0)]
        prediction = model.classify(frame)
        assert prediction.label == sample["label"], sample["path"]
        assert prediction.probabilities == pytest.approx(stream / stream.sum(), abs=1e-6)
