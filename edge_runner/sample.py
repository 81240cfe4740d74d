"""One answer per sample (patient smear) from several fields: quality check, classify, set aside, aggregate.

A technician looks at several fields of one smear and reports one result. Each field is read once
(its sha256 is of the very bytes classified), checked for quality (edge_runner.quality), classified by
the one inference path (EdgeModel) and decided at the model's operating point (allx.decision). A field
that could not be read or failed the quality check is set aside with its reason. A field flagged unlike
the training images is set aside too, unless the rule gives flagged fields a weight: then it stays in
the aggregate at that weight (it lowers its pull on the verdict instead of leaving the sample short of
fields; `allx convert` chooses the weight on cross-fitted pseudo-samples). The usable fields are
aggregated by a rule stored in model.json "sample_rule": weighted mean log-probability over the usable
fields (a geometric mean, renormalised), decided at the rule's own threshold, unless too many fields
were set aside, too few are left, or the fields disagree -- then the verdict is "inconclusive" with why.

`aggregate` is a pure function of field results, so `classify --sample`, `camera` (a running verdict
over a session's frames), the web page and the convert-time calibration all give the same answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from allx.decision import (ARGMAX_THRESHOLD, UNLIKE_TRAINING, VERDICT_BENIGN, VERDICT_INCONCLUSIVE, VERDICT_MALIGNANT,
                           Decision, OperatingPoint, SampleRule, decide, has_benign)
from allx.errors import ImageError
from allx.images import decode_image_bytes
from allx.layout import RecordKind
from allx.edge_runner.model import EdgeModel, Prediction
from allx.edge_runner.quality import QualityLimits, QualityResult, check_quality, limits_in_use

LOG_FLOOR = 1e-6  # a probability of 0 from an int8 output would make one field veto every other


@dataclass(frozen=True)
class FieldResult:
    """One field of a sample: what was read, what the model said, and whether the sample counts it."""

    name: str
    sha256: str  # of the image bytes (or, for a camera frame, of the pixels) that were classified
    prediction: Prediction | None
    quality: QualityResult | None  # None: not checked (no statistics, or unreadable)
    usable: bool
    reason: str | None = None  # why it was set aside
    decision: Decision | None = None  # the field's own answer at the model's operating point
    flagged: bool = False  # unlike training, yet kept in the aggregate at the rule's flagged_weight

    def to_dict(self) -> dict:
        p, d = self.prediction, self.decision
        return {"kind": RecordKind.PREDICTION.value, "path": self.name, "sha256": self.sha256,
                "label": None if p is None else p.label, "score": None if p is None else round(p.score, 6),
                "probabilities": None if p is None else [round(v, 6) for v in p.probabilities],
                "decision": None if d is None else d.code,
                "subtype": d.label if d is not None and d.malignant else None,
                "malignant_score": None if d is None else round(d.score, 6),
                "ood": None if p is None else p.ood, "quality": None if self.quality is None else self.quality.to_dict(),
                "usable": self.usable, "reason": self.reason}


@dataclass(frozen=True)
class SampleVerdict:
    """One sample's answer: malignant (with subtype), benign, or inconclusive (with the reason)."""

    sample_id: str
    verdict: str  # VERDICT_MALIGNANT, VERDICT_BENIGN or VERDICT_INCONCLUSIVE (allx.decision)
    subtype: str | None
    confidence: float | None
    reason: str | None  # why inconclusive; None otherwise
    fields_used: tuple[str, ...]
    fields_set_aside: tuple[tuple[str, str], ...]  # (field name, why)
    malignant_score: float | None = None  # aggregated 1 - p(Benign)
    agreement: float | None = None  # share of usable fields on the verdict's side
    probabilities: tuple[float, ...] | None = None  # aggregated class probabilities
    threshold: float | None = None
    fields_flagged: tuple[str, ...] = ()  # usable fields flagged unlike training, counted at a lower weight

    @property
    def words(self) -> str:
        flagged = (f"; {len(self.fields_flagged)} of {len(self.fields_used)} fields unlike training, counted at "
                   "lower weight") if self.fields_flagged else ""
        if self.verdict == VERDICT_MALIGNANT:
            return f"B-ALL suspected ({self.subtype}, {self.confidence:.2f}){flagged}"
        return f"no B-ALL seen{flagged}" if self.verdict == VERDICT_BENIGN else f"inconclusive: {self.reason}"

    def to_dict(self) -> dict:
        return {"kind": RecordKind.SAMPLE.value, "sample_id": self.sample_id, "verdict": self.verdict,
                "subtype": self.subtype, "confidence": None if self.confidence is None else round(self.confidence, 6),
                "reason": self.reason, "fields_used": list(self.fields_used),
                "fields_set_aside": [{"path": name, "reason": why} for name, why in self.fields_set_aside],
                "malignant_score": None if self.malignant_score is None else round(self.malignant_score, 6),
                "agreement": self.agreement, "threshold": self.threshold, "fields_flagged": list(self.fields_flagged),
                "probabilities": None if self.probabilities is None else [round(v, 6) for v in self.probabilities]}


def aggregate_probabilities(rows, weights=None) -> np.ndarray:
    """(Weighted) mean log-probability over fields, back to probabilities that sum to 1 (a normalised
    geometric mean)."""
    logs = np.log(np.maximum(np.atleast_2d(np.asarray(rows, np.float64)), LOG_FLOOR))
    logs = np.average(logs, axis=0, weights=weights)
    exp = np.exp(logs - logs.max())
    return exp / exp.sum()


def aggregate(fields: Sequence[FieldResult], classes: Sequence[str], rule: SampleRule,
              sample_id: str = "") -> SampleVerdict:
    """The sample's verdict from its field results under `rule` (pure: no model, no I/O)."""
    used = [f for f in fields if f.usable]
    aside = tuple((f.name, f.reason or "set aside") for f in fields if not f.usable)
    names = tuple(f.name for f in used)
    flagged = tuple(f.name for f in used if f.flagged)

    def inconclusive(reason: str, **extra) -> SampleVerdict:
        return SampleVerdict(sample_id, VERDICT_INCONCLUSIVE, None, None, reason, names, aside, threshold=rule.threshold,
                             fields_flagged=flagged, **extra)

    if not fields:
        return inconclusive("no fields")
    if len(aside) / len(fields) > rule.max_set_aside:
        return inconclusive(f"too many fields set aside: {len(aside)} of {len(fields)} "
                            f"(more than {rule.max_set_aside:.0%})")
    if len(used) < rule.min_fields:
        return inconclusive(f"too few usable fields: {len(used)}, expected at least {rule.min_fields}")
    weights = np.array([rule.flagged_weight if f.flagged else 1.0 for f in used])
    probabilities = aggregate_probabilities([f.prediction.probabilities for f in used], weights)
    decision = decide(probabilities, classes, OperatingPoint(rule.threshold))
    field_sides = np.array([(f.decision or decide(f.prediction.probabilities, classes)).malignant for f in used])
    agreement = float(weights[field_sides == decision.malignant].sum() / weights.sum())
    extra = {"malignant_score": decision.score, "agreement": agreement,
             "probabilities": tuple(float(v) for v in probabilities)}
    if agreement < rule.min_agreement:
        return inconclusive(f"fields disagree: {int(field_sides.sum())} of {len(used)} say B-ALL suspected", **extra)
    return SampleVerdict(sample_id, decision.code,
                         decision.label if decision.malignant else None, decision.confidence, None, names, aside,
                         threshold=rule.threshold, fields_flagged=flagged, **extra)


def field_decision(probabilities, classes, point: OperatingPoint | None) -> Decision | None:
    """One image's answer at `point`, decided once and carried to its record and its words (None for an image
    that failed or a model without a Benign class)."""
    if probabilities is None or not has_benign(classes):
        return None
    return decide(probabilities, classes, point)


def decision_record(d: Decision | None) -> dict:
    """The clinical answer as JSON codes ({} without one): decision, subtype, malignant score."""
    if d is None:
        return {}
    return {"decision": d.code, "subtype": d.label if d.malignant else None, "malignant_score": round(d.score, 6)}


def rule_or_default(rule: SampleRule | None, point: OperatingPoint | None = None) -> SampleRule:
    """The stored rule; without one, the defaults at the field operating point's threshold."""
    if rule is not None:
        return rule
    return SampleRule(threshold=ARGMAX_THRESHOLD if point is None else point.threshold)


class SampleSession:
    """The fields of one sample, added one at a time; `verdict()` may be asked at any point (a running verdict)."""

    def __init__(self, model: EdgeModel, sample_id: str, rule: SampleRule | None = None,
                 point: OperatingPoint | None = None, quality: QualityLimits | None | bool = True):
        """`quality`: limits to check against; True: those of model.json; None or False: no quality check."""
        model.require_labels()
        self.model = model
        self.sample_id = str(sample_id)
        self.point = point if point is not None else model.manifest.operating_point
        self.rule = rule if rule is not None else rule_or_default(model.manifest.sample_rule, self.point)
        self.quality = limits_in_use(model.manifest.quality)[0] if quality is True else (quality or None)
        self._fields: list[FieldResult] = []

    @property
    def fields(self) -> tuple[FieldResult, ...]:
        return tuple(self._fields)

    def add_field(self, name: str | Path, image: str | Path | bytes | None = None) -> FieldResult:
        """Read (the file `name`, or `image`: a path or the encoded bytes), check, classify and keep one field."""
        name = str(name)
        source = name if image is None else image
        try:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
        except OSError as err:
            return self._keep(FieldResult(name, "", None, None, False, f"{name}: unreadable ({err.strerror or err})"))
        digest = hashlib.sha256(data).hexdigest()
        try:
            pixels = decode_image_bytes(data, name, self.model.input_size)
        except ImageError as err:
            return self._keep(FieldResult(name, digest, None, None, False, str(err)))
        return self.add_pixels(name, pixels, digest)

    def add_pixels(self, name: str, pixels: np.ndarray, sha256: str | None = None) -> FieldResult:
        """A field already decoded at the model's input size (a camera frame); sha256 of the pixels if not given."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        digest = sha256 or hashlib.sha256(pixels.tobytes()).hexdigest()
        quality = None if self.quality is None else check_quality(pixels, self.quality)
        prediction = self.model.classify(pixels)
        decision = decide(prediction.probabilities, self.model.labels, self.point)
        reason = "; ".join(quality.reasons) if quality is not None and not quality.ok else None
        flagged = reason is None and bool(prediction.ood)
        if flagged and not self.rule.flagged_weight:
            reason, flagged = UNLIKE_TRAINING, False
        return self._keep(FieldResult(str(name), digest, prediction, quality, reason is None, reason, decision,
                                      flagged))

    def set_aside(self, name: str, reason: str) -> FieldResult:
        """A field that could not even be opened (a pattern that matched nothing, a folder without images)."""
        return self._keep(FieldResult(str(name), "", None, None, False, reason))

    def verdict(self) -> SampleVerdict:
        return aggregate(self._fields, self.model.labels, self.rule, self.sample_id)

    def _keep(self, result: FieldResult) -> FieldResult:
        self._fields.append(result)
        return result
