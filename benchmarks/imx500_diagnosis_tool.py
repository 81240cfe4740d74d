"""Runs in the IMX500 tool environment for benchmarks/imx500_diagnosis.py: `python imx500_diagnosis_tool.py WORK V...`.

WORK holds what benchmarks/imx500_diagnosis.py prepared (network.json + weights.npz, representative.npy,
images.npy, truth.npy, float.npy: the Keras 3 model's probabilities). For the rebuilt float network and
for each MCT variant it records accuracy, agreement with the Keras 3 model and the confusion matrix; for
the first variant also each activation's relative error against the float network on the first
images of the Early class (where the gate saw the flips). Writes WORK/diagnosis.json.

A variant is comma-separated settings: rep=N (the first N representative images), bias=0 (no weights bias
correction), noclip=1 (thresholds from the maximum, no MSE search), float_weights=1 (activations
quantized only), float_head=1 (the head's activations left in float).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from imx500_network import read_network, rebuild  # noqa: E402  (the tool environment has no allx)
from imx500_tool import BATCH, TPC_VERSION, predict  # noqa: E402

EARLY = 1  # the class whose images flipped at the gate
LAYER_IMAGES = 24
HEAD_PREFIX = "head_"


def main(work: Path, variants: list[str]) -> None:
    description, weights = read_network(work)
    model = rebuild(description, weights)
    images = np.load(work / "images.npy", mmap_mode="r")
    truth, reference = np.load(work / "truth.npy"), np.load(work / "float.npy")
    representative = np.load(work / "representative.npy")
    rows = [scored("float (Keras 2 rebuild)", predict(model, images), truth, reference)]
    layers = None
    for variant in variants:
        settings = dict(part.split("=") for part in variant.split(","))
        began = time.perf_counter()
        quantized = quantize(model, representative[:int(settings.get("rep", len(representative)))], settings)
        rows.append({**scored(variant, predict(quantized, images), truth, reference),
                     "seconds": round(time.perf_counter() - began, 1)})
        if layers is None:
            layers = layer_errors(model, quantized, np.asarray(images[np.flatnonzero(truth == EARLY)[:LAYER_IMAGES]]))
    (work / "diagnosis.json").write_text(json.dumps({"variants": rows, "layers": layers}, indent=1))


def scored(name: str, probabilities: np.ndarray, truth: np.ndarray, reference: np.ndarray) -> dict:
    top = probabilities.argmax(axis=1)
    confusion = np.zeros((reference.shape[1],) * 2, int)
    np.add.at(confusion, (truth, top), 1)
    return {"variant": name, "images": len(truth), "accuracy": float((top == truth).mean()),
            "agreement": float((top == reference.argmax(axis=1)).mean()),
            "max_difference": float(np.abs(probabilities - reference).max()), "confusion": confusion.tolist()}


def quantize(model, representative: np.ndarray, settings: dict):
    """MCT post-training quantization as convert/imx500_tool.py does it, with the variant's changes."""
    import keras
    import model_compression_toolkit as mct
    from model_compression_toolkit.core import network_editor as editor
    from model_compression_toolkit.core.common.quantization.node_quantization_config import \
        ActivationQuantizationMode

    config = {}
    if settings.get("bias") == "0":
        config["weights_bias_correction"] = False
    if settings.get("noclip") == "1":
        config["activation_error_method"] = mct.core.QuantizationErrorMethod.NOCLIPPING
    rules = []
    if settings.get("float_weights") == "1":
        for kind, attribute in ((keras.layers.Conv2D, "kernel"), (keras.layers.Dense, "kernel"),
                                (keras.layers.DepthwiseConv2D, "depthwise_kernel")):
            keep_float = editor.ChangeCandidatesWeightsQuantConfigAttr(attr_name=attribute,
                                                                       enable_weights_quantization=False)
            rules.append(editor.EditRule(filter=editor.NodeTypeFilter(kind), action=keep_float))
    if settings.get("float_head") == "1":
        rules.append(editor.EditRule(filter=editor.NodeNameScopeFilter(HEAD_PREFIX),
                                     action=editor.ChangeCandidatesActivationQuantConfigAttr(
                                         quant_mode=ActivationQuantizationMode.NO_QUANT)))

    def batches():
        for start in range(0, len(representative), BATCH):
            yield [representative[start:start + BATCH].astype(np.float32)]

    core = mct.core.CoreConfig(quantization_config=mct.core.QuantizationConfig(**config),
                               debug_config=mct.core.DebugConfig(network_editor=rules))
    tpc = mct.get_target_platform_capabilities("tensorflow", "imx500", target_platform_version=TPC_VERSION)
    quantized, _ = mct.ptq.keras_post_training_quantization(model, batches, core_config=core,
                                                            target_platform_capabilities=tpc)
    return quantized


def layer_errors(model, quantized, images: np.ndarray) -> list[dict]:
    """Each quantized activation against the float layer it stands for: ||q - f|| / ||f|| and its threshold.

    MCT folds each BatchNormalization into its convolution, so a convolution's activation is compared
    with the float network's BatchNormalization output that follows it."""
    import keras

    names = {layer.name for layer in model.layers}
    # MCT splits a layer's built-in activation (the head's Dense + softmax) into a node of its own, so that
    # layer's quantized output is the pre-activation: nothing in the float network to compare it with
    split = {layer.name for layer in model.layers if layer.get_config().get("activation") not in (None, "linear")
             and hasattr(layer, "kernel")}
    holders = {}
    for layer in quantized.layers:
        if type(layer).__name__ != "KerasActivationQuantizationHolder":
            continue
        source = layer._inbound_nodes[0].inbound_layers
        source = source[0] if isinstance(source, list) else source
        name = source.layer.name if hasattr(source, "layer") else source.name
        folded = name[:-len("conv")] + "bn" if name.endswith("conv") else None
        holders[folded if folded in names else name] = layer
    matched = [layer.name for layer in model.layers if layer.name in holders and layer.name not in split]
    floats = keras.Model(model.input, [model.get_layer(name).output for name in matched])(images, training=False)
    quants = keras.Model(quantized.input, [holders[name].output for name in matched])(images, training=False)
    rows = []
    for name, f, q in zip(matched, floats, quants):
        f, q = f.numpy(), q.numpy()
        quantizer = holders[name].activation_holder_quantizer.get_config()
        error = float(np.linalg.norm(q - f) / max(np.linalg.norm(f), 1e-12))
        rows.append({"layer": name, "relative_error": round(error, 4),
                     "float_range": [round(float(f.min()), 3), round(float(f.max()), 3)],
                     "threshold": [float(t) for t in np.ravel(quantizer.get("threshold", []))],
                     "signed": bool(quantizer.get("signed"))})
    return rows


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
