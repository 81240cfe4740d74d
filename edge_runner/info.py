"""What a model is: tensors with their quantization, op counts, labels, manifest and conversion check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from allx.edge_runner.model import resolve_card
from allx.evidence import Evidence
from allx.edge_runner.quant import tensor_quantization
from allx.edge_runner.runtime import find_runtime, is_edgetpu_model, make_interpreter

SAMPLE_RATES = ("inconclusive_rate", "malignant_rate")  # model.json expected_rates counted per sample, not per field
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
    figures: tuple[str, ...] = ()  # each figure allx convert shipped, with how it was measured, in words


def describe_model(path: str | Path, labels=None, delegate: str = "auto") -> ModelInfo:
    """Describe any .tflite (image classifier or not) or an `allx convert` folder."""
    model_path, card = resolve_card(Path(path), labels)
    manifest = card.manifest.document
    interpreter, used, _threads, warnings = make_interpreter(model_path, 1, delegate)
    fields = {key: manifest[key] for key in MANIFEST_FIELDS if key in manifest}
    return ModelInfo(
        path=str(model_path), file_size_bytes=model_path.stat().st_size, runtime=str(find_runtime()),
        delegate=used, edgetpu_compiled=is_edgetpu_model(model_path),
        inputs=tuple(tensor_info(d) for d in interpreter.get_input_details()),
        outputs=tuple(tensor_info(d) for d in interpreter.get_output_details()),
        op_counts=count_ops(interpreter), labels=card.labels, manifest=fields,
        check=manifest.get("check"), warnings=(*card.warnings, *warnings), sha256=card.sha256,
        metadata=card.source, features_off=card.features_off, overridden=card.overridden,
        figures=shipped_figures(manifest))


def shipped_figures(manifest: dict) -> tuple[str, ...]:
    """"<figure> <value>, measured <how>" for each number model.json states with an evidence record."""
    section = (lambda key: manifest.get(key) if isinstance(manifest.get(key), dict) else {})
    checks = section("check_evidence")
    rates = section("expected_rates")
    figures = [("fields flagged unlike training", section("ood").get("held_out_flagged"), section("ood")),
               ("benign specificity at the operating point", section("operating_point").get("specificity"),
                section("operating_point")),
               ("samples inconclusive under the sample rule", section("sample_rule").get("inconclusive"),
                section("sample_rule")),
               ("fields rejected for quality", section("quality").get("rejected_out_of_group"), section("quality")),
               ("int8 accuracy on the check images", section("check").get("quantized", {}).get("accuracy"),
                {"evidence": checks.get("accuracy")}),
               ("int8 agreement with the float model", (section("check").get("fidelity") or {}).get("agreement"),
                {"evidence": checks.get("fidelity")})]
    for name, record in rates.items():
        if isinstance(record, dict):
            unit = "samples" if name in SAMPLE_RATES else "fields"
            figures.append((f"expected {name.replace('_', ' ')} (of {record.get('n')} {unit})", record.get("rate"), record))
    lines = []
    for name, value, holder in figures:
        evidence = Evidence.from_dict(holder.get("evidence"))
        if isinstance(value, (int, float)) and evidence is not None:
            lines.append(f"{name} {value:.1%}, measured {evidence.words()}")
    return tuple(lines)


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
