"""Generated audit logs for the monitor's tests, written through the real AuditLog and provenance records.

Each field is a real sample.FieldResult (prediction, quality result, decision) and each verdict comes from
sample.aggregate, so the rows are the very records `allx-edge classify --sample` and the web page write.
"""

from __future__ import annotations

from allx.decision import OperatingPoint, SampleRule, decide
from allx.edge_runner import provenance
from allx.edge_runner.audit import AuditLog
from allx.edge_runner.model import Prediction
from allx.edge_runner.quality import QualityMeasures, QualityResult
from allx.decision import UNLIKE_TRAINING
from allx.edge_runner.sample import FieldResult, aggregate

LABELS = ("Benign", "Early", "Pre", "Pro")
FACTS = {"model_file": "model_int8.tflite", "model_sha256": "a" * 64, "manifest_sha256": None, "runtime": "test",
         "delegate": "cpu", "allx_version": "test", "operating_point": None, "ood_threshold": 100.0}
RULE = SampleRule(threshold=0.5, min_fields=2)
BLURRED = "blurred: focus 3 < 40"


def field(name: str, label: str = "Pre", ood: bool = False, reason: str | None = None,
          score: float = 0.9) -> FieldResult:
    """One field the model called `label` with `score`; flagged unlike training and/or rejected for `reason`."""
    rest = (1.0 - score) / (len(LABELS) - 1)
    probabilities = tuple(score if other == label else rest for other in LABELS)
    prediction = Prediction(label, score, ((label, score),), probabilities, 1.0, ood, 500.0 if ood else 10.0)
    quality = QualityResult(QualityMeasures(100.0, 0.0, 0.0, (200.0, 200.0, 220.0)), (reason,) if reason else (), 1.0)
    why = reason or (UNLIKE_TRAINING if ood else None)
    decision = decide(probabilities, LABELS, OperatingPoint(0.5))
    return FieldResult(name, "b" * 64, prediction, quality, why is None, why, decision)


def log_sample(log: AuditLog, sample_id: str, fields: list[FieldResult], review: str | None = None) -> None:
    """The fields' rows, the verdict's row, then a review: "confirm", or a label to override with."""
    for result in fields:
        log.append(provenance.sample_field_record(result, LABELS, FACTS, "ana", sample_id))
    verdict = aggregate(fields, LABELS, RULE, sample_id)
    log.append(provenance.sample_verdict_record(verdict, LABELS, FACTS, "ana"))
    if review == "confirm":
        log.review(sample_id, operator="ana")
    elif review is not None:
        log.review(sample_id, override=review, note="seen by eye", operator="ana")


def good_fields(sample_id: str, count: int = 5, label: str = "Pre") -> list[FieldResult]:
    return [field(f"{sample_id}-{i}.jpg", label) for i in range(count)]


def changed_camera_fields(sample_id: str, count: int = 5) -> list[FieldResult]:
    """What a new camera gives: every field flagged unlike training, lower confidence, some rejected."""
    return [field(f"{sample_id}-{i}.jpg", "Early", ood=True, reason=BLURRED if i % 2 else None, score=0.5)
            for i in range(count)]


def write_log(path, good: int, changed: int = 0, review: str | None = "confirm") -> None:
    """`good` samples of 5 good fields, then `changed` samples through a changed camera (reviewed: overridden)."""
    with AuditLog.open(path) as log:
        for index in range(good):
            log_sample(log, f"S{index:03d}", good_fields(f"S{index:03d}"), review)
        for index in range(good, good + changed):
            log_sample(log, f"S{index:03d}", changed_camera_fields(f"S{index:03d}"), "Benign")
