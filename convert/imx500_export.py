"""An allx Keras 3 model as the IMX500 tool environment's network description (convert.imx500_network).

The model is walked from its output back to its input through every nested model (the backbone, its
multiscale taps, the head), so the description is one flat graph. The preprocessing at the input
(PixelNormalization, Rescaling; two in a row for a torchvision base) is folded into one per-channel
x * scale + offset: the IMX500 cannot run those layers ("[USOP] unsupported ops: ...Rescaling").
"""

from __future__ import annotations

import numpy as np

from allx.convert.imx500_network import FORMAT, INPUT, LAYER_ARGS, VERSION, weight_key
from allx.errors import ModelError

PREPROCESSING = ("PixelNormalization", "Rescaling")
CHIP_BYTES = 8 * 1024 * 1024  # the IMX500's memory for the whole network: weights and activations
# imxconv-tf 3.19 refuses a fully connected layer fed more values ("[INVOP] Input size exceeds the supported
# limit of 32700"): a Flatten head on MobileNetV2's 7x7x1280 map (62,720) does; --head gap (1,280) does not.
MAX_DENSE_INPUTS = 32700


def describe_model(model) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, weights) of a one-input, one-output Keras 3 model; ModelError naming what cannot go."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"got a model with {len(model.inputs)} inputs and {len(model.outputs)} outputs, "
                         "expected one image input and one probability output for the IMX500")
    graph = Graph()
    graph.known[id(model.inputs[0])] = INPUT
    output = graph.walk(model.outputs[0], graph.known)
    scale, offset, layers = fold_preprocessing(graph.entries)
    description = {"format": FORMAT, "version": VERSION, "name": model.name,
                   "input_shape": [int(side) for side in model.inputs[0].shape[1:]],
                   "input_normalization": {"scale": scale.tolist(), "offset": offset.tolist()},
                   "layers": layers, "outputs": [output]}
    return description, {key: value for key, value in graph.weights.items()
                         if key.split("/")[0] in {entry["name"] for entry in layers}}


class Graph:
    """Layer entries in an order where every layer comes after the layers it reads."""

    def __init__(self):
        self.entries: list[dict] = []
        self.weights: dict[str, np.ndarray] = {}
        self.known: dict[int, str] = {}  # id(tensor) -> entry name, in the outermost model

    def walk(self, tensor, known: dict[int, str]) -> str:
        """The name of the entry that computes `tensor` (adding it and what it reads first)."""
        import keras  # heavy (TensorFlow): only when a model is converted

        if id(tensor) in known:
            return known[id(tensor)]
        operation, node_index, tensor_index = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if isinstance(operation, keras.Model):  # a nested model: its inputs are this call's inputs
            inner = {id(t): self.walk(outer, known) for t, outer in zip(operation.inputs, node.input_tensors)}
            name = self.walk(operation.outputs[tensor_index], inner)
        elif not node.input_tensors:
            raise ModelError(f"layer {operation.name}: got a second input, expected the model's one image input")
        else:
            name = self.add(operation, [self.walk(t, known) for t in node.input_tensors])
        known[id(tensor)] = name
        return name

    def add(self, layer, inputs: list[str]) -> str:
        kind = type(layer).__name__
        names = {entry["name"] for entry in self.entries}
        name = layer.name if layer.name not in names else f"{layer.name}_{len(self.entries)}"
        if kind in PREPROCESSING:
            self.entries.append({"name": name, "class": kind, "inputs": inputs, "affine": affine_of(layer)})
            return name
        if kind not in LAYER_ARGS:
            raise ModelError(f"layer {layer.name}: got {kind}, expected one of {', '.join(LAYER_ARGS)} "
                             "(the layers the IMX500 network description knows)")
        if kind == "Dense" and layer.kernel.shape[0] > MAX_DENSE_INPUTS:
            raise ModelError(f"layer {layer.name}: got {layer.kernel.shape[0]} inputs, expected at most "
                             f"{MAX_DENSE_INPUTS} (the IMX500 converter's limit for a fully connected layer): train "
                             "with --head gap, or Lite0's multiscale features")
        config = layer.get_config()
        args = {key: jsonable(config[key]) for key in LAYER_ARGS[kind] if key in config}
        self.entries.append({"name": name, "class": kind, "inputs": inputs, "args": args})
        for index, array in enumerate(layer.get_weights()):
            self.weights[weight_key(name, index)] = np.asarray(array, np.float32)
        return name


def jsonable(value):
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ModelError(f"got a layer setting {value!r}, expected plain numbers and names")


def affine_of(layer) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per input channel of a preprocessing layer."""
    kind = type(layer).__name__
    if kind == "Rescaling":
        return (np.broadcast_to(np.asarray(layer.scale, np.float64), 3).copy(),
                np.broadcast_to(np.asarray(layer.offset, np.float64), 3).copy())
    if layer.reverse_channels:
        raise ModelError(f"layer {layer.name}: got a channel reversal (RGB read as BGR), expected none: the "
                         "IMX500 input is RGB (ResNet50's caffe preprocessing does not fit the chip anyway)")
    std, mean = np.asarray(layer.std, np.float64), np.asarray(layer.mean, np.float64)
    return 1.0 / std, -mean / std


def fold_preprocessing(entries: list[dict]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(scale, offset, the other layers): the preprocessing chain at the input composed into one affine map."""
    scale, offset, source = np.ones(3), np.zeros(3), INPUT
    layers, renamed = [], {}
    for entry in entries:
        entry = {**entry, "inputs": [renamed.get(name, name) for name in entry["inputs"]]}
        if "affine" not in entry:
            layers.append(entry)
            continue
        readers = [e for e in entries if source in e["inputs"]]  # who reads the chain so far
        if entry["inputs"] != [INPUT] or len(readers) != 1:
            raise ModelError(f"layer {entry['name']}: got {entry['class']} inside the network, expected "
                             "preprocessing only at the image input")
        step_scale, step_offset = entry["affine"]
        scale, offset = scale * step_scale, offset * step_scale + step_offset
        renamed[entry["name"]] = INPUT
        source = entry["name"]
    return scale.astype(np.float32), offset.astype(np.float32), layers


def weight_bytes(weights: dict[str, np.ndarray]) -> int:
    """Bytes of the weights at 8 bits each: what the chip must hold before any activation."""
    return int(sum(array.size for array in weights.values()))
