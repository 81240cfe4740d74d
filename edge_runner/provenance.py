"""What an audit row says about where a result came from: the image's and the model's sha256, runtime, version."""

from __future__ import annotations

from pathlib import Path

from allx import __version__
from allx.decision import BENIGN, FIELD_RECORD, SAMPLE_RECORD, VERDICT_BENIGN, VERDICT_MALIGNANT
from allx.files import sha256_file


def image_facts(path: str | Path) -> dict:
    """{"image": file name, "image_path", "image_sha256"}; an unreadable file has a null hash."""
    try:
        sha = sha256_file(path)
    except OSError:
        sha = None
    return {"image": Path(path).name, "image_path": str(path), "image_sha256": sha}


def model_facts(edge_model) -> dict:
    """The model and runtime behind every result of one run, from the card read when it was resolved (the
    sha256 of the .tflite and of its manifest file were taken then, once)."""
    card = edge_model.card
    return {"model_file": Path(edge_model.model_path).name, "model_sha256": card.sha256,
            "manifest_sha256": card.manifest_sha256,
            "runtime": str(edge_model.runtime), "delegate": edge_model.delegate, "allx_version": __version__,
            "operating_point": None if edge_model.manifest.operating_point is None
            else edge_model.manifest.operating_point.to_dict(),
            "ood_threshold": None if edge_model.ood_scorer is None else edge_model.ood_scorer.threshold}


def field_record(result, labels, model: dict, operator: str | None, sample_id: str | None = None) -> dict:
    """The audit record of one classified (or failed) image of a batch: batch.ImageResult -> dict."""
    record = {"kind": FIELD_RECORD, "sample_id": sample_id, "operator": operator, **image_facts(result.path), **model}
    p = result.prediction
    if p is None:
        return {**record, "label": None, "error": result.error}
    return {**record, "label": p.label, "score": p.score, "probabilities": dict(zip(labels, p.probabilities)),
            "ood": p.ood, "ood_score": p.ood_score, "quality": None, "latency_ms": p.latency_ms}



def sample_field_record(field, labels, model: dict, operator: str | None, sample_id: str) -> dict:
    """The audit record of one field of a sample (sample.FieldResult -> dict): its result as to_dict() gives it,
    under the log's names (kind "field", image = file name, image_path, image_sha256), probabilities keyed by label."""
    result = {key: value for key, value in field.to_dict().items() if key not in ("kind", "path", "sha256")}
    probabilities = result.get("probabilities")
    if probabilities is not None:
        result["probabilities"] = dict(zip(labels, probabilities))
    return {"kind": FIELD_RECORD, "sample_id": sample_id, "operator": operator, "image": Path(field.name).name,
            "image_path": field.name, "image_sha256": field.sha256 or None, **model, **result}


def sample_verdict_record(verdict, labels, model: dict, operator: str | None) -> dict:
    """The audit record of a sample's verdict (sample.SampleVerdict -> dict); its label is the subtype, the
    benign class, or null when inconclusive, so a review says which answer it confirms or overrides."""
    result = {key: value for key, value in verdict.to_dict().items() if key != "kind"}
    if result.get("probabilities") is not None:
        result["probabilities"] = dict(zip(labels, result["probabilities"]))
    label = {VERDICT_MALIGNANT: verdict.subtype, VERDICT_BENIGN: BENIGN}.get(verdict.verdict)
    return {"kind": SAMPLE_RECORD, "operator": operator, **model, **result, "label": label, "words": verdict.words}


class RunLog:
    """An open audit log plus what every row of one run shares (operator, model facts): one append per result."""

    def __init__(self, log, model: dict, operator: str | None):
        self.log = log
        self.model = model
        self.operator = operator

    def field(self, result, labels, sample_id: str | None = None, extra: dict | None = None) -> int:
        """One image of a plain batch; `extra` adds e.g. the decision at the operating point."""
        return self.log.append({**field_record(result, labels, self.model, self.operator, sample_id), **(extra or {})})

    def sample_field(self, field, labels, sample_id: str) -> int:
        return self.log.append(sample_field_record(field, labels, self.model, self.operator, sample_id))

    def sample_verdict(self, verdict, labels) -> int:
        return self.log.append(sample_verdict_record(verdict, labels, self.model, self.operator))

    def record(self, record: dict) -> int:
        """Any other result dict (a sample verdict, say), with the run's operator and model facts added."""
        return self.log.append({"operator": self.operator, **self.model, **record})

    def close(self) -> None:
        self.log.close()
