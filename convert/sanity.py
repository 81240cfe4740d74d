"""Absolute sanity of a conversion: both models must beat chance and agree with the run's own record.

The gate in convert.check compares the converted model with the float one, so a float model that is
wrong everywhere (say, trained with its labels in another order) converts with a drop of 0 pp and
passes. These checks look at the numbers themselves: the float and converted accuracies on the check
subset must be above the best constant guess, and must agree, within sampling noise, with the
accuracy that `allx train` recorded in metrics.json beside the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from allx import layout
from allx.jsonio import Fields, read_json

CHANCE_Z = 1.645  # one-sided 95%: accuracy this many standard errors above chance counts as beating it
RECORD_Z = 3.0  # two accuracies further apart than this many standard errors do not describe one model
RECORD_SLACK = 0.05  # the check subset (usually val) and the recorded one (test) are different images


@dataclass(frozen=True)
class RecordedMetrics:
    """What `allx train` recorded in metrics.json about its test subset (checked where it is read)."""

    accuracy: float
    images: int
    classes: tuple[str, ...] | None


def with_sanity_failures(report, predictions, model_path: Path):
    """`report` (a convert.check.CheckReport) with a failure added for each sanity check broken."""
    truth = np.asarray(predictions.truth)
    failures = [*chance_failures(report, truth)]
    recorded = read_recorded_metrics(Path(model_path).parent / layout.METRICS)
    if recorded is not None:
        failures += record_failures(report, recorded)
    return replace(report, failures=(*report.failures, *failures)) if failures else report


def chance_level(truth: np.ndarray) -> float:
    """Accuracy of always answering the most common class of the check subset."""
    return float(np.bincount(truth).max() / len(truth)) if len(truth) else 0.0


def needed_above_chance(chance: float, n: int) -> float:
    """The accuracy a model must exceed; never more than halfway from chance to 1 on tiny subsets."""
    margin = CHANCE_Z * math.sqrt(chance * (1 - chance) / max(n, 1))
    return min(chance + margin, (1 + chance) / 2)


def float_beats_chance(report, truth) -> bool:
    """Whether the float model itself is above chance on the check subset (no quantized copy can be, if not)."""
    truth = np.asarray(truth)
    return report.float.accuracy > needed_above_chance(chance_level(truth), len(truth))


def chance_failures(report, truth: np.ndarray) -> list[str]:
    chance, n = chance_level(truth), len(truth)
    needed = needed_above_chance(chance, n)
    return [f"{name} accuracy {accuracy:.2%} on {n} {report.subset} images does not beat chance "
            f"(always the most common class: {chance:.2%}; needed above {needed:.2%})"
            for name, accuracy in (("float", report.float.accuracy), (report.precision, report.quantized.accuracy))
            if accuracy <= needed]


def read_recorded_metrics(path: Path) -> RecordedMetrics | None:
    """The run's metrics.json, or None when there is none (or it records no test accuracy)."""
    if not path.is_file():
        return None
    fields = Fields(read_json(path, "run metrics"), f"run metrics {path}")
    if fields.data.get("accuracy") is None:  # a run without a test subset records a note instead
        return None
    return RecordedMetrics(fields.number("accuracy", minimum=0, maximum=1), fields.integer("n", minimum=1),
                           fields.texts("classes", optional=True))


def record_failures(report, recorded: RecordedMetrics) -> list[str]:
    accuracy, n, classes = recorded.accuracy, recorded.images, recorded.classes
    failures = []
    if classes is not None and tuple(classes) != tuple(report.labels):
        failures.append(f"the run's {layout.METRICS} lists classes {list(classes)}, the model's labels are "
                        f"{list(report.labels)}: expected the same names in the same order")
    for name, measured in (("float", report.float.accuracy), (report.precision, report.quantized.accuracy)):
        limit = disagreement_limit(accuracy, n, measured, report.images)
        if abs(measured - accuracy) > limit:
            failures.append(f"{name} accuracy {measured:.2%} on {report.images} {report.subset} images disagrees "
                            f"with the {accuracy:.2%} on {n} images recorded in {layout.METRICS} (allowed "
                            f"{limit:.2%}): the model or its labels are not what was trained")
    return failures


def disagreement_limit(p1: float, n1: int, p2: float, n2: int) -> float:
    """RECORD_Z pooled standard errors of the difference of two accuracies, plus RECORD_SLACK."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(max(pooled * (1 - pooled), 0.25 / (n1 + n2)) * (1 / n1 + 1 / max(n2, 1)))
    return RECORD_Z * spread + RECORD_SLACK
