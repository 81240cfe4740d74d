"""Copy named tensors from another framework's file into a Keras model, one mapped layer at a time.

One helper serves every port: the torch state dicts of EfficientNet-Lite0 and torchvision's MobileNetV2
(`train.torch_weights`) and the Keras-named tensors of a TF.js layers model or a Keras 2 .h5 file
(`train.tfjs_weights`, `train.resnet50_import`). A mapping is a list of rows (keras layer, source prefix,
kind); the kind says how the source names and lays out that layer's tensors:

- torch kinds: conv (out,in,kh,kw) -> (kh,kw,in,out); dwconv (C,1,kh,kw) -> (kh,kw,C,1); dense transposed;
  bn as weight, bias, running_mean, running_var; `<prefix>.weight` / `<prefix>.bias` names.
- keras: `<prefix>/<weight>` for each of the Keras layer's own weights (kernel, bias, gamma, beta,
  moving_mean, moving_variance), already in Keras's layout.

Every tensor's shape is checked against the layer before anything is set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from allx.errors import ModelError
from allx.train.torch_weights import load_state_dict

TORCH_KINDS = ("conv", "dwconv", "dense", "bn")
KERAS = "keras"


def source_arrays(tensors: dict[str, np.ndarray], prefix: str, kind: str, layer) -> list[np.ndarray]:
    """The Keras weight list of `layer` from the source tensors under `prefix` (KeyError if one is missing)."""
    if kind == KERAS:
        return [tensors[f"{prefix}/{weight_name(weight)}"] for weight in layer.weights]
    if kind == "conv":
        arrays = [tensors[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    elif kind == "dwconv":
        arrays = [tensors[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    elif kind == "dense":
        arrays = [tensors[f"{prefix}.weight"].T]
    elif kind == "bn":
        return [tensors[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
    else:
        raise ValueError(f"got layer kind {kind!r}, expected one of {', '.join((*TORCH_KINDS, KERAS))}")
    if f"{prefix}.bias" in tensors:
        arrays.append(tensors[f"{prefix}.bias"])
    return arrays


def weight_name(weight) -> str:
    """A Keras 3 variable's short name ("kernel"); Keras 2 style paths ("conv/kernel:0") are cut to it."""
    return weight.name.split("/")[-1].split(":")[0]


def conv_bn_rows(keras_prefix: str, conv_source: str, bn_source: str, conv_kind: str = "conv",
                 bn_kind: str = "bn") -> list[tuple[str, str, str]]:
    """The rows of a convolution and its BatchNorm, named `<keras_prefix>_conv` and `<keras_prefix>_bn` in Keras
    (the naming of keras.applications and of allx's own ports)."""
    return [(f"{keras_prefix}_conv", conv_source, conv_kind), (f"{keras_prefix}_bn", bn_source, bn_kind)]


def mobilenet_rows(stem: tuple[str, str, str], blocks, head: tuple[str, str, str],
                   top: str | None) -> list[tuple[str, str, str]]:
    """The rows of every weighted layer of a MobileNet-style network (MobileNetV2, EfficientNet-Lite): the stem and
    the head as conv_bn_rows' arguments, each block as inverted_residual_rows', and the classifier `top` (its
    source name) when it is kept."""
    rows = conv_bn_rows(*stem)
    for block in blocks:
        rows += inverted_residual_rows(*block)
    return rows + conv_bn_rows(*head) + ([("predictions", top, "dense")] if top else [])


def inverted_residual_rows(block: str, expand: tuple[str, str] | None, depthwise: tuple[str, str],
                           project: tuple[str, str]) -> list[tuple[str, str, str]]:
    """The rows of one inverted residual block (MobileNetV2, EfficientNet-Lite): the 1x1 expansion (None in a block
    without one), the depthwise and the 1x1 projection convolution, each a (conv, BatchNorm) pair of source names,
    named `<block>_expand`, `<block>_dw` and `<block>_project` in Keras."""
    rows = [] if expand is None else conv_bn_rows(f"{block}_expand", *expand)
    return rows + conv_bn_rows(f"{block}_dw", *depthwise, "dwconv") + conv_bn_rows(f"{block}_project", *project)


def assign_weights(model, tensors: dict[str, np.ndarray], mapping, source: str, expected: str) -> None:
    """Set each (keras_layer_name, source_prefix, kind) of `mapping` from `tensors`, checking every shape.

    `expected` names the file for messages ("EfficientNet-Lite0 state dict")."""
    for layer_name, prefix, kind in mapping:
        layer = model.get_layer(layer_name)
        try:
            arrays = source_arrays(tensors, prefix, kind, layer)
        except KeyError as err:
            raise ModelError(f"{source}: missing tensor {err.args[0]}, expected a {expected}") from None
        expected = [tuple(weight.shape) for weight in layer.weights]
        got = [tuple(array.shape) for array in arrays]
        if got != expected:
            raise ModelError(f"{source}: {prefix} has shapes {got}, expected {expected} (not a {expected}?)")
        layer.set_weights([np.ascontiguousarray(array, dtype=np.float32) for array in arrays])


def load_torch_weights(model, path: str | Path, mapping, architecture: str) -> None:
    """Read a .pth state dict (no torch) and copy it into `model` through `mapping`."""
    assign_weights(model, load_state_dict(path), mapping, str(path), f"{architecture} state dict")
