"""The model card in words: each figure of a model's manifest rounded for people, with what it means and how
it was measured.

One rendering for the three places a person reads it: `allx-edge serve`'s Model page, `allx-edge info`
and `allx report`. Figures get 3 significant digits (allx.text.significant) and shares their counts
("100% (256 of 256)"); model.json keeps full precision. Where a section carries an evidence record
({"on", "grouping", "groups", "folds", "images", "interval"}) the line says how the figure was
measured from it; without one it says what the section itself records.
"""

from __future__ import annotations

from dataclasses import dataclass

from allx.decision import VERDICT_INCONCLUSIVE
from allx.edge_runner.manifest_check import PASSED
from allx.evidence import Evidence
from allx.text import setting, share, significant

SUBSET_WORDS = {"val": "validation", "test": "test", "train": "training", "train+val": "training and validation"}


@dataclass(frozen=True)
class CardLine:
    topic: str
    words: str


def card_lines(document: dict) -> tuple[CardLine, ...]:
    """The card of a manifest (model.json or the copy embedded in the .tflite); {} gives the bare-model card."""
    check, point = section(document, "check"), section(document, "operating_point")
    evidence = section(document, "check_evidence")  # how the check's accuracy and fidelity relate to training
    lines = [CardLine("Accuracy check", check_words(check, section(evidence, "accuracy")) if check else
                      "none recorded (a bare .tflite, not checked against its float model)")]
    if check and section(check, "fidelity"):
        lines.append(CardLine("Fidelity", fidelity_words(check["fidelity"], document.get("precision"),
                                                         section(evidence, "fidelity"))))
    lines.append(CardLine("Operating point", point_words(point) if point else
                          "none recorded: B-ALL suspected when 1 - p(Benign) >= 0.5"))
    rule = section(document, "sample_rule")
    lines.append(CardLine("Sample rule", rule_words(rule) if rule else
                          "defaults (none stored): one verdict from at least 3 usable fields"))
    lines.append(CardLine("Unlike training", ood_words(section(document, "ood"), document.get("ood_note"))))
    lines.append(CardLine("Quality check", quality_words(section(document, "quality"))))
    if expected_words(section(document, "expected_rates")):
        lines.append(CardLine("Expected on site", expected_words(section(document, "expected_rates"))))
    limits = document.get("limits") if isinstance(document, dict) else None
    if isinstance(limits, list) and limits:
        lines.append(CardLine("Limits", " ".join(str(limit) for limit in limits)))
    return tuple(lines)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def section(document: dict, key: str) -> dict:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def subset_words(code) -> str:
    return SUBSET_WORDS.get(str(code), str(code or "held-out"))


def percent_of(fraction, total, noun: str = "") -> str:
    """A measured fraction of `total` items as a share with its counts (the count rounded back from it)."""
    if not isinstance(fraction, (int, float)) or not isinstance(total, int) or total <= 0:
        return "-" if not isinstance(fraction, (int, float)) else f"{significant(100.0 * fraction)}%"
    return share(round(fraction * total), total, noun)


def evidence_words(record: dict) -> str:
    """How a figure was measured, from its evidence record (allx.evidence words it); "" when there is none."""
    evidence = Evidence.from_dict(record)
    return "" if evidence is None else f"measured {evidence.words()}"


def expected_words(rates: dict) -> str:
    """The rates a site should see (model.json "expected_rates", the drift monitor's baseline), each with how
    it was measured."""
    words = []
    for name, record in rates.items():
        if isinstance(record, dict) and is_number(record.get("rate")):
            unit = "samples" if name in ("inconclusive_rate", "malignant_rate") else "fields"
            measured = evidence_words(section(record, "evidence"))
            words.append(f"{name.removesuffix('_rate').replace('_', ' ')} {setting(100 * record['rate'])}% of "
                         f"{unit}" + (f" ({measured})" if measured else ""))
    return "; ".join(words)


def check_words(check: dict, evidence: dict | None = None) -> str:
    """The check's verdict in words; `evidence` (model.json "check_evidence") says how its images relate to training."""
    precision, images = check.get("precision") or "the converted model", check.get("images")
    subset = subset_words(check.get("subset"))
    disagreements = check.get("disagreements")
    agreeing = images - disagreements if isinstance(images, int) and isinstance(disagreements, int) else None
    counted = (f"{agreeing:,} of {images:,} {subset} images" if agreeing is not None
               else f"{percent_of(check.get('agreement'), images)} of the {subset} images")
    agree = f"{precision} agrees with float32 on {counted}"
    accuracy = ""
    floating, quantized = section(check, "float"), section(check, "quantized")
    if "accuracy" in floating and "accuracy" in quantized:
        accuracy = (f"; accuracy {percent_of(floating['accuracy'], images)} float32, "
                    f"{percent_of(quantized['accuracy'], images)} {precision}")
    limits = section(check, "thresholds")
    limit = f" (limit: a drop of at most {setting(limits['max_drop_pp'])} pp)" if "max_drop_pp" in limits else ""
    failures = check.get("failures") or ["see model.json"]
    status = PASSED if check.get(PASSED) else "FAILED: " + "; ".join(map(str, failures))
    measured = evidence_words(evidence or section(check, "evidence"))
    return f"{agree}{accuracy}{limit}; {status}" + (f"; {measured}" if measured else "")


def fidelity_words(fidelity: dict, precision, evidence: dict | None = None) -> str:
    images, disagreements = fidelity.get("images"), fidelity.get("disagreements")
    same = (f"{images - disagreements:,} of {images:,}" if isinstance(images, int) and isinstance(disagreements, int)
            else percent_of(fidelity.get("agreement"), images))
    bound = fidelity.get("agreement_bound")
    measured = evidence_words(evidence or {})
    return (f"{precision or 'the converted model'} gives float32's label on {same} "
            f"{subset_words(fidelity.get('subsets'))} images"
            + (f" (lower bound {significant(100 * bound)}%, limit {setting(100 * fidelity['min_agreement'])}%)"
               if isinstance(bound, (int, float)) and isinstance(fidelity.get("min_agreement"), (int, float)) else "")
            + (f"; {measured}" if measured else ""))


def point_words(point: dict) -> str:
    text = f"B-ALL suspected when 1 - p(Benign) >= {significant(point.get('threshold'))}"
    target, malignant, benign = point.get("target_sensitivity"), point.get("n_malignant"), point.get("n_benign")
    if isinstance(target, (int, float)):
        text += f": sensitivity >= {setting(100 * target)}%"
    if is_number(point.get("sensitivity")):
        text += f", measured {percent_of(point['sensitivity'], malignant, 'malignant images')}"
    if isinstance(point.get("specificity"), (int, float)):
        text += f"; specificity {percent_of(point['specificity'], benign, 'benign images')}"
    measured = evidence_words(section(point, "evidence"))
    chosen = f"chosen on {subset_words(point['chosen_on'])}" if point.get("chosen_on") else ""
    return text + "".join(f"; {part}" for part in (chosen, measured) if part)


def rule_words(rule: dict) -> str:
    text = (f"one verdict from at least {rule.get('min_fields', 3)} usable fields: mean log-probability, "
            f"B-ALL suspected at >= {significant(rule.get('threshold'))}; inconclusive when fewer than "
            f"{setting(100 * rule.get('min_agreement', 0.5))}% of the fields agree or more than "
            f"{setting(100 * rule.get('max_set_aside', 0.5))}% are set aside")
    samples = rule.get("samples")
    if isinstance(samples, int) and samples > 0:
        figures = [f"{name} {significant(100 * rule[key])}%" for key, name in
                   (("sensitivity", "sensitivity"), ("specificity", "specificity"),
                    (VERDICT_INCONCLUSIVE, VERDICT_INCONCLUSIVE))
                   if isinstance(rule.get(key), (int, float))]
        text += f". On {samples:,} {rule.get('chosen_on') or 'pseudo-samples'}: {', '.join(figures)}"
    measured = evidence_words(section(rule, "evidence"))
    return text + (f"; {measured}" if measured else "")


def ood_words(ood: dict, note) -> str:
    if not ood:
        note = str(note or "").removeprefix("off:").strip()
        return f"off: {note}" if note else "off: no calibration in the model's manifest"
    text = f"a field is flagged when its score is above {significant(ood.get('threshold'))}"
    if ood.get("score"):
        text += f" (score: {str(ood['score']).split(';')[0]})"
    if isinstance(ood.get("flag_rate"), (int, float)):
        text += f"; set to flag {setting(100 * ood['flag_rate'])}% of {subset_words(ood.get('held_out_subset'))} images"
    if isinstance(ood.get("held_out_flagged"), (int, float)):
        text += f", measured {percent_of(ood['held_out_flagged'], ood.get('held_out_images'), 'held-out images')}"
    if isinstance(ood.get("fit_images"), int):
        text += f"; statistics fitted on {ood['fit_images']:,} training images"
    measured = evidence_words(section(ood, "evidence"))
    return text + (f"; {measured}" if measured else "") + class_flagged_words(section(ood, "class_held_out_flagged"))


def class_flagged_words(by_class: dict) -> str:
    """"; per class: Benign 3.7% (2.1%-5.6%), ..." from the ood section's out-of-group shares per class."""
    words = []
    for name, record in by_class.items():
        if isinstance(record, dict) and is_number(record.get("rate")):
            evidence = Evidence.from_dict(record.get("evidence"))
            interval = "" if evidence is None or evidence.interval is None else (
                f" ({significant(100 * evidence.interval[0])}%-{significant(100 * evidence.interval[1])}%)")
            words.append(f"{name} {significant(100 * record['rate'])}%{interval}")
    return f"; per class: {', '.join(words)}" if words else ""


def quality_words(quality: dict) -> str:
    if not quality:
        return "off: no quality limits in the model's manifest"
    limits = []
    if isinstance(quality.get("focus_min"), (int, float)):
        limits.append(f"blurred (focus below {significant(quality['focus_min'])})")
    if isinstance(quality.get("shadows_max"), (int, float)):
        limits.append(f"under-exposed (over {setting(100 * quality['shadows_max'])}% clipped shadows)")
    if isinstance(quality.get("highlights_max"), (int, float)):
        limits.append(f"over-exposed (over {setting(100 * quality['highlights_max'])}% clipped highlights)")
    if isinstance(quality.get("colour_max"), (int, float)):
        limits.append(f"stained unlike training (colour more than {significant(quality['colour_max'])} standard "
                      "deviations from the training mean)")
    text = "a field is set aside when " + (", ".join(limits) if limits else "(no limits recorded)")
    images = quality.get("images")
    if isinstance(images, int) and images > 0:
        text += (f"; limits from {images:,} {subset_words(quality.get('calibrated_on') or 'train')} images"
                 + (f", of which they set aside {percent_of(quality['rejected_share'], images)}"
                    if isinstance(quality.get("rejected_share"), (int, float)) else ""))
    return text


def bench_lines(bench: dict) -> tuple[CardLine, ...]:
    """The device's own `allx-edge bench` figures (the first result and its machine), rounded."""
    machine, latency = section(bench, "machine"), section(bench, "latency_ms")
    runs = f" over {bench['runs']:,} runs" if isinstance(bench.get("runs"), int) else ""
    lines = [CardLine("Machine", f"{machine.get('cpu_model') or 'unknown CPU'} ({machine.get('cores', '?')} cores)"),
             CardLine("Latency", ", ".join(f"{name} {significant(latency[name])} ms" for name in ("p50", "p99", "mean")
                                           if isinstance(latency.get(name), (int, float)))
                      + f" (bare invoke{runs})"),
             CardLine("Throughput", f"{significant(bench.get('throughput_ips'))} images/s, "
                                    f"{bench.get('threads', '?')} thread(s), {bench.get('delegate') or 'cpu'}")]
    if isinstance(bench.get("peak_rss_mb"), (int, float)):
        lines.append(CardLine("Peak memory", f"{significant(bench['peak_rss_mb'])} MB (the bench process's own "
                                             "high-water mark)"))
    return tuple(lines + [CardLine("Measured", str(bench.get("created") or "unknown"))])
