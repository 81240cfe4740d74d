"""The clinical decision: malignant (B-ALL) vs benign from class probabilities, at a chosen operating point.

Malignant = every class except "Benign" (Early, Pre and Pro are malignant B-ALL subtypes). The malignant
score of an image is 1 - p(Benign); "B-ALL suspected" when it reaches the operating point's threshold,
then the subtype is the most probable malignant class. The threshold is chosen on validation data as the
highest one whose malignant sensitivity still reaches the target, which gives the best benign specificity
at that sensitivity. numpy only: train, convert and allx-edge all use this one module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from allx.errors import ModelError, UsageError
from allx.jsonio import Fields

BENIGN = "Benign"  # the one class that is not B-ALL: the only place its name is spelled
# The codes a record carries for a field's or a sample's answer (JSON, CSV, audit log); the words for people
# come from `Decision.words` and `SampleVerdict.words`.
VERDICT_MALIGNANT, VERDICT_BENIGN, VERDICT_INCONCLUSIVE = "malignant", "benign", "inconclusive"
# The note shown beside an image flagged by the out-of-distribution check, and the reason a sample sets it aside.
UNLIKE_TRAINING = "uncertain: unlike training images"
# The kinds of audit-log rows: one classified image, one sample's verdict, one reviewer's action.
FIELD_RECORD, SAMPLE_RECORD, REVIEW_RECORD = "field", "sample", "review"
AUDIT_KINDS = (FIELD_RECORD, SAMPLE_RECORD, REVIEW_RECORD)
DEFAULT_TARGET_SENSITIVITY = 0.99
ARGMAX_THRESHOLD = 0.5  # without a chosen point: malignant when 1 - p(Benign) >= 0.5 (close to argmax)


@dataclass(frozen=True)
class OperatingPoint:
    """Where "B-ALL suspected" starts, and what it reached on the data it was chosen on."""

    threshold: float  # malignant score 1 - p(Benign) at or above which the answer is "B-ALL suspected"
    target_sensitivity: float | None = None
    sensitivity: float | None = None  # malignant sensitivity reached on the choosing data
    specificity: float | None = None  # benign specificity reached there
    n_malignant: int = 0
    n_benign: int = 0
    chosen_on: str = ""  # e.g. "val"; empty for the default

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, source: str = "model.json") -> "OperatingPoint":
        """Read back a stored point, every field typed and in range; anything else is a ModelError."""
        fields = Fields(data, source, ModelError, "operating_point.")
        return cls(threshold=fields.number("threshold", minimum=0, maximum=1),
                   target_sensitivity=fields.number("target_sensitivity", optional=True, minimum=0, maximum=1),
                   sensitivity=fields.number("sensitivity", optional=True, minimum=0, maximum=1),
                   specificity=fields.number("specificity", optional=True, minimum=0, maximum=1),
                   n_malignant=fields.integer("n_malignant", optional=True, minimum=0) or 0,
                   n_benign=fields.integer("n_benign", optional=True, minimum=0) or 0,
                   chosen_on=fields.text("chosen_on", optional=True) or "")


MEAN_LOG_PROBABILITY = "mean_log_probability"


@dataclass(frozen=True)
class SampleRule:
    """How the usable fields of one sample become one verdict (edge_runner.sample applies it), and what the
    rule reached on the pseudo-samples it was chosen on (convert.operating chooses it)."""

    threshold: float = 0.5  # aggregated malignant score 1 - p(Benign) at or above which: "B-ALL suspected"
    min_fields: int = 3  # fewer usable fields: inconclusive
    min_agreement: float = 0.5  # share of usable fields whose own answer takes the verdict's side, at least
    max_set_aside: float = 0.5  # share of fields set aside (unreadable, poor quality, flagged), at most
    # a field flagged "unlike training" counts with this weight in the aggregate (0: it is set aside, the
    # rule of models converted before the weight existed); chosen on cross-fitted pseudo-samples
    flagged_weight: float = 0.0
    method: str = MEAN_LOG_PROBABILITY
    chosen_on: str = ""  # e.g. "val pseudo-samples of 5 consecutive fields"; empty for the defaults
    fields_per_sample: int | None = None
    samples: int = 0
    target_sensitivity: float | None = None
    sensitivity: float | None = None  # sample-level malignant sensitivity reached (inconclusive excluded)
    specificity: float | None = None  # sample-level benign specificity reached
    accuracy: float | None = None  # malignant/benign accuracy over conclusive samples
    subtype_accuracy: float | None = None  # malignant samples called with their own subtype
    inconclusive: float | None = None  # share of samples left inconclusive
    wrong: float | None = None  # share of samples given the wrong side (benign vs malignant)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, source: str = "model.json") -> "SampleRule":
        """Read back a stored rule, every field typed and in range; anything else is a ModelError."""
        fields = Fields(data, source, ModelError, "sample_rule.")
        method = fields.text("method", optional=True) or MEAN_LOG_PROBABILITY
        if method != MEAN_LOG_PROBABILITY:
            raise fields.fail("method", method, repr(MEAN_LOG_PROBABILITY))
        share = {key: fields.number(key, optional=True, minimum=0, maximum=1)
                 for key in ("threshold", "min_agreement", "max_set_aside", "flagged_weight", "target_sensitivity",
                             "sensitivity",
                             "specificity", "accuracy", "subtype_accuracy", "inconclusive", "wrong")}
        defaults = cls()
        return cls(**{key: value for key, value in share.items() if value is not None},
                   min_fields=fields.integer("min_fields", optional=True, minimum=1) or defaults.min_fields,
                   method=method, chosen_on=fields.text("chosen_on", optional=True) or "",
                   fields_per_sample=fields.integer("fields_per_sample", optional=True, minimum=1),
                   samples=fields.integer("samples", optional=True, minimum=0) or 0)


@dataclass(frozen=True)
class Decision:
    malignant: bool  # True: "B-ALL suspected"
    label: str  # the subtype when malignant, else Benign
    score: float  # malignant score 1 - p(Benign)
    confidence: float  # p(label) renormalised within the side the decision took

    @property
    def code(self) -> str:
        return VERDICT_MALIGNANT if self.malignant else VERDICT_BENIGN

    @property
    def words(self) -> str:
        return f"B-ALL suspected ({self.label}, {self.confidence:.2f})" if self.malignant else "no B-ALL seen"


def check_target(target: float) -> float:
    if not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise UsageError(f"--target-sensitivity: got {target!r}, expected a number in (0, 1]")
    return float(target)


def has_benign(classes) -> bool:
    """Whether these classes allow the malignant/benign decision (one of them is Benign)."""
    return BENIGN in list(classes)


def benign_index(classes) -> int:
    classes = list(classes)
    if BENIGN not in classes:
        raise ModelError(f"got classes {classes}, expected one named {BENIGN!r} for the malignant/benign decision")
    return classes.index(BENIGN)


def malignant_scores(probabilities: np.ndarray, classes) -> np.ndarray:
    """1 - p(Benign) for each row of (N, classes) probabilities (or one row)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return 1.0 - probabilities[..., benign_index(classes)]


def choose_operating_point(probabilities: np.ndarray, truth: np.ndarray, classes,
                           target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                           chosen_on: str = "val", confidence: float | None = None) -> OperatingPoint:
    """The highest threshold whose malignant sensitivity on (probabilities, truth) reaches the target.

    With `confidence`, the highest threshold whose sensitivity on NEW images reaches the target with that
    probability (the Neyman-Pearson umbrella rule, Tong, Feng & Li 2018): the k-th lowest malignant score
    for the largest k with P(Binomial(n, 1 - target) <= k - 1) <= 1 - confidence, i.e. it leaves fewer
    misses on the choosing data than the plain rule, so a threshold fitted to one sample's lucky tail does
    not lose the target on the next."""
    check_target(target_sensitivity)
    scores = malignant_scores(probabilities, classes)
    truth = np.asarray(truth)
    malignant = truth != benign_index(classes)
    if not malignant.any() or malignant.all():
        raise UsageError(f"choosing an operating point needs both benign and malignant images in {chosen_on}, got "
                         f"{int(malignant.sum())} malignant of {len(truth)}")
    ordered = np.sort(scores[malignant])[::-1]  # malignant scores, highest first
    needed = int(np.ceil(target_sensitivity * len(ordered) - 1e-9))  # malignant images that must be caught
    if confidence is not None:
        needed = len(ordered) - allowed_misses(len(ordered), 1 - target_sensitivity, 1 - confidence)
    threshold = float(ordered[max(needed, 1) - 1])
    return point_at(threshold, scores, malignant, target_sensitivity, chosen_on)


def allowed_misses(n: int, miss_rate: float, risk: float) -> int:
    """The most misses m among n choosing images such that P(Binomial(n, miss_rate) <= m) <= risk: a
    threshold leaving m misses has a true miss rate above `miss_rate` with probability at most `risk`."""
    from math import exp, lgamma, log, log1p

    if miss_rate <= 0:
        return 0
    cdf, m = 0.0, -1
    for k in range(n + 1):
        log_pmf = lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * log(miss_rate) + (n - k) * log1p(-miss_rate)
        cdf += exp(log_pmf)
        if cdf > risk:
            break
        m = k
    return max(m, 0)


def point_at(threshold: float, scores: np.ndarray, malignant: np.ndarray, target: float | None,
             chosen_on: str) -> OperatingPoint:
    called = scores >= threshold
    return OperatingPoint(threshold=threshold, target_sensitivity=target,
                          sensitivity=float(called[malignant].mean()), specificity=float((~called)[~malignant].mean()),
                          n_malignant=int(malignant.sum()), n_benign=int((~malignant).sum()), chosen_on=chosen_on)


def decide(probabilities: np.ndarray, classes, point: OperatingPoint | None = None) -> Decision:
    """One image's (or one sample's) class probabilities -> the clinical answer at `point`."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    benign = benign_index(classes)
    threshold = ARGMAX_THRESHOLD if point is None else point.threshold
    score = float(1.0 - probabilities[benign])
    if score >= threshold and len(probabilities) > 1:
        malignant = probabilities.copy()
        malignant[benign] = -1.0
        top = int(malignant.argmax())
        confidence = float(probabilities[top] / score) if score > 0 else 0.0
        return Decision(True, list(classes)[top], score, confidence)
    return Decision(False, BENIGN, score, float(probabilities[benign]))


def sensitivity_specificity(probabilities: np.ndarray, truth: np.ndarray, classes,
                            point: OperatingPoint | None = None) -> dict:
    """Malignant sensitivity and benign specificity at `point` (None where a side has no images)."""
    scores = malignant_scores(probabilities, classes)
    malignant = np.asarray(truth) != benign_index(classes)
    called = scores >= (ARGMAX_THRESHOLD if point is None else point.threshold)
    return {"malignant_sensitivity": float(called[malignant].mean()) if malignant.any() else None,
            "benign_specificity": float((~called)[~malignant].mean()) if (~malignant).any() else None,
            "threshold": ARGMAX_THRESHOLD if point is None else point.threshold}
