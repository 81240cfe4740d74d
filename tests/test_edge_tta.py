"""`allx-edge classify|camera|bench --tta`: the probabilities averaged over the 8 dihedral views, on the device path."""

import json

import numpy as np
import pytest
from edge_models import LABELS, SIZE, convert_float32, reference_pixels, tiny_models
from PIL import Image
from typer.testing import CliRunner

from allx.dihedral import dihedral_views
from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def symmetric_tflite(tmp_path_factory):
    """A model that sees only each channel's mean pixel: blind to rotations and mirrors."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="float32")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1.0 / 255.0)(inputs))
    outputs = keras.layers.Dense(len(LABELS), activation="softmax",
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=8.0, seed=1))(pooled)
    path = tmp_path_factory.mktemp("symmetric") / "symmetric.tflite"
    path.write_bytes(convert_float32(keras.Model(inputs, outputs)))
    (path.parent / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path


def test_tta_of_a_symmetric_model_equals_no_tta(symmetric_tflite):
    plain, averaged = EdgeModel.load(symmetric_tflite), EdgeModel.load(symmetric_tflite, tta=True)
    for pixels in reference_pixels():
        assert np.allclose(averaged.predict(pixels), plain.predict(pixels), atol=1e-5)
        assert averaged.classify(pixels).label == plain.classify(pixels).label


def test_tta_is_the_mean_over_the_eight_views(tiny):
    plain, averaged = EdgeModel.load(tiny.float32), EdgeModel.load(tiny.float32, tta=True)
    pixels = reference_pixels()[-1]  # noise: every view looks different to the model
    views = np.stack([plain.predict(view) for view in dihedral_views(pixels)])
    assert not np.allclose(views[0], views[1], atol=1e-4), "the tiny model is not rotation-blind"
    assert np.allclose(averaged.predict(pixels), views.mean(axis=0), atol=1e-6)
    prediction = averaged.classify(pixels, top_k=4)
    assert np.allclose(prediction.probabilities, views.mean(axis=0), atol=1e-6)


def test_classify_command_with_tta(tiny, tmp_path):
    image = tmp_path / "noise.png"
    Image.fromarray(reference_pixels()[-1]).save(image)
    plain = runner.invoke(app, ["classify", str(image), "-m", str(tiny.float32), "--json", "--top-k", "4"])
    averaged = runner.invoke(app, ["classify", str(image), "-m", str(tiny.float32), "--json", "--top-k", "4", "--tta"])
    assert plain.exit_code == 0 and averaged.exit_code == 0, averaged.output
    expected = EdgeModel.load(tiny.float32, tta=True).predict(EdgeModel.load(tiny.float32).load_pixels(image))
    record = json.loads(averaged.stdout.strip().splitlines()[0])
    scores = {entry["label"]: entry["score"] for entry in record["top_k"]}
    assert [scores[label] for label in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    assert record["top_k"] != json.loads(plain.stdout.strip().splitlines()[0])["top_k"]


def test_bench_reports_the_cost_of_tta(tiny, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "-m", str(tiny.float32), "--runs", "16", "--warmup", "1", "--tta",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "TTA cost" in result.stdout
    tta = json.loads(out.read_text())["results"][0]["tta"]
    assert len(tta["single_ms"]["samples"]) == len(tta["tta_ms"]["samples"]) == 2
    assert tta["ratio"] == pytest.approx(tta["tta_ms"]["p50"] / tta["single_ms"]["p50"])
    plain = runner.invoke(app, ["bench", "-m", str(tiny.float32), "--runs", "2", "--warmup", "0", "--json",
                                str(tmp_path / "plain.json")])
    assert json.loads((tmp_path / "plain.json").read_text())["results"][0]["tta"] is None


def test_camera_with_tta_on_a_video_file(tiny, tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (SIZE, SIZE))
    for pixels in reference_pixels()[:3]:
        writer.write(np.ascontiguousarray(pixels[:, :, ::-1]))
    writer.release()
    result = runner.invoke(app, ["camera", "-m", str(tiny.float32), "--source", str(video), "--headless", "--tta"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("frame ") == 3
