"""The classifier head: Flatten -> Dropout(0.5) -> Dense softmax (the default), a GAP variant, or a
logistic regression (Flatten -> Dense softmax, fitted by train.logistic)."""

from __future__ import annotations

HEADS = ("flatten", "gap", "logreg")


def build_head(feature_shape, n_classes: int, kind: str = "flatten", dropout: float = 0.5) -> keras.Sequential:
    """Feature map -> class probabilities. `kind` = "flatten" (the default), "gap" (global average pool) or
    "logreg" (Flatten -> Dense softmax without dropout: a solver sets its weights, not gradient steps)."""
    import keras  # (heavy: imported when a head is built, so checking --head's name stays light)

    if kind == "logreg":
        return keras.Sequential([
            keras.Input(shape=tuple(feature_shape)),
            keras.layers.Flatten(name="head_flatten"),
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
