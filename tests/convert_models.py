"""Tiny trained Keras models and `allx train`-like run folders for the convert tests.

The model follows the allx convention (raw 0..255 float32 pixels in, scaling inside). It is trained
for a few seconds on the generated 4-class images, so float accuracy is well above chance and a
broken int8 model shows. The "fragile" twin computes the same function in float but puts its
features in one tensor with a constant 10,000 channel: per-tensor int8 then rounds the useful
features to zero, a real and deterministic quantization failure.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 32
CLASSES = ("Benign", "Early", "Pre", "Pro")


@dataclass(frozen=True)
class RunFolder:
    root: Path
    model: Path
    fragile: Path
    data: Path
    layout: Path  # same function in the `allx train` layout (a nested "head"), so the OOD warning turns on


def make_run_folder(synthetic_dir: Path, root: Path) -> RunFolder:
    """Copy the images, write split.json (train/val) and labels.txt, train and save both models."""
    from allx.train.split import Split, write_split

    data = root / "data"
    shutil.copytree(synthetic_dir, data)
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    by_class = {c: [p for p in paths if p.startswith(c + "/")] for c in CLASSES}
    train = tuple(p for c in CLASSES for p in by_class[c][:10])
    val = tuple(p for c in CLASSES for p in by_class[c][10:])
    run = root / "run"
    run.mkdir()
    write_split(Split(CLASSES, train, val, (), {"data_dir": str(data.resolve())}), run / "split.json")
    (run / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    model = train_model(data, train)
    model.save(run / "model.keras")
    fragile_dir = root / "fragile"
    fragile_dir.mkdir()
    shutil.copy(run / "split.json", fragile_dir / "split.json")
    shutil.copy(run / "labels.txt", fragile_dir / "labels.txt")
    fragile(model).save(fragile_dir / "model.keras")
    layout_dir = root / "layout"
    layout_dir.mkdir()
    for name in ("split.json", "labels.txt"):
        shutil.copy(run / name, layout_dir / name)
    train_layout(model).save(layout_dir / "model.keras")
    return RunFolder(root, run / "model.keras", fragile_dir / "model.keras", data, layout_dir / "model.keras")


def train_model(data: Path, relpaths: tuple[str, ...]):
    import keras

    from allx.images import load_image

    pixels = np.stack([load_image(data / p, (SIZE, SIZE)) for p in relpaths]).astype(np.float32)
    labels = np.array([CLASSES.index(p.split("/")[0]) for p in relpaths])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="float32")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(pixels, labels, epochs=40, batch_size=16, verbose=0)
    return model


def fragile(model):
    """Same float predictions, but int8 cannot represent the features next to a 10,000 channel."""
    import keras

    features = model.get_layer("features").output
    constant = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(1e4),
                                  name="constant")(features)
    joined = keras.layers.Concatenate(name="joined")([features, constant])
    head = keras.layers.Dense(len(CLASSES), activation="softmax", name="head")
    outputs = head(joined)
    kernel, bias = model.get_layer("probabilities").get_weights()
    head.set_weights([np.vstack([kernel, np.zeros((1, len(CLASSES)), np.float32)]), bias])
    return keras.Model(model.inputs[0], outputs)


def train_layout(model):
    """The trained model rebuilt as `allx train` lays it out: feature map -> nested "head" (train.head)."""
    import keras

    from allx.train.head import build_head

    feature_map = model.get_layer("features").input
    head = build_head(tuple(feature_map.shape[1:]), len(CLASSES), "gap")
    head.get_layer("head_dense").set_weights(model.get_layer("probabilities").get_weights())
    return keras.Model(model.inputs[0], head(feature_map))
