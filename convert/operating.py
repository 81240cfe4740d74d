"""The clinical operating point and the sample rule, chosen on the check subset (val) at `allx convert` time.

Both are chosen on the CONVERTED model's own probabilities (the accuracy check ran them through
edge_runner.EdgeModel), so the device applies them to the numbers they were chosen on.

Field level: allx.decision.choose_operating_point, the highest malignant-score threshold whose malignant
sensitivity reaches the target. Sample level: the check images grouped into pseudo-samples (patient
groups when the split records them, else runs of consecutive file numbers within a class: neighbouring
captures come from one slide), aggregated by edge_runner.sample.aggregate; the sample threshold is
chosen the same way on the aggregated probabilities (never above the field threshold), then the
strictest agreement requirement that leaves at most MAX_INCONCLUSIVE of the pseudo-samples inconclusive.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Sequence

import numpy as np

from allx.decision import (VERDICT_BENIGN, VERDICT_INCONCLUSIVE, VERDICT_MALIGNANT, OperatingPoint, benign_index,
                           choose_operating_point, decide, malignant_scores, point_at)
from allx.edge_runner.model import Prediction
from allx.edge_runner.sample import FieldResult, SampleRule, SampleVerdict, aggregate, aggregate_probabilities
from allx.errors import ModelError, UsageError

FIELDS_PER_SAMPLE = 5
MIN_FIELDS = 3
AGREEMENT_CHOICES = (0.8, 0.6, 0.5, 0.0)  # strictest first
MAX_INCONCLUSIVE = 0.05
NUMBER = re.compile(r"(\d+)")


def file_number(relpath: str) -> tuple:
    """Sort key: the last number in the file name, then the name (captures are numbered in order)."""
    name = relpath.rsplit("/", 1)[-1]
    numbers = NUMBER.findall(name)
    return (int(numbers[-1]) if numbers else -1, name)


def pseudo_samples(relpaths: Sequence[str], truth: Sequence[int], groups: dict | None = None,
                   size: int = FIELDS_PER_SAMPLE) -> list[list[int]]:
    """Indices of the images of each pseudo-sample: a patient group, or `size` consecutive files of one class.

    A trailing run shorter than MIN_FIELDS is dropped (no sample of the real world has so few fields).
    """
    by_key: dict = defaultdict(list)
    for i, (path, label) in enumerate(zip(relpaths, truth)):
        group = (groups or {}).get(path)
        by_key[(label, group) if group is not None else (label, None)].append(i)
    samples = []
    for (label, group), members in sorted(by_key.items(), key=lambda item: str(item[0])):
        members = sorted(members, key=lambda i: file_number(relpaths[i]))
        if group is not None:
            samples.append(members)
            continue
        samples += [members[start:start + size] for start in range(0, len(members), size)
                    if len(members[start:start + size]) >= MIN_FIELDS]
    return samples


def field_results(probabilities: np.ndarray, labels: Sequence[str], point: OperatingPoint) -> list[FieldResult]:
    """Check-subset rows as usable FieldResults, decided at the field operating point."""
    results = []
    for i, row in enumerate(np.asarray(probabilities, np.float64)):
        top = int(row.argmax())
        prediction = Prediction(labels[top], float(row[top]), ((labels[top], float(row[top])),),
                                tuple(float(v) for v in row), 0.0)
        results.append(FieldResult(str(i), "", prediction, None, True, None, decide(row, labels, point)))
    return results


def choose_point(probabilities: np.ndarray, truth: Sequence[int], labels: Sequence[str], target: float,
                 subset: str) -> OperatingPoint:
    return choose_operating_point(probabilities, np.asarray(truth), labels, target, chosen_on=subset)


def choose_sample_rule(relpaths: Sequence[str], truth: Sequence[int], probabilities: np.ndarray,
                       labels: Sequence[str], point: OperatingPoint, target: float, subset: str,
                       groups: dict | None = None, size: int = FIELDS_PER_SAMPLE) -> SampleRule:
    """The sample threshold and agreement requirement, with the sample-level numbers they reached."""
    samples = pseudo_samples(relpaths, truth, groups, size)
    sample_truth = np.array([truth[members[0]] for members in samples])
    benign = benign_index(labels)
    if len(samples) < 2 or (sample_truth == benign).all() or (sample_truth != benign).all():
        raise UsageError(f"choosing the sample rule needs benign and malignant pseudo-samples in {subset}, got "
                         f"{len(samples)} samples ({int((sample_truth != benign).sum())} malignant)")
    fields = field_results(probabilities, labels, point)
    merged = np.stack([aggregate_probabilities([probabilities[i] for i in members]) for members in samples])
    # With few pseudo-samples whose malignant scores all sit near 1, the highest threshold reaching the target
    # is the lowest of those scores (0.96 on the real data): it would call a sample benign on evidence that
    # makes every single field "B-ALL suspected". The sample never asks for more than one field does.
    sample_point = choose_operating_point(merged, sample_truth, labels, target, chosen_on=subset)
    threshold = min(sample_point.threshold, point.threshold)
    where = f"{subset} pseudo-samples" + (" (patient groups)" if groups else f" of {size} consecutive fields")
    rule = None
    for agreement in AGREEMENT_CHOICES:
        rule = SampleRule(threshold=threshold, min_fields=MIN_FIELDS, min_agreement=agreement,
                          chosen_on=where, fields_per_sample=None if groups else size, target_sensitivity=target)
        verdicts = [aggregate([fields[i] for i in members], labels, rule) for members in samples]
        scored = score_verdicts(verdicts, sample_truth, labels)
        if scored["inconclusive"] <= MAX_INCONCLUSIVE:
            break
    return SampleRule(**{**rule.to_dict(), **scored, "samples": len(samples)})


def score_verdicts(verdicts: Sequence[SampleVerdict], truth: Sequence[int], labels: Sequence[str]) -> dict:
    """Sample-level sensitivity, specificity, accuracy and subtype accuracy over the conclusive samples."""
    benign = benign_index(labels)
    called = [(v, t) for v, t in zip(verdicts, truth) if v.verdict != VERDICT_INCONCLUSIVE]
    malignant = [v.verdict == VERDICT_MALIGNANT for v, t in called if t != benign]
    benign_ok = [v.verdict == VERDICT_BENIGN for v, t in called if t == benign]
    subtype = [v.subtype == labels[t] for v, t in called if t != benign]
    ratio = (lambda xs: float(np.mean(xs)) if xs else None)
    return {"sensitivity": ratio(malignant), "specificity": ratio(benign_ok),
            "accuracy": ratio(malignant + benign_ok), "subtype_accuracy": ratio(subtype),
            "inconclusive": float(np.mean([v.verdict == VERDICT_INCONCLUSIVE for v in verdicts]))}


def operating_sections(relpaths: Sequence[str], truth: Sequence[int], probabilities: np.ndarray,
                       labels: Sequence[str], target: float, subset: str, groups: dict | None = None,
                       trained: OperatingPoint | None = None) -> dict:
    """model.json's "operating_point" (the one training chose for this model, `trained`, when it was chosen
    for the same target; else chosen on the check subset) and "sample_rule" (chosen on the check subset),
    with what the field point reaches on the check subset through the converted model."""
    use_trained = trained is not None and trained.target_sensitivity == target
    point = trained if use_trained else choose_point(probabilities, truth, labels, target, subset)
    rule = choose_sample_rule(relpaths, truth, probabilities, labels, point, target, subset, groups)
    reached = point_at(point.threshold, malignant_scores(probabilities, labels),
                       np.asarray(truth) != benign_index(labels), target, subset)
    sections = {"operating_point": point.to_dict(), "sample_rule": rule.to_dict(),
                "operating_point_check": {"subset": subset, "sensitivity": reached.sensitivity,
                                          "specificity": reached.specificity}}
    if trained is not None and not use_trained:
        sections["operating_note"] = (f"the training operating point was for sensitivity {trained.target_sensitivity}, "
                                      f"not {target}: chosen on {subset} instead")
    return sections


def split_groups(split) -> dict | None:
    """path -> patient/slide group when the split records them (meta "groups" as {group: [paths]})."""
    groups = (getattr(split, "meta", None) or {}).get("groups")
    if not isinstance(groups, dict):
        return None
    return {path: str(name) for name, paths in groups.items() if isinstance(paths, list) for path in paths}


def markdown(manifest: dict) -> str:
    """report.md section: both operating points and what they reached."""
    point, rule = manifest.get("operating_point"), manifest.get("sample_rule")
    if not point:
        return ""
    pct = (lambda v: "n/a" if v is None else f"{v:.2%}")
    lines = ["## Operating point (malignant vs benign)", "",
             f"- Field level: \"B-ALL suspected\" when 1 - p(Benign) >= {point['threshold']:.4f}, chosen on "
             f"{point['chosen_on']} for malignant sensitivity >= {point['target_sensitivity']}: sensitivity "
             f"{pct(point['sensitivity'])}, benign specificity {pct(point['specificity'])} "
             f"({point['n_malignant']} malignant, {point['n_benign']} benign images)."]
    reached = manifest.get("operating_point_check")
    if reached:
        lines.append(f"- At that threshold on the {reached['subset']} check images through this converted model: "
                     f"sensitivity {pct(reached['sensitivity'])}, benign specificity {pct(reached['specificity'])}.")
    if rule:
        lines.append(f"- Sample level ({rule['chosen_on']}, {rule['samples']} samples): mean log-probability over "
                     f"at least {rule['min_fields']} usable fields, threshold {rule['threshold']:.4f}, agreement >= "
                     f"{rule['min_agreement']:.0%}: sensitivity {pct(rule['sensitivity'])}, specificity "
                     f"{pct(rule['specificity'])}, subtype accuracy {pct(rule['subtype_accuracy'])}, inconclusive "
                     f"{pct(rule['inconclusive'])}.")
    return "\n".join(lines + [""])


def sections_for(predictions, split, subset: str, labels: Sequence[str], target: float,
                 trained: OperatingPoint | None = None) -> dict:
    """The model.json sections from the accuracy check's predictions, or "operating_note" saying why there are none.

    A model without a Benign class, or a check subset without both sides, has no malignant/benign
    operating point: the device then decides near argmax, and the note says so.
    """
    try:
        return operating_sections(predictions.paths, list(predictions.truth), predictions.quantized_probabilities,
                                  labels, target, subset, split_groups(split), trained)
    except (UsageError, ModelError) as err:
        return {"operating_note": f"no operating point chosen: {err}"}
