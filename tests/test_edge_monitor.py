"""The drift monitor: rates per window from generated audit logs, limits with their stated tail, alarms, sources."""

from __future__ import annotations


import pytest
from monitor_logs import LABELS, changed_camera_fields, good_fields, log_sample, write_log
from typer.testing import CliRunner

from allx import layout
from allx.edge_runner import audit
from allx.edge_runner.audit import AuditLog
from allx.edge_runner.manifest_check import check_manifest
from allx.edge_runner.monitor import (CARD, DECLARED, FAMILY_ALPHA, SITE, Expected, expected_rates, monitor_log,
                                      log_tallies, monitor_tallies, read_tallies, record_values,
                                      upper_count)
from allx.errors import DataError, UsageError
from allx.files import write_json

EXPECTED = {"ood_rate": Expected(0.04, 473, CARD, "test"), "quality_rate": Expected(0.01, 600, CARD, "test"),
            "inconclusive_rate": Expected(0.02, 100, CARD, "test"), "override_rate": Expected(0.02, 500, CARD, "test")}
MANIFEST = {"format": "allx-tflite/1", "model_file": "model_int8.tflite", "labels": list(LABELS),
            "ood": {"method": "mahalanobis", "threshold": 200.0, "flag_rate": 0.04, "held_out_flagged": 0.0402,
                    "held_out_images": 473, "held_out_subset": "val"},
            "quality": {"focus_min": 40.0, "images": 600, "rejected_share": 0.005},
            "sample_rule": {"threshold": 0.4, "inconclusive": 0.019, "samples": 108,
                            "chosen_on": "val pseudo-samples of 5 consecutive fields"},
            "check": {"subset": "val", "images": 473, "passed": True, "quantized": {"accuracy": 0.98}}}


def tallies_of(path):
    with AuditLog.open(path, readonly=True) as log:
        tallies = log_tallies(log)
        parsed = read_tallies((row["time_utc"], row["kind"], row["sample_id"], *record_values(row["record"]))
                              for row in log.stream())
    assert tallies == parsed  # SQLite's picking of the record's keys reads what Python's parsing reads
    return tallies


def test_rates_per_window_count_fields_samples_and_reviews(tmp_path):
    db = tmp_path / "audit.db"
    with AuditLog.open(db) as log:
        log_sample(log, "A", good_fields("A", 4), "confirm")
        log_sample(log, "B", good_fields("B", 3, "Benign") + [good_fields("B2", 1)[0]], "Pre")  # overridden
        log_sample(log, "C", changed_camera_fields("C", 4))  # inconclusive: every field flagged
        log.append({"kind": "field", "sample_id": None, "image": "loose.jpg", "ood": True})  # not a sample: left out
    report = monitor_tallies(tallies_of(db), EXPECTED, CARD, size=2)
    first, second = report.windows
    assert (first.samples, first.fields, second.samples, second.fields) == (("A", "B"), 8, ("C",), 4)
    assert first.counts["override_rate"] == (1, 2) and first.counts["malignant_rate"] == (1, 2)
    assert second.counts["ood_rate"] == (4, 4) and second.counts["quality_rate"] == (2, 4)
    assert second.counts["inconclusive_rate"] == (1, 1) and second.reasons == {"blurred": 2}
    assert second.counts["override_rate"] == (0, 0)  # a review of an inconclusive verdict overrides no answer
    assert second.mean_confidence == pytest.approx(0.5)
    data = report.to_dict()
    assert set(data) == {"windows", "expected", "limits_from"} and data["limits_from"] == CARD
    assert {"samples", "fields", "rates", "limits", "alarms"} <= set(data["windows"][0])
    assert data["windows"][1]["rates"]["quality_reasons"]["blurred"] == {"rate": 0.5, "count": 2, "n": 4}


def test_a_changed_camera_alarms_in_its_first_window_of_6_samples_and_good_windows_do_not(tmp_path):
    db = tmp_path / "audit.db"
    write_log(db, good=12, changed=6)
    report = monitor_tallies(tallies_of(db), EXPECTED, CARD, size=6)
    assert [w.alarms for w in report.windows[:2]] == [(), ()]
    assert set(report.latest_alarms) == {"ood_rate", "quality_rate", "inconclusive_rate"}
    assert "override_rate" not in report.windows[-1].limits  # no review of a conclusive verdict in that window


def test_the_limit_is_the_smallest_count_whose_tail_is_at_most_alpha():
    stats = pytest.importorskip("scipy.stats")
    alpha = FAMILY_ALPHA / 4
    for expected in (Expected(0.04, 473, CARD, ""), Expected(0.0, 600, SITE, ""), Expected(0.3, 20, CARD, "")):
        a, b = expected.rate * expected.n + 0.5, expected.n * (1 - expected.rate) + 0.5
        for n in (1, 6, 30, 250):
            u = upper_count(expected, n, alpha)
            assert u > n or stats.betabinom.sf(u - 1, n, a, b) <= alpha
            assert u == 0 or stats.betabinom.sf(u - 2, n, a, b) > alpha
    plain = Expected(0.04, None, DECLARED, "")
    u = upper_count(plain, 30, alpha)
    assert stats.binom.sf(u - 1, 30, 0.04) <= alpha < stats.binom.sf(u - 2, 30, 0.04)
    # the fewer images an expectation was measured on, the wider the limit
    assert upper_count(Expected(0.04, 50, CARD, ""), 100, alpha) > upper_count(Expected(0.04, 5000, CARD, ""), 100,
                                                                                alpha)


def test_windows_by_day_and_week_use_each_samples_first_row(tmp_path, monkeypatch):
    db = tmp_path / "audit.db"
    times = iter(f"2026-12-{day:02d}T08:00:{second:02d}.000000Z" for day in (6, 7, 8) for second in range(60))
    monkeypatch.setattr(audit, "utc_now", lambda: next(times))  # the log's clock, moved day by day
    with AuditLog.open(db) as log:
        for day in (6, 7, 8):
            log_sample(log, f"D{day}", good_fields(f"D{day}", 3))
            next(time for time in times if time.startswith(f"2026-12-{day:02d}T08:00:59"))
    by_day = monitor_log(db, by="day")
    assert [(w.period, w.samples) for w in by_day.windows] == [
        ("2026-12-06", ("D6",)), ("2026-12-07", ("D7",)), ("2026-12-08", ("D8",))]
    by_week = monitor_log(db)  # 2026-12-06 is a Sunday: ISO week 49; Monday the 7th starts week 50
    assert [(w.period, w.samples) for w in by_week.windows] == [("2026-W49", ("D6",)), ("2026-W50", ("D7", "D8"))]
    assert [w.samples for w in monitor_log(db, by="day", since="2026-12-07").windows] == [("D7",), ("D8",)]


def test_expected_rates_come_from_the_site_then_expected_rates_then_the_card(tmp_path):
    card, source = expected_rates(check_manifest(MANIFEST, "model.json"), tmp_path)
    assert source == CARD and {name: e.rate for name, e in card.items()} == pytest.approx(
        {"ood_rate": 0.0402, "quality_rate": 0.005, "inconclusive_rate": 0.019, "override_rate": 0.02})
    assert (card["ood_rate"].n, card["inconclusive_rate"].n, card["override_rate"].n) == (473, 108, 473)
    declared = {**MANIFEST, "expected_rates": {"ood_rate": {"rate": 0.05, "n": 544, "evidence": {"split": "x"}},
                                               "malignant_rate": {"rate": 0.8, "n": 544}}}
    rates, source = expected_rates(check_manifest(declared, "model.json"), tmp_path)
    assert source == f"{DECLARED}+{CARD}" and rates["ood_rate"].rate == 0.05 and rates["ood_rate"].n == 544
    assert rates["malignant_rate"].source == DECLARED and rates["quality_rate"].source == CARD
    write_json(tmp_path / layout.SITE_CALIBRATION, {
        "kind": "site-calibration", "ood": {"flag_rate": 0.04, "flagged_after": 0.037, "images": 241},
        "quality": {"rejected_after": 0.0, "images": 241}})
    rates, source = expected_rates(check_manifest(declared, "model.json"), tmp_path)
    assert source == f"{SITE}+{DECLARED}+{CARD}"
    assert (rates["ood_rate"].rate, rates["ood_rate"].n, rates["quality_rate"].rate) == (0.037, 241, 0.0)
    assert rates["inconclusive_rate"].source == CARD


def test_bad_expectations_and_options_are_one_clear_error(tmp_path):
    bad = {**MANIFEST, "expected_rates": {"ood_rate": {"rate": 1.5}}}
    with pytest.raises(DataError, match=r"expected_rates\.ood_rate.*rate is float 1.5, expected a finite number"):
        expected_rates(check_manifest(bad, "model.json"), None)
    write_log(tmp_path / "audit.db", good=1)
    with pytest.raises(UsageError, match="expected one of them"):
        monitor_log(tmp_path / "audit.db", size=6, by="week")
    with pytest.raises(UsageError, match="--window: got 0"):
        monitor_log(tmp_path / "audit.db", size=0)
    with pytest.raises(DataError, match="no such audit log"):
        monitor_log(tmp_path / "missing.db")


def write_model_folder(folder):
    folder.mkdir()
    write_json(folder / layout.MANIFEST, MANIFEST)
    (folder / "model_int8.tflite").write_bytes(b"not read by the monitor")
    return folder


def invoke(*args):
    from allx.edge_runner.cli import app

    result = CliRunner().invoke(app, ["monitor", *(str(a) for a in args)])
    assert "Traceback" not in result.output, result.output
    return result
