"""train/layers.py: the in-model colour standardisation (per image, per channel) and its int8 conversion."""

import keras
import numpy as np
import pytest

from allx.errors import UsageError
from allx.train.backbones import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, colour_normalisation
from allx.train.layers import ColourStandardization, PixelNormalization

SIZE = 16
GAIN = np.array([0.7, 1.25, 0.8], np.float32)
OFFSET = np.array([-10.0, 20.0, -15.0], np.float32)


def image_pairs(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images and their copies under one per-channel gain and offset (a stain/illumination change)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 180, (n, SIZE, SIZE, 3)).astype(np.float32)
    return images.astype(np.uint8), np.clip(np.round(images * GAIN + OFFSET), 0, 255).astype(np.uint8)


def test_a_per_channel_gain_and_offset_give_the_same_normalised_image():
    images, shifted = image_pairs()
    layer = colour_normalisation("per-image")
    a, b = np.asarray(layer(images.astype(np.float32))), np.asarray(layer(shifted.astype(np.float32)))
    assert np.abs(images.astype(np.float32) - shifted).mean() > 30, "the pair really differs"
    np.testing.assert_allclose(a, b, atol=2.0)  # 0..255 units; the copy was rounded to whole grey levels
    np.testing.assert_allclose(a.mean(axis=(1, 2)), np.tile(IMAGENET_PIXEL_MEAN, (len(a), 1)), atol=0.01)
    np.testing.assert_allclose(a.std(axis=(1, 2)), np.tile(IMAGENET_PIXEL_STD, (len(a), 1)), rtol=0.01)


def test_a_flat_image_maps_to_the_target_mean_without_dividing_by_zero():
    flat = np.full((1, SIZE, SIZE, 3), 90.0, np.float32)
    out = np.asarray(ColourStandardization(mean=(10, 20, 30), std=5)(flat))
    np.testing.assert_allclose(out, np.broadcast_to([10, 20, 30], out.shape), atol=1e-4)


def test_none_adds_no_layer_and_unknown_names_are_usage_errors():
    assert colour_normalisation("none") is None
    with pytest.raises(UsageError, match="got 'per-pixel', expected one of none, per-image"):
        colour_normalisation("per-pixel")
    with pytest.raises(ValueError, match="expected positive"):
        ColourStandardization(std=0)


def tiny_model():
    keras.utils.set_random_seed(0)
    pixels = keras.Input((SIZE, SIZE, 3))
    x = PixelNormalization(mean=127.0, std=128.0)(colour_normalisation("per-image")(pixels))
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(pixels, keras.layers.Dense(4, activation="softmax", kernel_initializer=keras.initializers.
                                                  RandomNormal(stddev=3.0))(x))


def test_model_round_trips_through_a_keras_file(tmp_path):
    model, (images, _) = tiny_model(), image_pairs()
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_int8_tflite_agrees_with_keras_and_ignores_the_gain_and_offset(tmp_path):
    from allx.convert.modes import get_mode
    from allx.convert.tflite import convert_model, saved_model_of
    from allx.edge_runner.model import EdgeModel

    model = tiny_model()
    images, shifted = image_pairs(8, seed=1)
    calibration = np.concatenate(image_pairs(8, seed=2))  # both stains, as a representative set of smears has

    def representative():
        for one in calibration:
            yield [one[np.newaxis].astype(np.float32)]

    with saved_model_of(model, (SIZE, SIZE)) as saved:
        content = convert_model(saved, get_mode("int8"), "uint8", tmp_path / "convert.log", representative)
    device = EdgeModel.from_bytes(content, labels=("a", "b", "c", "d"))
    keras_p = model.predict(images, verbose=0)
    assert keras_p.max(axis=1).min() < 0.95 and np.ptp(keras_p, axis=0).max() > 0.05, "answers that can disagree"
    np.testing.assert_allclose(device.predict(images), keras_p, atol=0.05)
    np.testing.assert_allclose(device.predict(shifted), device.predict(images), atol=0.05)
    np.testing.assert_allclose(model.predict(shifted, verbose=0), keras_p, atol=0.02)
