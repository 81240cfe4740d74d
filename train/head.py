"""The classifier head: Flatten -> Dropout(0.5) -> Dense softmax (the default), a GAP variant, or a
logistic regression (Flatten -> per-feature standardisation -> Dense softmax, fitted by train.logistic)."""

from __future__ import annotations

import numpy as np

HEADS = ("flatten", "gap", "logreg")


def build_head(feature_shape, n_classes: int, kind: str = "flatten", dropout: float = 0.5) -> keras.Sequential:
    """Feature map -> class probabilities. `kind` = "flatten" (the default), "gap" (global average pool) or
    "logreg" (Flatten -> standardisation -> Dense softmax without dropout: a solver sets its weights, not
    gradient steps). Its standardisation is a 1x1 depthwise convolution on the features laid out as a
    (1, 1, D) map: int8 conversion quantizes a depthwise kernel per channel, so every feature keeps its own
    scale exactly. Folded into the Dense kernel instead (kernel / scale), features of tiny spread get
    weights 10,000x the median, and the kernel's per-class int8 scale rounds all but a few weights to zero
    (ResNet50's multiscale features: 5 to 136 of 3,840 weights per class survived, accuracy 0.18)."""
    import keras  # (heavy: imported when a head is built, so checking --head's name stays light)

    if kind == "logreg":
        width = int(np.prod(feature_shape))
        return keras.Sequential([
            keras.Input(shape=tuple(feature_shape)),
            keras.layers.Flatten(name="head_flatten"),
            keras.layers.Reshape((1, 1, width), name="head_feature_map"),
            keras.layers.DepthwiseConv2D(1, name="head_standardize"),
            keras.layers.Flatten(name="head_standardized"),
            keras.layers.Dense(n_classes, activation="softmax", name="head_dense"),
        ], name="head")
    pool = keras.layers.Flatten(name="head_flatten") if kind == "flatten" else \
        keras.layers.GlobalAveragePooling2D(name="head_gap")
    return keras.Sequential([
        keras.Input(shape=tuple(feature_shape)),
        pool,
        keras.layers.Dropout(dropout, name="head_dropout"),
        keras.layers.Dense(n_classes, activation="softmax", name="head_dense"),
    ], name="head")
