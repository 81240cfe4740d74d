"""Loading and saving whole .keras models: one-line errors, round trips, atomic writes."""

import numpy as np
import pytest

from allx.errors import ModelError
from allx.train.layers import PixelNormalization
from allx.train.model_io import load_keras_model, save_keras_model


def tiny_model():
    import keras

    pixels = keras.Input(shape=(16, 16, 3), name="pixels")
    x = PixelNormalization(mean=(103.9, 116.8, 123.7), std=(2.0, 3.0, 4.0), reverse_channels=True)(pixels)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(pixels, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def pixels(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(2, 16, 16, 3)).astype(np.float32)


def test_model_with_preprocessing_layer_round_trips(model, tmp_path):
    path = save_keras_model(model, tmp_path / "run" / "model.keras")
    loaded = load_keras_model(path)
    np.testing.assert_allclose(loaded.predict(pixels(), verbose=0), model.predict(pixels(), verbose=0), rtol=1e-6)
    layer = next(layer for layer in loaded.layers if isinstance(layer, PixelNormalization))
    assert layer.reverse_channels and layer.std == (2.0, 3.0, 4.0)
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["model.keras"]


def test_preprocessing_layer_computes_bgr_minus_mean_over_std():
    layer = PixelNormalization(mean=(10.0, 20.0, 30.0), std=(1.0, 2.0, 5.0), reverse_channels=True)
    rgb = np.array([[[[100.0, 50.0, 200.0]]]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(layer(rgb))[0, 0, 0], [(200 - 10) / 1, (50 - 20) / 2, (100 - 30) / 5],
                               rtol=1e-6)


def test_failure_mid_save_keeps_the_old_file_and_leaves_no_temp(model, tmp_path, monkeypatch):
    import keras

    target = save_keras_model(model, tmp_path / "model.keras")
    before = target.read_bytes()

    def broken_save(self, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_keras_model(model, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_save_refuses_a_non_keras_name(model, tmp_path):
    with pytest.raises(ModelError, match="expected a .keras file name"):
        save_keras_model(model, tmp_path / "model.h5")


def write_half_of_a_model(model, path):
    full = save_keras_model(model, path.with_name("full.keras"))
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path


@pytest.mark.parametrize("case, match", [
    ("missing", "no such model file"),
    ("empty", "empty file"),
    ("garbage", "not a zip archive"),
    ("wrong_suffix", "expected a .keras model file"),
    ("zip_without_config", "missing config.json"),
    ("truncated", "corrupt|not a zip archive|not a loadable"),
    ("directory", "is a directory"),
    ("damaged_weights", "not a loadable Keras model"),
])
def test_bad_model_files_are_one_line_model_errors(model, tmp_path, case, match):
    import zipfile

    path = tmp_path / "model.keras"
    if case == "empty":
        path.touch()
    elif case == "garbage":
        path.write_bytes(b"\x89HDF\r\n this is not a keras archive")
    elif case == "wrong_suffix":
        path = tmp_path / "model.h5"
        path.write_bytes(b"\x89HDF")
    elif case == "zip_without_config":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")
    elif case == "truncated":
        write_half_of_a_model(model, path)
    elif case == "directory":
        path.mkdir()
    elif case == "damaged_weights":
        with zipfile.ZipFile(write_half_of_a_model(model, path).with_name("full.keras")) as full:
            entries = {name: full.read(name) for name in full.namelist()}
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, b"garbage" if name.endswith(".h5") else data)
    with pytest.raises(ModelError, match=match) as caught:
        load_keras_model(path)
    assert "\n" not in str(caught.value)
