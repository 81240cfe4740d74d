"""Tiny .tflite models for the edge-runner tests, built once per test session with TensorFlow.

The Keras model follows the allx convention: raw RGB pixels 0..255 as float32 in, a Rescaling layer
inside, softmax over 4 classes out. It is converted to float32 and to full int8 with uint8 IO; a
model whose input is a plain vector (1, 10) stands for "not an image classifier".
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("Benign", "Early", "Pre", "Pro")
SIZE = 32


@dataclass(frozen=True)
class TinyModels:
    folder: Path
    float32: Path
    int8: Path
    vector: Path
    two_outputs: Path  # float32, outputs: an 8-wide embedding and the 4 class probabilities
    labels_file: Path
    reference: Path  # .npz: pixels (N, 32, 32, 3) uint8 and the Keras model's probabilities for them


@functools.cache
def tiny_models() -> TinyModels:
    """Build (once per process) the float32, int8 and vector-input models in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="allx-edge-models-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keras_model = build_keras_model()
    float_path = folder / "tiny_float32.tflite"
    float_path.write_bytes(convert_float32(keras_model))
    int8_path = folder / "tiny_int8.tflite"
    int8_path.write_bytes(convert_int8(keras_model))
    vector_path = folder / "vector.tflite"
    vector_path.write_bytes(convert_float32(build_vector_model()))
    two_outputs = folder / "two_outputs.tflite"
    two_outputs.write_bytes(convert_float32(build_two_output_model(keras_model)))
    labels_file = folder / "labels.txt"
    labels_file.write_text("\n".join(LABELS) + "\n")
    reference = folder / "reference.npz"
    pixels = reference_pixels()
    np.savez(reference, pixels=pixels, probabilities=keras_model.predict(pixels.astype(np.float32), verbose=0))
    return TinyModels(folder, float_path, int8_path, vector_path, two_outputs, labels_file, reference)


def build_keras_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="float32")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Large output weights so that different images get clearly different probabilities.
    dense = keras.layers.Dense(len(LABELS), activation="softmax",
                               kernel_initializer=keras.initializers.RandomNormal(stddev=8.0, seed=1))
    return keras.Model(inputs, dense(x))


def build_vector_model():
    import keras

    inputs = keras.Input((10,), dtype="float32")
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(inputs)
    return keras.Model(inputs, outputs)


def build_two_output_model(keras_model):
    """The classifier plus its pooled features as a second output (as the OOD issue will add)."""
    import keras

    pooled = keras_model.layers[-2].output
    return keras.Model(keras_model.input, [pooled, keras_model.output])


def convert_float32(keras_model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()


def quiet_convert(converter) -> bytes:
    # TF warns that uint8 input statistics were not given: they come from the representative data.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def convert_int8(keras_model) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_pixels
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return quiet_convert(converter)


def reference_pixels() -> np.ndarray:
    """Flat colours and noise: images the tiny model tells apart."""
    rng = np.random.default_rng(1)
    flat = [np.full((SIZE, SIZE, 3), colour, np.uint8) for colour in
            ((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (236, 206, 214))]
    noise = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(4)]
    return np.stack(flat + noise)


def representative_pixels():
    """Samples spanning 0..255, so the uint8 input is exactly the image bytes (scale 1, zero point 0)."""
    rng = np.random.default_rng(0)
    for pixels in reference_pixels()[:6]:
        yield [pixels[np.newaxis].astype(np.float32)]
    for _ in range(16):
        pixels = rng.integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.float32)
        pixels[0, 0, 0] = (0, 255, 0)
        yield [pixels]
