"""EdgeModel: the one inference path, on tiny float32 and int8 models, manifests, labels and bad model files."""

import json
import os
import shutil

import numpy as np
import pytest
from edge_models import LABELS, tiny_models

from allx.errors import ImageError, ModelError
from allx.edge_runner.model import EdgeModel


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def reference(tiny):
    data = np.load(tiny.reference)
    return data["pixels"], data["probabilities"]


def convert_folder(tiny, folder, **manifest_fields):
    """A folder shaped like `allx convert` output: model file, labels.txt, model.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny.int8, folder / "model_int8.tflite")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    manifest = {"format": "allx-tflite/1", "model_file": "model_int8.tflite", "precision": "int8",
                "labels": list(LABELS), "input": {"shape": [1, 32, 32, 3], "dtype": "uint8"}}
    manifest.update(manifest_fields)
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def test_float32_model_matches_keras(tiny, reference):
    pixels, expected = reference
    model = EdgeModel.load(tiny.float32)
    probabilities = model.predict(pixels)
    assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_int8_model_dequantizes_close_to_keras(tiny, reference):
    pixels, expected = reference
    model = EdgeModel.load(tiny.int8)
    assert model.input_dtype == np.uint8 and model.input_quantization == (1.0, 0)
    probabilities = model.predict(pixels)
    assert np.abs(probabilities - expected).max() < 0.03
    clear = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 0.05
    np.testing.assert_array_equal(probabilities[clear].argmax(1), expected[clear].argmax(1))


def test_classify_gives_sorted_top_k(tiny, reference):
    pixels, expected = reference
    model = EdgeModel.load(tiny.float32)
    prediction = model.classify(pixels[2], top_k=3)
    assert prediction.label == LABELS[int(expected[2].argmax())]
    assert [label for label, _ in prediction.top_k] == [LABELS[i] for i in np.argsort(-expected[2])[:3]]
    scores = [score for _, score in prediction.top_k]
    assert scores == sorted(scores, reverse=True) and prediction.score == scores[0]
    assert len(prediction.probabilities) == 4 and abs(sum(prediction.probabilities) - 1) < 1e-4
    assert prediction.latency_ms > 0 and prediction.ood is None


def test_load_pixels_uses_model_input_size(tiny, tmp_path):
    from PIL import Image

    Image.new("RGB", (100, 60), (10, 200, 30)).save(tmp_path / "wide.png")
    pixels = EdgeModel.load(tiny.int8).load_pixels(tmp_path / "wide.png")
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


def test_wrong_pixel_shape_is_refused(tiny):
    with pytest.raises(ImageError, match=r"expected \(32, 32, 3\)"):
        EdgeModel.load(tiny.int8).predict(np.zeros((31, 32, 3), np.uint8))


def test_threads_default_to_all_cores(tiny):
    assert EdgeModel.load(tiny.int8).threads == os.cpu_count()
    assert EdgeModel.load(tiny.int8, threads=1).threads == 1
    with pytest.raises(ModelError, match="threads=0"):
        EdgeModel.load(tiny.int8, threads=0)


def test_labels_from_file_beside_list_or_option(tiny, tmp_path):
    shutil.copy(tiny.int8, tmp_path / "m.tflite")
    bare = EdgeModel.load(tmp_path / "m.tflite")
    assert bare.labels == ()
    assert bare.predict(np.zeros((32, 32, 3), np.uint8)).shape == (4,)  # predict needs no labels
    with pytest.raises(ModelError, match="no labels"):
        bare.classify(np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "labels.txt").write_text("a\nb\n\nc\nd\n")
    assert EdgeModel.load(tmp_path / "m.tflite").labels == ("a", "b", "c", "d")
    assert EdgeModel.load(tmp_path / "m.tflite", labels=["w", "x", "y", "z"]).labels == ("w", "x", "y", "z")
    assert EdgeModel.load(tmp_path / "m.tflite", labels=tiny.labels_file).labels == LABELS


def test_label_count_must_match_outputs(tiny, tmp_path):
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="4 class scores, got 3 labels"):
        EdgeModel.load(tiny.int8, labels=tmp_path / "three.txt")
    with pytest.raises(ModelError, match="no such labels file"):
        EdgeModel.load(tiny.int8, labels=tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ModelError, match="empty labels"):
        EdgeModel.load(tiny.int8, labels=tmp_path / "empty.txt")


def test_convert_folder_manifest_and_its_files(tiny, tmp_path):
    folder = convert_folder(tiny, tmp_path / "out", labels=["B", "E", "Pr", "Po"])
    for path in (folder, folder / "model.json", folder / "model_int8.tflite"):
        model = EdgeModel.load(path)
        assert model.labels == ("B", "E", "Pr", "Po")  # the manifest wins over labels.txt
        assert model.manifest.precision == "int8"
        assert model.model_path == folder / "model_int8.tflite"


@pytest.mark.parametrize("text, message", [
    ("{not json", "unreadable manifest"),
    ("[1, 2]", "expected an object"),
    ('{"labels": ["a"]}', "model_file=None"),
    ('{"format": "other/2", "model_file": "model_int8.tflite"}', "format 'other/2'"),
])
def test_bad_manifest(tiny, tmp_path, text, message):
    folder = convert_folder(tiny, tmp_path / "out")
    (folder / "model.json").write_text(text)
    with pytest.raises(ModelError, match=message):
        EdgeModel.load(folder)


def test_manifest_input_must_match_model(tiny, tmp_path):
    folder = convert_folder(tiny, tmp_path / "out", input={"shape": [1, 224, 224, 3]})
    with pytest.raises(ModelError, match="declares input shape"):
        EdgeModel.load(folder)


def test_folder_without_manifest(tiny, tmp_path):
    shutil.copy(tiny.int8, tmp_path / "a.tflite")
    with pytest.raises(ModelError, match=r"without model.json \(found \['a.tflite'\]\)"):
        EdgeModel.load(tmp_path)


def test_probabilities_output_chosen_among_several(tiny, tmp_path):
    model = EdgeModel.load(tiny.two_outputs, labels=list(LABELS))
    assert model.num_classes == 4 and model.embedding_output is None
    shutil.copy(tiny.two_outputs, tmp_path / "unlabelled.tflite")
    with pytest.raises(ModelError, match="cannot tell which of 2 outputs"):
        EdgeModel.load(tmp_path / "unlabelled.tflite")
    names = {int(o["shape"][-1]): o["name"] for o in model.interpreter.get_output_details()}
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(tiny.two_outputs, folder / "m.tflite")
    (folder / "model.json").write_text(json.dumps({
        "model_file": "m.tflite", "labels": list(LABELS),
        "outputs": {"probabilities": {"name": names[4]}, "embedding": {"name": names[8]}}}))
    named = EdgeModel.load(folder)
    named.predict(np.full((32, 32, 3), 120, np.uint8))
    assert named.read_embedding().shape == (8,)
    (folder / "model.json").write_text(json.dumps({
        "model_file": "m.tflite", "labels": list(LABELS), "outputs": {"probabilities": {"name": "nope"}}}))
    with pytest.raises(ModelError, match="names probabilities output 'nope'"):
        EdgeModel.load(folder)


def test_ood_hook_marks_uncertain_results(tiny, tmp_path):
    folder = convert_folder(tiny, tmp_path / "out", ood={"method": "max_softmax", "threshold": 0.5})
    model = EdgeModel.load(folder)
    assert model.has_ood
    flat = model.classify(np.zeros((32, 32, 3), np.uint8))  # the tiny model is unsure here (0.25 each)
    assert flat.ood is True and flat.ood_score == pytest.approx(1 - flat.score)
    convert_folder(tiny, tmp_path / "out", ood={"method": "someday", "threshold": 1.0})
    model = EdgeModel.load(folder)
    assert model.has_ood and model.ood_scorer is None
    assert any("someday" in warning for warning in model.warnings)
    assert model.classify(np.zeros((32, 32, 3), np.uint8)).ood is None


@pytest.mark.parametrize("make, message", [
    (lambda tiny, path: None, "no such model file"),
    (lambda tiny, path: path.write_bytes(b""), "not a TFLite model"),
    (lambda tiny, path: path.write_text("hello, not a model"), "not a TFLite model"),
    (lambda tiny, path: path.write_bytes(tiny.int8.read_bytes()[:1500]), "interpreter refused the model"),
])
def test_bad_model_files(tiny, tmp_path, make, message):
    path = tmp_path / "bad.tflite"
    make(tiny, path)
    with pytest.raises(ModelError, match=message):
        EdgeModel.load(path)


def test_model_whose_input_is_not_an_image(tiny):
    with pytest.raises(ModelError, match=r"not an image tensor, got shape \(1, 10\)"):
        EdgeModel.load(tiny.vector)


def test_replica_shares_the_loaded_model_and_runs_on_its_own_interpreter(tiny, reference, tmp_path):
    folder = convert_folder(tiny, tmp_path / "out", ood={"method": "max_softmax", "threshold": 0.5})
    model = EdgeModel.load(folder, threads=2, tta=True)
    (folder / "model_int8.tflite").unlink()  # a replica is made from the bytes already read, never from the file
    replica = model.replica()
    assert replica.interpreter is not model.interpreter and (replica.threads, model.threads) == (1, 2)
    assert replica.card is model.card and replica.content is model.content and replica.ood_scorer is model.ood_scorer
    assert (replica.labels, replica.tta, replica.sha256) == (model.labels, True, model.sha256)
    pixels, _ = reference
    ours, theirs = replica.classify(pixels[3], top_k=2), model.classify(pixels[3], top_k=2)
    assert ours.probabilities == pytest.approx(theirs.probabilities, abs=1e-6)
    assert (ours.top_k[0][0], ours.ood) == (theirs.top_k[0][0], theirs.ood)
    assert ours.ood_score == pytest.approx(theirs.ood_score, abs=1e-6)
