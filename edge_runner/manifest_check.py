"""model.json read into a `Manifest` where it arrives: types, ranges and finite numbers of every field allx-edge uses.

The manifest comes from model.json beside the model or from the copy embedded in the .tflite; both pass
through `check_manifest` once, in `metadata.read_card`, and everything after reads the typed `Manifest`
(the model's labels, its status, input and output specs, the OOD section, the operating point, the sample
rule and the quality limits). A hand-edited or damaged manifest fails there with one line naming the field
("got X, expected Y"), instead of a traceback deep in the loader or a silently absurd threshold.
`Manifest.document` keeps the whole JSON object: `allx-edge info` shows it and `calibrate` writes it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from allx.decision import OperatingPoint, SampleRule
from allx.edge_runner.quality import QualityLimits
from allx.errors import ModelError
from allx.jsonio import Fields

PASSED, REJECTED = "passed", "rejected"
STATUSES = (PASSED, REJECTED)
MAX_OOD_THRESHOLD = 1e6  # scores are 1 - max probability (<= 1) or a squared distance over k <= 64 axes
OUTPUT_ROLES = ("probabilities", "embedding")
QUALITY_NUMBERS = ("focus_min", "shadows_max", "highlights_max", "colour_max")
QUALITY_TRIPLES = ("colour_mean", "colour_std")


@dataclass(frozen=True)
class InputSpec:
    """The image input model.json declares (each None when not declared)."""

    shape: tuple[int, ...] | None = None  # [1, height, width, 3]
    dtype: str | None = None
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class OodSpec:
    """The out-of-distribution section: method and threshold typed; `section` keeps the method's own fields."""

    method: str
    threshold: float | None
    stats_file: str | None
    flag_rate: float | None  # the share of validation images the threshold was set to flag
    section: dict


@dataclass(frozen=True)
class Manifest:
    """What allx-edge reads of a model's manifest, checked. An empty document gives the empty Manifest."""

    document: dict = field(default_factory=dict)
    format: str | None = None
    model_file: str | None = None
    precision: str | None = None
    status: str | None = None  # "passed", "rejected" or None (no check recorded)
    labels: tuple[str, ...] = ()
    input: InputSpec = InputSpec()
    output_names: dict[str, str] = field(default_factory=dict)  # role ("probabilities", "embedding") -> tensor name
    ood: OodSpec | None = None
    operating_point: OperatingPoint | None = None
    sample_rule: SampleRule | None = None
    quality: QualityLimits | None = None
    check: dict | None = None  # the conversion check's record, shown as it was written
    check_failures: tuple[str, ...] = ()

    @property
    def rejected(self) -> bool:
        return self.status == REJECTED

    def __bool__(self) -> bool:
        return bool(self.document)


def check_manifest(document, path: Path | str) -> Manifest:
    """The typed Manifest of a JSON object, or ModelError naming the first field of the wrong type or range."""
    fields = Fields(document, str(path), ModelError)
    status = fields.text("status", optional=True)
    if status is not None and status not in STATUSES:
        raise fields.fail("status", status, f"one of {', '.join(STATUSES)}")
    check = fields.child("check", optional=True)
    failures = check.texts("failures", optional=True) if check is not None else None
    if check is not None:
        check.child("quantized", optional=True)  # its figures are compared with a site's in allx-edge calibrate
    labels = fields.texts("labels", optional=True) or ()
    problem = label_problem(labels)
    if problem:
        raise fields.fail("labels", list(labels), f"distinct, non-blank class names ({problem})")
    return Manifest(
        document=document, format=fields.text("format", optional=True),
        model_file=file_name(fields, "model_file"), precision=fields.text("precision", optional=True),
        status=status, labels=labels,
        input=input_spec(fields.child("input", optional=True)),
        output_names=output_names(fields.child("outputs", optional=True)),
        ood=ood_spec(fields.child("ood", optional=True)),
        operating_point=None if document.get("operating_point") is None
        else OperatingPoint.from_dict(document["operating_point"], str(path)),
        sample_rule=None if document.get("sample_rule") is None
        else SampleRule.from_dict(document["sample_rule"], str(path)),
        quality=quality_limits(fields.child("quality", optional=True)),
        check=None if check is None else check.data, check_failures=failures or ())


def file_name(fields: Fields, key: str) -> str | None:
    """A file the manifest names beside the model: a bare name, never a folder, `..` or an absolute path."""
    name = fields.text(key, optional=True)
    if name is not None and (Path(name).name != name or name in ("", ".", "..")):
        raise fields.fail(key, name, "a file name beside the model (no folders)")
    return name


def label_problem(labels) -> str:
    """What is wrong with a list of class names ("" when nothing): a blank one, or one named twice."""
    blank = [i for i, label in enumerate(labels) if not label.strip()]
    if blank:
        return f"label {blank[0] + 1} is blank"
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    return f"{', '.join(repeated)} named twice" if repeated else ""


def input_spec(spec: Fields | None) -> InputSpec:
    if spec is None:
        return InputSpec()
    shape = spec.integers("shape", optional=True, minimum=1)
    if shape is not None and len(shape) != 4:
        raise spec.fail("shape", list(shape), "[1, height, width, 3]")
    return InputSpec(shape=shape, dtype=spec.text("dtype", optional=True),
                     scale=spec.number("scale", optional=True, minimum=0),
                     zero_point=spec.integer("zero_point", optional=True))


def output_names(outputs: Fields | None) -> dict[str, str]:
    names = {}
    for role in OUTPUT_ROLES:
        spec = outputs.child(role, optional=True) if outputs else None
        name = spec.text("name", optional=True) if spec is not None else None
        if name:
            names[role] = name
    return names


def ood_spec(section: Fields | None) -> OodSpec | None:
    if section is None or not section.data:
        return None
    stats_file = file_name(section, "stats_file")
    return OodSpec(method=section.text("method", optional=True) or "",
                   threshold=section.number("threshold", optional=True, minimum=0, maximum=MAX_OOD_THRESHOLD),
                   stats_file=stats_file, flag_rate=section.number("flag_rate", optional=True, minimum=0, maximum=1),
                   section=section.data)


def quality_limits(section: Fields | None) -> QualityLimits | None:
    """The limits, every number finite (a feature whose limits are absent is simply not checked)."""
    if section is None:
        return None
    for key in QUALITY_NUMBERS:
        section.number(key, optional=True, minimum=0)
    for key in QUALITY_TRIPLES:
        values = section.value(key, "a list of 3 numbers", list, optional=True)
        if values is not None and (len(values) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise section.fail(key, values, "a list of 3 numbers")
    section.integer("images", optional=True, minimum=0)
    section.number("rejected_share", optional=True, minimum=0, maximum=1)
    return QualityLimits.from_dict(section.data)
