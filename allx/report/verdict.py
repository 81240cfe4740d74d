"""The plain-language part: one verdict per device (speed, memory, what quantization cost) and the evidence's limits."""

from __future__ import annotations

from dataclasses import dataclass

from allx.report.inputs import AccuracyCheck, BenchRow, Inputs
from allx.text import (about, images_per_hour, millis, near_duplicates_kept_together, percent, points)


@dataclass(frozen=True)
class Verdict:
    subject: str  # a device, or "Accuracy" for a check no benchmarked model matches
    text: str
    ok: bool  # False when a converted model failed its accuracy check


def device_names(rows) -> dict[tuple[str, str], str]:
    """(source file, device) -> the name shown; the file is added when two files name the same device."""
    sources: dict[str, set] = {}
    for row in rows:
        sources.setdefault(row.device, set()).add(row.source)
    return {(row.source, row.device): row.device if len(sources[row.device]) == 1 else f"{row.device} ({row.source})"
            for row in rows}


def matching_check(row: BenchRow, checks: tuple[AccuracyCheck, ...]) -> AccuracyCheck | None:
    """The check of this very model file, else the only check of the row's precision; None when unsure."""
    same_file = [check for check in checks if check.model_file == row.model]
    same_precision = [check for check in checks if row.precision and check.precision == row.precision]
    if len(same_file) == 1:
        return same_file[0]
    return same_precision[0] if len(same_precision) == 1 and not same_file else None


def make_verdicts(inputs: Inputs) -> list[Verdict]:
    """One verdict per device, then one per conversion check that no benchmarked model matched."""
    names = device_names(inputs.bench)
    by_device: dict[str, list[BenchRow]] = {}
    for row in inputs.bench:
        by_device.setdefault(names[(row.source, row.device)], []).append(row)
    verdicts = [device_verdict(name, rows, inputs.checks) for name, rows in by_device.items()]
    matched = {id(matching_check(row, inputs.checks)) for row in inputs.bench}
    verdicts += [Verdict("Accuracy", check_sentence(check), check.passed)
                 for check in inputs.checks if id(check) not in matched]
    return verdicts


def device_verdict(name: str, rows: list[BenchRow], checks: tuple[AccuracyCheck, ...]) -> Verdict:
    sentences, ok = [], True
    for row in rows:
        bounded = row.p95_from == "p99"  # p99 stands in for p95: latency an upper bound, the rate a lower one
        rate = about(images_per_hour(row.p95_ms), down=bounded)
        setup = f"{row.precision or 'unknown precision'}, {row.delegate}, {row.threads or '?'} threads"
        sentence = (f"{row.model} ({setup}): "
                    f"{'at least' if bounded else 'about'} {rate} images per hour at p95 "
                    f"{'<= ' if bounded else ''}{millis(row.p95_ms)} ms (p50 {millis(row.p50_ms)} ms)")
        if row.peak_rss_mb is not None:
            sentence += f", peak memory {row.peak_rss_mb:.0f} MB"
        check = matching_check(row, checks)
        if check is not None:
            sentence += "; " + check_sentence(check)
            ok = ok and check.passed
        sentences.append(sentence + ".")
    if len(rows) > 1:
        fast, slow = min(rows, key=lambda r: r.p50_ms), max(rows, key=lambda r: r.p50_ms)
        sentences.append(f"{fast.model} is {slow.p50_ms / fast.p50_ms:.1f}x faster than {slow.model} (p50).")
    return Verdict(name, " ".join(sentences), ok)


def check_sentence(check: AccuracyCheck) -> str:
    """What quantization cost, in words, with the numbers behind it."""
    evidence = (f"float {percent(check.float_accuracy)} vs {check.precision} {percent(check.quantized_accuracy)}, "
                f"same answer on {percent(check.agreement)} of {check.images or '?'} {check.subset} images")
    if not check.passed:
        return (f"{check.precision} FAILED its accuracy check ({points(-check.drop_pp)} accuracy; {evidence}): "
                "do not deploy it")
    if check.drop_pp <= 0:
        return f"{check.precision} matches or beats the float model's accuracy ({evidence})"
    within = points(check.drop_pp, sign=False)
    return f"{check.precision} keeps accuracy within {within} of the float model ({evidence})"


def evidence_limits(inputs: Inputs) -> list[str]:
    """What the numbers do not show; always stated, since a clinic reads the verdict first."""
    split = split_limit((*inputs.evaluations, *inputs.checks, *inputs.cvs))
    limits = [split] if split else []
    limits += ["One hospital's data: the images come from a single hospital's data set (the Taleqani Hospital ALL "
               "set, Tehran, 89 patients, unless the files say otherwise), one staining protocol and one camera. "
               "Accuracy on another site's slides is unknown until it is checked on that site's own images.",
               "Decision support only: the classifier does not diagnose. A specialist reviews every case; flow "
               "cytometry remains the reference."]
    if inputs.bench:
        limits.append("Latency is the interpreter's own invoke() time after warm-up, on a fixed input; reading, "
                      "decoding and resizing images (and any camera) come on top unless an end-to-end figure is "
                      "shown. Peak memory is the benchmark process's peak so far, so a model benchmarked after "
                      "another in the same run can show the larger of the two.")
    if inputs.checks:
        limits.append("The float-vs-quantized comparison runs both models on the same images, so the difference "
                      "is measured directly; the interval on each accuracy shows how far a small subset can be off.")
    return limits


def split_limit(results) -> str | None:
    """Whether the accuracy figures could be inflated by near-duplicates straddling train and evaluation."""
    if not results:
        return None
    grouped = {item.source: near_duplicates_kept_together(item.split_kind) for item in results}
    if all(grouped.values()):
        return ("Near-duplicate images (neighbouring views of one slide, exact copies) were kept together in one "
                "subset, so they cannot leak from training into evaluation. The data has no patient IDs, so the "
                "evaluation is still per image, not per patient.")
    said = {True: "kept together", False: "not kept together", None: "not stated"}
    detail = "; ".join(f"{source}: {said[value]}" for source, value in grouped.items())
    return (f"Image-level evaluation: near-duplicate images were kept together only where a file says so ({detail}). "
            "Elsewhere, near-identical views of one slide may sit in both training and evaluation, and the accuracy "
            "may be optimistic. The data has no patient IDs: nothing here is a per-patient result.")
