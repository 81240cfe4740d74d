"""After deployment: the audit log's rows, window by window, against control limits with a stated false-alarm rate.

A new camera, a new stain batch, a dirty objective or a change in the patients shows first as more
fields flagged "unlike training images", more fields rejected by the quality check, more inconclusive
samples and more reviews that override the model. Every one of those is a row of the audit log. This
module reads the log as a stream (one row at a time from the SQLite cursor, never the whole log in
memory), keeps a few counters per sample (a review written days later still counts for its sample),
groups the samples into windows (N consecutive samples, or UTC days or ISO weeks of each sample's first
row) and judges each window on its own.

Why per-window binomial limits rather than CUSUM: the question a site, a cron job or a LIS asks is "is
the latest window out of control?" (exit code 3, the alarm in the page's header). A per-window test
answers exactly that with a false-alarm rate stated in advance, and it clears itself once the cause is
fixed; a CUSUM carries state from window to window, so its false-alarm rate is an average run length
that depends on every window's size and has to be simulated, and it keeps alarming after the fix.
A slow drift is the CUSUM's strength; benchmarks/monitor.py measures how late these limits see one.

The limit. Each alarmed rate is tested one-sided (only more flags, rejections, inconclusive samples or
overrides are bad news): a window with `count` of `n` alarms when P(K >= count) <= alpha. K follows the
beta-binomial predictive distribution: binomial over the window's n, with the expected rate itself
uncertain, Beta(k + 1/2, n0 - k + 1/2) (Jeffreys) from the k of n0 images it was measured on. A rate
measured on few images thus gives wider limits instead of false alarms, and a rate measured as 0
still allows the odd rejection. alpha = FAMILY_ALPHA / (rates judged in the window) (Bonferroni): a
window of an unchanged stream raises any alarm with probability at most 1%, about one false alarm in
two years of weekly windows (the goal: at most one per 52). That holds for independent fields; fields
of one smear are not quite independent, so benchmarks/monitor.py measures the rate on real smears.
malignant_rate is reported beside its expectation but never alarmed: it moves with the patients a
site sees as much as with the model.

Where the expectations come from, per rate, the first source that has it: the site's calibration
(site_calibration.json beside model.json: the rates on the site's own images), model.json
"expected_rates" (rates measured out of group, read by `declared_rates` only), then what model.json
already states (the OOD threshold's flag rate on held-out images, the quality limits' rejected share on
the training images, the sample rule's inconclusive share on validation pseudo-samples, 1 - the
conversion check's accuracy for overrides).
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable, Iterator

from allx import layout
from allx.edge_runner.audit import AuditLog
from allx.edge_runner.manifest_check import Manifest
from allx.edge_runner.model import resolve_model
from allx.decision import FIELD_RECORD, REVIEW_RECORD, SAMPLE_RECORD, VERDICT_INCONCLUSIVE, VERDICT_MALIGNANT
from allx.errors import DataError, UsageError
from allx.jsonio import Fields, read_json

OOD, QUALITY, INCONCLUSIVE_RATE, OVERRIDE, MALIGNANT_RATE = (
    "ood_rate", "quality_rate", "inconclusive_rate", "override_rate", "malignant_rate")
RATES = (OOD, QUALITY, INCONCLUSIVE_RATE, OVERRIDE, MALIGNANT_RATE)
ALARMED = (OOD, QUALITY, INCONCLUSIVE_RATE, OVERRIDE)
FAMILY_ALPHA = 0.01  # chance that a window of an unchanged stream raises any alarm
PERIODS = ("day", "week")
SITE, DECLARED, CARD = "site_calibration", "expected_rates", "model_card"  # where an expectation came from


@dataclass(frozen=True)
class Expected:
    """A rate the model should give on good images, and the evidence: n0 images (or samples) it was measured on."""

    rate: float
    n: int | None  # None: not stated (the limit then takes the rate as exact)
    source: str  # SITE, DECLARED or CARD
    evidence: str  # in words: what was measured on what

    def to_dict(self) -> dict:
        return {"rate": self.rate, "n": self.n, "from": self.source, "evidence": self.evidence}


@dataclass
class SampleTally:
    """What one sample's rows say, as counters: its fields, their flags and rejections, its verdict, its review."""

    sample_id: str
    first_utc: str
    fields: int = 0
    ood_checked: int = 0
    ood: int = 0
    quality_checked: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)  # quality reason code -> fields
    confidence_sum: float = 0.0
    scored: int = 0
    verdict: str | None = None  # the last verdict logged (the web page logs a running one)
    reviewed: bool = False  # a review of a conclusive verdict
    overridden: bool = False  # ... that replaced it (the last review wins)


@dataclass(frozen=True)
class Limit:
    count: int  # alarm at this count or more
    n: int
    alpha: float
    expected: float

    @property
    def upper(self) -> float | None:
        """The rate from which the window alarms; None when even every one of its n would not be that unlikely."""
        return self.count / self.n if self.count <= self.n else None

    def to_dict(self) -> dict:
        return {"upper": self.upper, "count": self.count, "n": self.n, "alpha": self.alpha, "expected": self.expected}


@dataclass(frozen=True)
class Window:
    period: str  # "2026-W49", "2026-12-06" or "samples 1-6"
    samples: tuple[str, ...]
    fields: int
    counts: dict  # rate name -> (count, n)
    reasons: dict  # quality reason code -> fields rejected for it
    mean_confidence: float | None  # mean top-class probability of the classified fields
    limits: dict  # rate name -> Limit
    alarms: tuple[str, ...]

    def rate(self, name: str) -> float | None:
        count, n = self.counts[name]
        return count / n if n else None

    def to_dict(self) -> dict:
        quality_n = self.counts[QUALITY][1]
        rates = {name: {"rate": self.rate(name), "count": count, "n": n} for name, (count, n) in self.counts.items()}
        rates["quality_reasons"] = {reason: {"rate": count / quality_n if quality_n else None, "count": count,
                                             "n": quality_n} for reason, count in sorted(self.reasons.items())}
        rates["mean_confidence"] = self.mean_confidence
        return {"period": self.period, "samples": list(self.samples), "fields": self.fields, "rates": rates,
                "limits": {name: limit.to_dict() for name, limit in self.limits.items()}, "alarms": list(self.alarms)}


@dataclass(frozen=True)
class MonitorReport:
    windows: tuple[Window, ...]
    expected: dict  # rate name -> Expected
    limits_from: str  # SITE, DECLARED, CARD joined by "+" in that order, or "none"
    log: str = ""

    @property
    def latest_alarms(self) -> tuple[str, ...]:
        return self.windows[-1].alarms if self.windows else ()

    def to_dict(self) -> dict:
        return {"windows": [window.to_dict() for window in self.windows],
                "expected": {name: value.to_dict() for name, value in self.expected.items()},
                "limits_from": self.limits_from}


# --- expectations ---------------------------------------------------------------------------------------


def declared_rates(document: dict, source: str = layout.MANIFEST) -> dict[str, Expected]:
    """model.json "expected_rates" ({"ood_rate": {"rate": p, "n": images, "evidence": {...}}, ...}), checked."""
    section = Fields(document, source, DataError).child(DECLARED, optional=True)
    found = {}
    for name in RATES:
        entry = section.child(name, optional=True) if section is not None else None
        if entry is None:
            continue
        rate = entry.number("rate", minimum=0, maximum=1)
        n = entry.integer("n", optional=True, minimum=1)
        found[name] = Expected(rate, n, DECLARED, f"model.json expected_rates.{name}"
                               + (f" on {n} images" if n else "") + " (measured out of group)")
    return found


def site_rates(folder: Path) -> dict[str, Expected]:
    """The OOD flag and quality rejection rates `allx-edge calibrate` measured on the site's own images."""
    path = folder / layout.SITE_CALIBRATION
    if not path.is_file():
        return {}
    fields = Fields(read_json(path, "site calibration"), str(path), DataError)
    found = {}
    ood, quality = fields.child("ood", optional=True), fields.child("quality", optional=True)
    if ood is not None:
        n = ood.integer("images", optional=True, minimum=1)
        found[OOD] = Expected(ood.number("flagged_after", minimum=0, maximum=1), n, SITE,
                              f"{layout.SITE_CALIBRATION}: flagged share of {n or 'the'} site images")
    if quality is not None:
        n = quality.integer("images", optional=True, minimum=1)
        found[QUALITY] = Expected(quality.number("rejected_after", minimum=0, maximum=1), n, SITE,
                                  f"{layout.SITE_CALIBRATION}: rejected share of {n or 'the'} site images")
    return found


def card_rates(manifest: Manifest) -> dict[str, Expected]:
    """What today's model.json already states, for a model converted before "expected_rates" existed."""
    found = {}
    ood = manifest.ood.section if manifest.ood is not None else {}
    rate = ood.get("held_out_flagged", ood.get("flag_rate"))
    if number(rate):
        n = ood.get("held_out_images")
        found[OOD] = Expected(float(rate), positive(n), CARD, f"model.json ood: flagged share of {n or 'the'} "
                              f"{ood.get('held_out_subset') or 'held-out'} images")
    quality = manifest.quality
    if quality is not None and number(quality.rejected_share):
        found[QUALITY] = Expected(float(quality.rejected_share), positive(quality.images), CARD,
                                  f"model.json quality: rejected share of {quality.images} training images")
    rule = manifest.sample_rule
    if rule is not None and number(rule.inconclusive):
        found[INCONCLUSIVE_RATE] = Expected(float(rule.inconclusive), positive(rule.samples), CARD,
                                            f"model.json sample_rule: inconclusive share of {rule.samples} "
                                            f"{rule.chosen_on or 'pseudo-samples'}")
    check = manifest.check or {}
    accuracy = (check.get("quantized") or {}).get("accuracy")
    if number(accuracy):
        images = check.get("images")
        found[OVERRIDE] = Expected(1.0 - float(accuracy), positive(images), CARD,
                                   f"model.json check: 1 - accuracy per image on {images or 'the'} "
                                   f"{check.get('subset') or 'check'} images (a sample errs less often)")
    return found


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def positive(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def expected_rates(manifest: Manifest, folder: Path | None) -> tuple[dict[str, Expected], str]:
    """(rate name -> Expected, limits_from): per rate the site's calibration, else expected_rates, else the card."""
    sources = [site_rates(folder) if folder is not None else {}, declared_rates(manifest.document),
               card_rates(manifest)]
    chosen: dict[str, Expected] = {}
    for found in sources:
        for name, value in found.items():
            chosen.setdefault(name, value)
    used = [source for source in (SITE, DECLARED, CARD) if any(e.source == source for e in chosen.values())]
    return {name: chosen[name] for name in RATES if name in chosen}, "+".join(used) or "none"


# --- limits ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a long log has many windows of the same size
def upper_count(expected: Expected, n: int, alpha: float) -> int:
    """The smallest count u with P(K >= u) <= alpha for K of n: beta-binomial when the expectation's own sample
    size is known (Jeffreys posterior), binomial otherwise. n + 1 when no count is that unlikely."""
    log_pmf = (beta_binomial_log_pmf(expected, n) if expected.n else binomial_log_pmf(expected.rate, n))
    tail = 0.0
    for count in range(n, -1, -1):
        tail += math.exp(log_pmf(count))
        if tail > alpha:
            return count + 1
    return 0


def binomial_log_pmf(p: float, n: int):
    if p <= 0.0:
        return lambda k: 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return lambda k: 0.0 if k == n else -math.inf
    return lambda k: log_choose(n, k) + k * math.log(p) + (n - k) * math.log1p(-p)


def beta_binomial_log_pmf(expected: Expected, n: int):
    hits = expected.rate * expected.n
    a, b = hits + 0.5, expected.n - hits + 0.5
    base = log_beta(a, b)
    return lambda k: log_choose(n, k) + log_beta(k + a, n - k + b) - base


def log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


# --- reading the log ------------------------------------------------------------------------------------


def reason_code(reason: str) -> str:
    """"blurred: focus 12 < 40" -> "blurred" (edge_runner.quality words each reason "<code>: <measure>")."""
    return str(reason).split(":", 1)[0].strip() or "other"


KEYS = ("ood", "quality.ok", "quality.reasons", "score", "verdict", "action", "reviewed_label")  # what a row tells


def record_values(record: dict) -> list:
    """A record's values at KEYS as AuditLog.stream_values gives them (SQLite's json_extract: true/false as 1/0,
    a list as its JSON text)."""
    values = []
    for key in KEYS:
        value = record
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(int(value) if isinstance(value, bool) else
                      json.dumps(value) if isinstance(value, (list, dict)) else value)
    return values


def add_row(tallies: dict[str, SampleTally], time_utc: str, kind: str, sample_id: str | None, *values) -> None:
    """Count one audit row (its record's values at KEYS) into its sample's tally; rows without a sample (plain
    classify) belong to no sample and are left out."""
    if not sample_id:
        return
    tally = tallies.get(sample_id)
    if tally is None:
        tally = tallies[sample_id] = SampleTally(sample_id, time_utc)
    ood, quality_ok, reasons, score, verdict, action, reviewed_label = values
    if kind == FIELD_RECORD:
        add_field(tally, ood, quality_ok, reasons, score)
    elif kind == SAMPLE_RECORD:
        tally.verdict = verdict
    elif kind == REVIEW_RECORD and reviewed_label is not None:
        tally.reviewed, tally.overridden = True, action == "override"


def add_field(tally: SampleTally, ood, quality_ok, reasons: str | None, score) -> None:
    tally.fields += 1
    if ood is not None:  # None: the model has no OOD check
        tally.ood_checked += 1
        tally.ood += bool(ood)
    if quality_ok is not None:  # None: not checked
        tally.quality_checked += 1
        if not quality_ok:
            tally.rejected += 1
            tally.reasons.update({reason_code(reason) for reason in json.loads(reasons or "[]")})
    if isinstance(score, (int, float)):
        tally.confidence_sum += score
        tally.scored += 1


def read_tallies(rows: Iterable[tuple]) -> list[SampleTally]:
    """The samples that rows of (time_utc, kind, sample_id, values at KEYS...) mention, in order of first row."""
    tallies: dict[str, SampleTally] = {}
    for row in rows:
        add_row(tallies, *row)
    return list(tallies.values())


def log_tallies(log: AuditLog, since=None) -> list[SampleTally]:
    """The samples of an open log, streamed row by row (SQLite picks KEYS out of each record)."""
    return read_tallies(log.stream_values(KEYS, since))


# --- windows --------------------------------------------------------------------------------------------


def check_windowing(size: int | None, by: str | None) -> None:
    if size is not None and by is not None:
        raise UsageError(f"got --window {size} and --by {by}, expected one of them")
    if size is not None and size < 1:
        raise UsageError(f"--window: got {size}, expected a number of samples >= 1")
    if by is not None and by not in PERIODS:
        raise UsageError(f"--by: got {by!r}, expected one of {', '.join(PERIODS)}")


def period_of(first_utc: str, by: str) -> str:
    day = date.fromisoformat(first_utc[:10])
    if by == "day":
        return day.isoformat()
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def group_samples(tallies: list[SampleTally], size: int | None = None,
                  by: str | None = "week") -> Iterator[tuple[str, list[SampleTally]]]:
    """(period label, its samples): N consecutive samples (the last window may be short), or by day / ISO week."""
    if size is not None:
        for start in range(0, len(tallies), size):
            chunk = tallies[start:start + size]
            yield f"samples {start + 1}-{start + len(chunk)}", chunk
        return
    groups: dict[str, list[SampleTally]] = {}
    for tally in tallies:
        groups.setdefault(period_of(tally.first_utc, by), []).append(tally)
    yield from sorted(groups.items())


def judge(period: str, tallies: list[SampleTally], expected: dict[str, Expected],
          family_alpha: float = FAMILY_ALPHA) -> Window:
    """One window's counts, its limits (Bonferroni over the rates judged) and the alarms it raises."""
    conclusive = [t for t in tallies if t.verdict not in (None, VERDICT_INCONCLUSIVE)]
    counts = {OOD: (sum(t.ood for t in tallies), sum(t.ood_checked for t in tallies)),
              QUALITY: (sum(t.rejected for t in tallies), sum(t.quality_checked for t in tallies)),
              INCONCLUSIVE_RATE: (sum(t.verdict == VERDICT_INCONCLUSIVE for t in tallies),
                                  sum(t.verdict is not None for t in tallies)),
              OVERRIDE: (sum(t.overridden for t in tallies), sum(t.reviewed for t in tallies)),
              MALIGNANT_RATE: (sum(t.verdict == VERDICT_MALIGNANT for t in conclusive), len(conclusive))}
    judged = [name for name in ALARMED if name in expected and counts[name][1] > 0]
    alpha = family_alpha / len(judged) if judged else family_alpha
    limits = {name: Limit(upper_count(expected[name], counts[name][1], alpha), counts[name][1], alpha,
                          expected[name].rate) for name in judged}
    alarms = tuple(name for name in judged if counts[name][0] >= limits[name].count)
    reasons = Counter()
    for tally in tallies:
        reasons.update(tally.reasons)
    scored = sum(t.scored for t in tallies)
    confidence = sum(t.confidence_sum for t in tallies) / scored if scored else None
    return Window(period, tuple(t.sample_id for t in tallies), sum(t.fields for t in tallies), counts,
                  dict(reasons), confidence, limits, alarms)


def monitor_tallies(tallies: list[SampleTally], expected: dict[str, Expected], limits_from: str,
                    size: int | None = None, by: str | None = None, family_alpha: float = FAMILY_ALPHA,
                    log: str = "") -> MonitorReport:
    """The report for samples already counted (the benchmark feeds simulated ones here)."""
    check_windowing(size, by)
    windows = tuple(judge(period, chunk, expected, family_alpha)
                    for period, chunk in group_samples(tallies, size, by or ("week" if size is None else None)))
    return MonitorReport(windows, expected, limits_from, log)


def model_expectations(model: str | Path | None) -> tuple[dict[str, Expected], str]:
    """The expected rates of a model (.tflite, model.json or its folder); none without a model."""
    if model is None:
        return {}, "none"
    model_path, folder = resolve_model(Path(model))
    return expected_rates(folder.manifest, model_path.parent)


def monitor_log(log_db: str | Path, model: str | Path | None = None, size: int | None = None,
                by: str | None = None, since=None, family_alpha: float = FAMILY_ALPHA) -> MonitorReport:
    """Read the audit log at `log_db` (read-only, streamed) and judge its windows against `model`'s expected rates."""
    check_windowing(size, by)
    expected, limits_from = model_expectations(model)
    return monitor_with(log_db, expected, limits_from, size, by, since, family_alpha)


def monitor_with(log_db: str | Path, expected: dict[str, Expected], limits_from: str, size: int | None = None,
                 by: str | None = None, since=None, family_alpha: float = FAMILY_ALPHA) -> MonitorReport:
    """`monitor_log` with the expectations already read (the web page reads them once, at start)."""
    check_windowing(size, by)
    with AuditLog.open(log_db, readonly=True) as log:
        tallies = log_tallies(log, since)
    return monitor_tallies(tallies, expected, limits_from, size, by, family_alpha, str(log_db))
