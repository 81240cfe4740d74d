"""The TF.js layers reader: named tensors back from model.json + shards (folder, model.json, tarball); damage refused."""

import json

import numpy as np
import pytest

from allx.errors import ModelError
from allx.train.tfjs_weights import read_tfjs_weights
from tfjs_files import pack_tarball, write_tfjs


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    return {"conv1/kernel": rng.normal(size=(3, 3, 3, 8)).astype(np.float32),
            "conv1/bias": rng.normal(size=(8,)).astype(np.float32),
            "bn_conv1/gamma": rng.normal(size=(8,)).astype(np.float32),
            "fc1000/kernel": rng.normal(size=(8, 5)).astype(np.float32)}


@pytest.mark.parametrize("form", ["folder", "model.json", "tarball"])
def test_every_tensor_comes_back_named_and_shaped_across_shards(tmp_path, tensors, form):
    folder = write_tfjs(tmp_path / "ResNet50", tensors, shard_bytes=100)  # tensors straddle shard boundaries
    path = {"folder": folder, "model.json": folder / "model.json",
            "tarball": pack_tarball(folder, tmp_path / "model.tgz")}[form]
    weights = read_tfjs_weights(path)
    assert list(weights.tensors) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(weights.tensors[name], array)
    assert len(weights.files) == 1 + len(list(folder.glob("*.bin")))  # model.json and every shard hashed
    assert weights.generated_by == "keras v2.2.4-tf"


def test_truncated_shard_is_refused(tmp_path, tensors):
    folder = write_tfjs(tmp_path / "m", tensors, shard_bytes=100)
    last = sorted(folder.glob("*.bin"))[-1]
    last.write_bytes(last.read_bytes()[:-4])
    with pytest.raises(ModelError, match="truncated"):
        read_tfjs_weights(folder)


def test_extra_bytes_are_refused(tmp_path, tensors):
    folder = write_tfjs(tmp_path / "m", tensors)
    shard = next(folder.glob("*.bin"))
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)
    with pytest.raises(ModelError, match="expected .* for the weights listed"):
        read_tfjs_weights(folder)


def test_missing_shard_and_escaping_path_are_refused(tmp_path, tensors):
    folder = write_tfjs(tmp_path / "m", tensors, shard_bytes=100)
    next(folder.glob("*.bin")).unlink()
    with pytest.raises(ModelError, match="missing shard"):
        read_tfjs_weights(folder)
    model = json.loads((folder / "model.json").read_text())
    model["weightsManifest"][0]["paths"][0] = "../../etc/passwd"
    (folder / "model.json").write_text(json.dumps(model))
    with pytest.raises(ModelError, match="leaves the model folder"):
        read_tfjs_weights(folder)


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG not json", "not JSON"),
    (b'{"modelTopology": {}}', "no weightsManifest"),
    (b'{"format": "graph-model", "weightsManifest": []}', "expected 'layers-model'"),
])
def test_foreign_json_is_refused(tmp_path, content, message):
    (tmp_path / "model.json").write_bytes(content)
    with pytest.raises(ModelError, match=message):
        read_tfjs_weights(tmp_path)


def test_quantized_weights_are_refused(tmp_path, tensors):
    folder = write_tfjs(tmp_path / "m", tensors)
    model = json.loads((folder / "model.json").read_text())
    model["weightsManifest"][0]["weights"][0]["quantization"] = {"dtype": "uint8", "scale": 0.1, "min": 0}
    (folder / "model.json").write_text(json.dumps(model))
    with pytest.raises(ModelError, match="quantized"):
        read_tfjs_weights(folder)


def test_not_a_tarball_is_refused(tmp_path):
    path = tmp_path / "resnet.tgz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(ModelError, match="not a readable tarball"):
        read_tfjs_weights(path)
