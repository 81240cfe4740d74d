"""What a model is: tensors with their quantization, op counts, labels, manifest and conversion check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from allx.edge_runner.card_text import CardLine, card_lines
from allx.edge_runner.model import resolve_card
from allx.edge_runner.quant import tensor_quantization
from allx.edge_runner.runtime import EDGETPU_OP, find_runtime, make_interpreter

MANIFEST_FIELDS = ("format", "precision", "preprocessing", "representative_count", "source_model_sha256",
                   "data_fingerprint", "versions", "created")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a .tflite model with its quantization (also what model.json records)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    file_size_bytes: int
    runtime: str
    delegate: str
    edgetpu_compiled: bool
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict | None
    labels: tuple[str, ...]
    manifest: dict
    check: dict | None
    warnings: tuple[str, ...]
    sha256: str = ""
    metadata: str = ""  # where the manifest came from: "embedded" in the .tflite, "model.json", or "none"
    features_off: tuple[str, ...] = ()  # codes of edge_runner.metadata.FEATURES the model runs without
    overridden: tuple[str, ...] = ()  # files or options the embedded metadata won over
    card: tuple[CardLine, ...] = ()  # the manifest's figures in words (edge_runner.card_text)
    manifest_sha256: str | None = None  # of the manifest file in force (None: embedded only, or none)


def describe_model(path: str | Path, labels=None, delegate: str = "auto") -> ModelInfo:
    """Describe any .tflite (image classifier or not) or an `allx convert` folder."""
    model_path, card = resolve_card(Path(path), labels)
    manifest = card.manifest.document
    interpreter, used, _threads, warnings = make_interpreter(model_path, 1, delegate, content=card.content)
    fields = {key: manifest[key] for key in MANIFEST_FIELDS if key in manifest}
    return ModelInfo(
        path=str(model_path), file_size_bytes=len(card.content), runtime=str(find_runtime()),
        delegate=used, edgetpu_compiled=EDGETPU_OP in card.content,
        inputs=tuple(tensor_info(d) for d in interpreter.get_input_details()),
        outputs=tuple(tensor_info(d) for d in interpreter.get_output_details()),
        op_counts=count_ops(interpreter), labels=card.labels, manifest=fields,
        check=manifest.get("check"), warnings=(*card.warnings, *warnings), sha256=card.sha256,
        metadata=card.source, features_off=card.features_off, overridden=card.overridden,
        card=card_lines(manifest), manifest_sha256=card.manifest_sha256)


def tensor_info(details: dict) -> TensorInfo:
    scale, zero_point = tensor_quantization(details)
    dtype = getattr(details["dtype"], "__name__", str(details["dtype"]))
    return TensorInfo(details["name"], tuple(int(n) for n in details["shape"]), dtype, scale, zero_point)


def count_ops(interpreter) -> dict | None:
    """Op type -> count, from the interpreter's op list (None where the runtime does not expose it)."""
    ops_details = getattr(interpreter, "_get_ops_details", None)
    if ops_details is None:
        return None
    counts = Counter(op["op_name"] for op in ops_details())
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
