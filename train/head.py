"""The classifier head: Flatten -> Dropout(0.5) -> Dense softmax (the default), or a GAP variant."""

from __future__ import annotations

import keras

HEADS = ("flatten", "gap")


def build_head(feature_shape, n_classes: int, kind: str = "flatten", dropout: float = 0.5) -> keras.Sequential:
    """Feature map -> class probabilities. `kind` = "flatten" (the default) or "gap" (global average pool)."""
    pool = keras.layers.Flatten(name="head_flatten") if kind == "flatten" else \
        keras.layers.GlobalAveragePooling2D(name="head_gap")
    return keras.Sequential([
        keras.Input(shape=tuple(feature_shape)),
        pool,
        keras.layers.Dropout(dropout, name="head_dropout"),
        keras.layers.Dense(n_classes, activation="softmax", name="head_dense"),
    ], name="head")
