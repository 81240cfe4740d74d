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

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from allx.decision import (UNLIKE_TRAINING, VERDICT_BENIGN, VERDICT_INCONCLUSIVE, VERDICT_MALIGNANT, OperatingPoint,
                           benign_index, choose_operating_point, decide, malignant_scores, point_at)
from allx.edge_runner.model import Prediction
from allx.edge_runner.sample import FieldResult, SampleRule, SampleVerdict, aggregate, aggregate_probabilities
from allx.layout import SplitKind
from allx.convert.gate import binomial_interval
from allx.convert.out_of_group import GroupFolds
from allx.errors import ModelError, UsageError
from allx.evidence import FILE_BLOCKS, OUT_OF_GROUP, PATIENT_GROUPS, SHARES_GROUPS, Evidence, rate_record
from allx.text import markdown_table
from allx.train.groups import file_order

FIELDS_PER_SAMPLE = 5
MIN_FIELDS = 3
AGREEMENT_CHOICES = (0.8, 0.6, 0.5, 0.0)  # strictest first
MAX_INCONCLUSIVE = 0.05
# Weights a field flagged unlike training may get in the aggregate, in the order ties are broken: the most
# evidence kept first. A flagged field is discounted only where the cross-fitted pseudo-samples show that
# discounting gives fewer wrong verdicts or fewer inconclusive samples; when they cannot tell two weights
# apart, the field keeps its full say (discounting it would throw away evidence for no measured gain, and a
# discount turns agreeing fields into "fields disagree" once the flagged ones lower the agreement).
FLAGGED_WEIGHTS = (1.0, 0.5, 0.0)
CHOICE_RULE = ("fewest wrong verdicts, then fewest inconclusive samples; a tie keeps the larger weight of a flagged "
               "field (a field is discounted only where that is measured to help)")


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
        members = sorted(members, key=lambda i: file_order(relpaths[i]))
        if group is not None:
            samples.append(members)
            continue
        samples += [members[start:start + size] for start in range(0, len(members), size)
                    if len(members[start:start + size]) >= MIN_FIELDS]
    return samples


def field_results(probabilities: np.ndarray, labels: Sequence[str], point: OperatingPoint,
                  flags: FieldFlags | None = None, flagged_weight: float = 0.0) -> list[FieldResult]:
    """Rows as FieldResults decided at the field operating point, set aside or flagged as the device would
    (edge_runner.sample.SampleSession.add_pixels): poor quality is set aside; a field unlike training is
    set aside when `flagged_weight` is 0, else kept and flagged."""
    results = []
    for i, row in enumerate(np.asarray(probabilities, np.float64)):
        top = int(row.argmax())
        prediction = Prediction(labels[top], float(row[top]), ((labels[top], float(row[top])),),
                                tuple(float(v) for v in row), 0.0)
        poor = flags is not None and bool(flags.poor_quality[i])
        unlike = flags is not None and bool(flags.unlike_training[i]) and not poor
        reason = "poor quality" if poor else (UNLIKE_TRAINING if unlike and not flagged_weight else None)
        results.append(FieldResult(str(i), "", prediction, None, reason is None, reason, decide(row, labels, point),
                                   unlike and reason is None))
    return results


@dataclass(frozen=True)
class FieldFlags:
    """Per image: what the device's checks would say of it (out of group: by limits fitted without its fold)."""

    unlike_training: np.ndarray  # bool: the out-of-distribution flag
    poor_quality: np.ndarray  # bool: rejected by the quality limits


def choose_point(probabilities: np.ndarray, truth: Sequence[int], labels: Sequence[str], target: float,
                 subset: str) -> OperatingPoint:
    return choose_operating_point(probabilities, np.asarray(truth), labels, target, chosen_on=subset)


def choose_sample_rule(relpaths: Sequence[str], truth: Sequence[int], probabilities: np.ndarray,
                       labels: Sequence[str], point: OperatingPoint, target: float, subset: str,
                       groups: dict | None = None, size: int = FIELDS_PER_SAMPLE,
                       flags: FieldFlags | None = None) -> tuple[SampleRule, tuple[dict, ...]]:
    """The sample threshold, the agreement requirement and the weight of a flagged field, with the
    sample-level numbers they reached, and the trade-off table of every (weight, agreement) tried.

    Per weight, the strictest agreement leaving at most MAX_INCONCLUSIVE of the pseudo-samples
    inconclusive; between weights, CHOICE_RULE (ties go to FLAGGED_WEIGHTS' order, the largest weight
    first). The chosen row of the table says "chosen". Without `flags` (no out-of-distribution or quality
    evidence) only 0 is tried."""
    samples = pseudo_samples(relpaths, truth, groups, size)
    sample_truth = np.array([truth[members[0]] for members in samples])
    benign = benign_index(labels)
    if len(samples) < 2 or (sample_truth == benign).all() or (sample_truth != benign).all():
        raise UsageError(f"choosing the sample rule needs benign and malignant pseudo-samples in {subset}, got "
                         f"{len(samples)} samples ({int((sample_truth != benign).sum())} malignant)")
    merged = np.stack([aggregate_probabilities([probabilities[i] for i in members]) for members in samples])
    # With few pseudo-samples whose malignant scores all sit near 1, the highest threshold reaching the target
    # is the lowest of those scores (0.96 on the real data): it would call a sample benign on evidence that
    # makes every single field "B-ALL suspected". The sample never asks for more than one field does.
    sample_point = choose_operating_point(merged, sample_truth, labels, target, chosen_on=subset)
    threshold = min(sample_point.threshold, point.threshold)
    where = f"{subset} pseudo-samples" + (" (patient groups)" if groups else f" of {size} consecutive fields")
    table, best = [], None
    for weight in (FLAGGED_WEIGHTS if flags is not None else (0.0,)):
        fields = field_results(probabilities, labels, point, flags, weight)
        for agreement in AGREEMENT_CHOICES:
            rule = SampleRule(threshold=threshold, min_fields=MIN_FIELDS, min_agreement=agreement,
                              flagged_weight=weight, chosen_on=where, fields_per_sample=None if groups else size,
                              target_sensitivity=target)
            verdicts = [aggregate([fields[i] for i in members], labels, rule) for members in samples]
            scored = score_verdicts(verdicts, sample_truth, labels)
            table.append({"flagged_weight": weight, "min_agreement": agreement, "samples": len(samples),
                          "inconclusive": scored["inconclusive"], "wrong": scored["wrong"]})
            if scored["inconclusive"] <= MAX_INCONCLUSIVE or agreement == AGREEMENT_CHOICES[-1]:
                key = (scored["wrong"], scored["inconclusive"])
                if best is None or key < best[0]:
                    best = (key, rule, scored, len(table) - 1)
                break
    _, rule, scored, row = best
    table[row]["chosen"] = True
    return SampleRule(**{**rule.to_dict(), **scored, "samples": len(samples)}), tuple(table)


def score_verdicts(verdicts: Sequence[SampleVerdict], truth: Sequence[int], labels: Sequence[str]) -> dict:
    """Sample-level sensitivity, specificity, accuracy and subtype accuracy over the conclusive samples."""
    benign = benign_index(labels)
    called = [(v, t) for v, t in zip(verdicts, truth) if v.verdict != VERDICT_INCONCLUSIVE]
    malignant = [v.verdict == VERDICT_MALIGNANT for v, t in called if t != benign]
    benign_ok = [v.verdict == VERDICT_BENIGN for v, t in called if t == benign]
    subtype = [v.subtype == labels[t] for v, t in called if t != benign]
    ratio = (lambda xs: float(np.mean(xs)) if xs else None)
    wrong = sum(not ok for ok in malignant + benign_ok)
    return {"sensitivity": ratio(malignant), "specificity": ratio(benign_ok),
            "accuracy": ratio(malignant + benign_ok), "subtype_accuracy": ratio(subtype),
            "inconclusive": float(np.mean([v.verdict == VERDICT_INCONCLUSIVE for v in verdicts])),
            "wrong": wrong / len(verdicts) if verdicts else 0.0}


@dataclass(frozen=True)
class CrossFitted:
    """Every train+val image scored as a new patient's would be (convert.out_of_group): its out-of-fold
    probabilities, and what the device's checks would say of it."""

    folds: GroupFolds
    probabilities: np.ndarray
    flags: FieldFlags

    @property
    def where(self) -> str:
        return f"train+val, cross-fitted over {self.folds.folds} group folds"


def operating_sections(relpaths: Sequence[str], truth: Sequence[int], probabilities: np.ndarray,
                       labels: Sequence[str], target: float, subset: str, groups: dict | None = None,
                       trained: OperatingPoint | None = None, crossfit: CrossFitted | None = None,
                       subset_evidence: Evidence | None = None) -> dict:
    """model.json's "operating_point" (the one training chose for this model, `trained`, when it was chosen
    for the same target; else chosen on the cross-fitted train+val probabilities, or on the check subset
    without them), "sample_rule" (on cross-fitted pseudo-samples, else the check subset's), and what the
    field point reaches on the check subset through the converted model; each with its evidence record."""
    benign = benign_index(labels)
    use_trained = trained is not None and trained.target_sensitivity == target
    if crossfit is not None:
        where, choose_on = crossfit.where, (crossfit.folds.relpaths, list(crossfit.folds.labels), crossfit.probabilities)
    else:
        where, choose_on = subset, (relpaths, list(truth), probabilities)
    point = trained if use_trained else choose_point(choose_on[2], choose_on[1], labels, target, where)
    rule, table = choose_sample_rule(*choose_on, labels, point, target, where, groups,
                                     flags=None if crossfit is None else crossfit.flags)
    reached = point_at(point.threshold, malignant_scores(probabilities, labels), np.asarray(truth) != benign,
                       target, subset)
    sections = {"operating_point": {**point.to_dict(), "evidence": point_evidence(point, crossfit, subset_evidence)},
                "sample_rule": {**rule.to_dict(), "evidence": rule_evidence(rule, crossfit, subset_evidence)},
                "sample_rule_tradeoff": list(table),
                "operating_point_check": {"subset": subset, "sensitivity": reached.sensitivity,
                                          "specificity": reached.specificity,
                                          "evidence": with_interval(subset_evidence, reached.specificity,
                                                                    int(np.sum(np.asarray(truth) == benign)))}}
    if crossfit is not None:
        sections["expected_rates"] = {**field_rates(crossfit), **sample_rates(crossfit, labels, point, rule, groups)}
    if trained is not None and not use_trained:
        sections["operating_note"] = (f"the training operating point was for sensitivity {trained.target_sensitivity}, "
                                      f"not {target}: chosen on {where} instead")
    return sections


def field_rates(crossfit: CrossFitted) -> dict:
    """model.json "expected_rates" of single fields: shares flagged unlike training and rejected for quality."""
    folds = crossfit.folds
    return {"ood_rate": rate_record(crossfit.flags.unlike_training, folds.groups, folds.evidence()),
            "quality_rate": rate_record(crossfit.flags.poor_quality, folds.groups, folds.evidence())}


def sample_rates(crossfit: CrossFitted, labels: Sequence[str], point: OperatingPoint, rule: SampleRule,
                 groups: dict | None) -> dict:
    """model.json "expected_rates" of samples under the shipped rule, on the cross-fitted pseudo-samples."""
    folds = crossfit.folds
    samples = pseudo_samples(folds.relpaths, list(folds.labels), groups, rule.fields_per_sample or FIELDS_PER_SAMPLE)
    fields = field_results(crossfit.probabilities, labels, point, crossfit.flags, rule.flagged_weight)
    verdicts = [aggregate([fields[i] for i in members], labels, rule).verdict for members in samples]
    sample_groups = [folds.groups[members[0]] for members in samples]
    evidence, images = folds.evidence(), sum(len(members) for members in samples)
    return {"inconclusive_rate": rate_record([v == VERDICT_INCONCLUSIVE for v in verdicts], sample_groups, evidence,
                                             images=images),
            "malignant_rate": rate_record([v == VERDICT_MALIGNANT for v in verdicts], sample_groups, evidence, images=images)}


def with_interval(evidence: Evidence | None, share: float | None, trials: int) -> dict | None:
    """The evidence record with the exact binomial interval of `share` out of `trials`."""
    if evidence is None:
        return None
    interval = None if share is None else binomial_interval(int(round(share * trials)), trials)
    return replace(evidence, images=trials, interval=interval).to_dict()


def point_evidence(point: OperatingPoint, crossfit: CrossFitted | None, subset_evidence: Evidence | None) -> dict | None:
    """The field point's specificity: out of group when chosen by train.crossfit or on cross-fitted probabilities."""
    if point.chosen_on and "cross-fitted" in point.chosen_on and crossfit is not None:
        return with_interval(crossfit.folds.evidence(), point.specificity, point.n_benign)
    return with_interval(subset_evidence, point.specificity, point.n_benign)


def rule_evidence(rule: SampleRule, crossfit: CrossFitted | None, subset_evidence: Evidence | None) -> dict | None:
    """The sample rule's inconclusive share, with its exact interval over the pseudo-samples (their images
    are those of the fields: up to fields_per_sample each)."""
    evidence = crossfit.folds.evidence() if crossfit is not None else subset_evidence
    if evidence is None:
        return None
    interval = binomial_interval(int(round((rule.inconclusive or 0) * rule.samples)), rule.samples)
    return replace(evidence, interval=interval).to_dict()


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
                     f"{pct(rule['inconclusive'])}; a field flagged unlike training counts at weight "
                     f"{rule.get('flagged_weight', 0):g} (0: set aside).")
    table = manifest.get("sample_rule_tradeoff") or []
    if table:
        lines += ["", "Sample rules tried (weight of a flagged field, agreement required) on the same pseudo-samples; "
                  f"chosen: {CHOICE_RULE}.",
                  ""]
        lines += markdown_table(("flagged weight", "agreement >=", "inconclusive samples", "wrong verdicts", "chosen"), (
            (f"{row['flagged_weight']:g}", f"{row['min_agreement']:.0%}", pct(row["inconclusive"]), pct(row["wrong"]),
             "yes" if row.get("chosen") else "") for row in table))
    return "\n".join(lines + [""])


def sections_for(predictions, split, subset: str, labels: Sequence[str], target: float,
                 trained: OperatingPoint | None = None, crossfit: CrossFitted | None = None) -> dict:
    """The model.json sections from the cross-fitted train+val evidence (else the accuracy check's
    predictions), or "operating_note" saying why there are none.

    A model without a Benign class, or images without both sides, has no malignant/benign operating
    point: the device then decides near argmax, and the note says so.
    """
    try:
        return operating_sections(predictions.paths, list(predictions.truth), predictions.quantized_probabilities,
                                  labels, target, subset, split_groups(split), trained, crossfit,
                                  subset_evidence(split, predictions.paths))
    except (UsageError, ModelError) as err:
        return {"operating_note": f"no operating point chosen: {err}"}


def subset_evidence(split, paths: Sequence[str]) -> Evidence:
    """How a figure measured on `paths` (a subset of the split) relates to training: out of group only when
    the split kept patient groups or file-number blocks whole; a random or near-duplicate split shares patients."""
    code = (split.kind if split is not None else SplitKind.IMAGE).value
    on = OUT_OF_GROUP if code in (PATIENT_GROUPS, FILE_BLOCKS) else SHARES_GROUPS
    groups = split_groups(split)
    count = len({groups.get(p, p) for p in paths}) if groups else len(paths)
    return Evidence(on, code, count, 0, len(paths))
