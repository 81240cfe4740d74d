"""The network description that travels from allx's Keras 3 to the IMX500 tool environment's Keras 2.15.

A Keras 3 `.keras` file does not load under Keras 2.15, so the network crosses as data: a JSON list of
layers (class, the arguments that define it, the layers it reads) and a `.npz` of their weights. The
same `rebuild` runs in both environments: CI rebuilds under Keras 3 and compares layer by layer, the
tool environment rebuilds under Keras 2 for MCT. This module imports only the standard library and
numpy at its top (the tool environment has no allx dependencies): keep it that way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = "allx-imx500-network"
VERSION = 1
INPUT = "input"  # the name layers use for the network's (normalised) image input
NORMALIZATION_LAYER = "input_normalization"  # the folded preprocessing, as a 1x1 depthwise convolution

# Layer classes the rebuild knows, with the arguments that define each (the rest are Keras defaults or
# training-only: initialisers, regularisers, dtype policies). Both Keras 2.15 and Keras 3 accept these.
LAYER_ARGS: dict[str, tuple[str, ...]] = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups", "activation", "use_bias"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "depth_multiplier", "dilation_rate", "activation",
                        "use_bias"),
    "BatchNormalization": ("axis", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Activation": ("activation",),
    "Add": (),
    "Multiply": (),
    "Concatenate": ("axis",),
    "ZeroPadding2D": ("padding",),
    "GlobalAveragePooling2D": ("keepdims",),
    "AveragePooling2D": ("pool_size", "strides", "padding"),
    "MaxPooling2D": ("pool_size", "strides", "padding"),
    "Flatten": (),
    "Reshape": ("target_shape",),
    "Dense": ("units", "activation", "use_bias"),
    "Dropout": ("rate",),
    "Softmax": ("axis",),
}


def rebuild(description: dict, weights: dict[str, np.ndarray] | None = None, normalization: bool = True,
            keras=None):
    """The Keras model the description names, with `weights` (layer/index -> array) when given.

    `keras` is the Keras module to build with (default: `import keras`, 2.15 in the tool environment).
    With `normalization` the folded preprocessing comes first as a 1x1 depthwise convolution (per-channel
    scale and offset), so the model takes raw 0..255 pixels like every allx model; without it the model
    takes the normalised image.
    """
    if keras is None:
        import keras  # heavy; the caller's environment decides which Keras this is
    check_description(description)
    given, entries, weights = weights is not None, list(description["layers"]), dict(weights or {})
    if normalization:
        first, first_weights = normalization_entry(**description["input_normalization"])
        entries = [first] + [{**e, "inputs": [NORMALIZATION_LAYER if n == INPUT else n for n in e["inputs"]]}
                             for e in entries]
        weights.update(first_weights)
    tensors = {INPUT: keras.Input(shape=tuple(description["input_shape"]), name=INPUT)}
    layers = []
    for entry in entries:
        layer = getattr(keras.layers, entry["class"])(name=entry["name"], **plain_args(entry["args"]))
        inputs = [tensors[name] for name in entry["inputs"]]
        tensors[entry["name"]] = layer(inputs if len(inputs) > 1 else inputs[0])
        layers.append(layer)
    model = keras.Model(tensors[INPUT], [tensors[name] for name in description["outputs"]],
                        name=description.get("name", "allx_imx500"))
    if given:
        set_weights(layers, weights)
    return model


def plain_args(args: dict) -> dict:
    """JSON lists back to the tuples Keras configs use (ZeroPadding2D wants nested tuples)."""
    return {key: tuple(tuple(v) if isinstance(v, list) else v for v in value) if isinstance(value, list) else value
            for key, value in args.items()}


def set_weights(layers, weights: dict[str, np.ndarray]) -> None:
    for layer in layers:
        arrays = [weights[weight_key(layer.name, i)] for i in range(len(layer.get_weights()))]
        if arrays:
            layer.set_weights(arrays)


def weight_key(layer_name: str, index: int) -> str:
    return f"{layer_name}/{index}"


def check_description(description: dict) -> None:
    if description.get("format") != FORMAT or description.get("version") != VERSION:
        raise ValueError(f"got format {description.get('format')!r} version {description.get('version')!r}, "
                         f"expected {FORMAT!r} version {VERSION}")
    for entry in description["layers"]:
        if entry["class"] not in LAYER_ARGS:
            raise ValueError(f"layer {entry['name']}: got class {entry['class']}, expected one of "
                             f"{', '.join(LAYER_ARGS)}")


def normalization_entry(scale, offset) -> tuple[dict, dict[str, np.ndarray]]:
    """The preprocessing x * scale + offset (per channel) as a layer entry and its weights."""
    entry = {"name": NORMALIZATION_LAYER, "class": "DepthwiseConv2D", "inputs": [INPUT],
             "args": {"kernel_size": [1, 1], "strides": [1, 1], "padding": "valid", "depth_multiplier": 1,
                      "dilation_rate": [1, 1], "activation": "linear", "use_bias": True}}
    kernel = np.asarray(scale, np.float32).reshape(1, 1, 3, 1)
    return entry, {weight_key(NORMALIZATION_LAYER, 0): kernel,
                   weight_key(NORMALIZATION_LAYER, 1): np.asarray(offset, np.float32).reshape(3)}


def write_network(folder: Path, description: dict, weights: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """network.json and weights.npz in `folder` (a scratch folder the tool environment reads)."""
    folder = Path(folder)
    (folder / "network.json").write_text(json.dumps(description, indent=1))
    np.savez(folder / "weights.npz", **weights)
    return folder / "network.json", folder / "weights.npz"


def read_network(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    folder = Path(folder)
    description = json.loads((folder / "network.json").read_text())
    with np.load(folder / "weights.npz") as archive:
        return description, {key: archive[key] for key in archive.files}
