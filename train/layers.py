"""Serializable in-model preprocessing: raw RGB 0..255 in, the backbone's input range out."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="allx")
class PixelNormalization(keras.layers.Layer):
    """(x[..., channels] - mean) / std per channel, optionally reading RGB as BGR first.

    `mean` and `std` are given in the output channel order (BGR when `reverse_channels`), one value
    or three. Written as one multiply-add so that TFLite folds it into a cheap int8-friendly op.
    """

    def __init__(self, mean=0.0, std=1.0, reverse_channels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean = as_triple(mean, "mean")
        self.std = as_triple(std, "std")
        if min(self.std) <= 0:
            raise ValueError(f"got std {self.std}, expected positive values")
        self.reverse_channels = bool(reverse_channels)

    def call(self, inputs):
        pixels = ops.cast(inputs, self.compute_dtype)
        # The multiply-add comes first, in the input's channel order: an int8 CONCATENATION forces one
        # scale on its inputs and output, and on the raw input that would make the uint8 model input
        # something other than the image bytes (scale 1, zero point 0).
        order = (2, 1, 0) if self.reverse_channels else (0, 1, 2)  # output channel j reads input order[j]
        in_input_order = [order.index(i) for i in range(3)]
        scale = ops.convert_to_tensor([1.0 / self.std[j] for j in in_input_order], dtype=self.compute_dtype)
        offset = ops.convert_to_tensor([-self.mean[j] / self.std[j] for j in in_input_order], dtype=self.compute_dtype)
        normalized = pixels * scale + offset
        if not self.reverse_channels:
            return normalized
        # Slices + concatenation, not flip: TFLite's REVERSE_V2 is not an Edge TPU op and, as the
        # model's first op, would keep the whole graph off the Coral.
        return ops.concatenate([normalized[..., 2:3], normalized[..., 1:2], normalized[..., 0:1]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), reverse_channels=self.reverse_channels)
        return config


@keras.saving.register_keras_serializable(package="allx")
class ColourStandardization(keras.layers.Layer):
    """Each image's channels standardised by that image's own per-channel mean and std over its pixels,
    then mapped to `mean` / `std` (one value or three, in 0..255 units), so that a smear's stain and
    illumination (a gain and an offset per channel) no longer reach the backbone.

    Written with MEAN, SUB, MUL, ADD and RSQRT only, ops that TFLite converts and quantizes to int8.
    `epsilon` (in squared 0..255 units) keeps a flat image from being divided by a zero std.
    """

    def __init__(self, mean=0.0, std=1.0, epsilon: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = as_triple(mean, "mean")
        self.std = as_triple(std, "std")
        if min(self.std) <= 0 or epsilon <= 0:
            raise ValueError(f"got std {self.std} and epsilon {epsilon}, expected positive values")
        self.epsilon = float(epsilon)

    def call(self, inputs):
        pixels = ops.cast(inputs, self.compute_dtype)
        centred = pixels - ops.mean(pixels, axis=(1, 2), keepdims=True)
        variance = ops.mean(centred * centred, axis=(1, 2), keepdims=True)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        return centred * (ops.rsqrt(variance + self.epsilon) * std) + mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), epsilon=self.epsilon)
        return config


def as_triple(value, name: str) -> tuple[float, float, float]:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
    if len(values) != 3:
        raise ValueError(f"got {len(values)} {name} values, expected 1 or 3 (one per RGB channel)")
    return tuple(values)


def imagenet_top(x, classes: int):
    """The ImageNet classifier of the MobileNet family (pooling, dropout 0.2, softmax), under the layer names
    the torch weight mappings use ("predictions")."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    return keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
