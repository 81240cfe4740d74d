"""The model card in words: figures rounded for people with their counts, what they mean, how they were measured."""

import re

import numpy as np
import pytest

from allx.edge_runner.card_text import bench_lines, card_lines, evidence_words
from allx.text import setting, share, significant

NUMBER = re.compile(r"\d[\d,]*\.?\d*")


def too_precise(text: str, limit: int = 4) -> list[str]:
    """Numbers in `text` written with more than `limit` significant digits (thousands separators aside)."""
    found = []
    for token in NUMBER.findall(text):
        digits = token.replace(",", "").replace(".", "").lstrip("0")
        if "." in token and len(digits) > limit:
            found.append(token)
    return found


MANIFEST = {
    "precision": "int8",
    "check": {"passed": True, "precision": "int8", "subset": "val", "images": 256, "disagreements": 0,
              "agreement": 1.0, "float": {"accuracy": 0.9296875}, "quantized": {"accuracy": 0.92578125},
              "mean_abs_prob_diff": 0.0027995347045361996, "margin_median": 0.999904990196228,
              "thresholds": {"max_drop_pp": 1.5},
              "fidelity": {"images": 2000, "disagreements": 7, "agreement": 0.9965, "agreement_bound": 0.99412345,
                           "min_agreement": 0.98}},
    "operating_point": {"threshold": 0.6176318349795804, "target_sensitivity": 0.99, "sensitivity": 0.994006,
                        "specificity": 0.81234567, "n_malignant": 2169, "n_benign": 330,
                        "chosen_on": "train+val, cross-fitted over 5 grouped folds, 60% confidence"},
    "sample_rule": {"threshold": 0.4123456, "min_fields": 3, "min_agreement": 0.8, "max_set_aside": 0.5,
                    "chosen_on": "val pseudo-samples of 5 consecutive fields", "samples": 97,
                    "sensitivity": 0.98765, "specificity": 0.9333333, "inconclusive": 0.0412371},
    "ood": {"method": "mahalanobis", "threshold": 123.456789, "flag_rate": 0.04, "held_out_subset": "val",
            "held_out_flagged": 0.0408163, "held_out_images": 490, "fit_images": 2036,
            "score": "squared Mahalanobis distance of the pooled embedding to the nearest class mean"},
    "quality": {"focus_min": 351.1124398803711, "shadows_max": 0.02, "highlights_max": 0.0213,
                "colour_max": 3.3105163837309477, "images": 2036, "rejected_share": 0.0103143,
                "calibrated_on": "train"},
}


def words(document=MANIFEST) -> dict[str, str]:
    return {line.topic: line.words for line in card_lines(document)}


def test_figures_are_rounded_with_their_counts_and_say_how_they_were_measured():
    card = words()
    assert card["Accuracy check"].startswith("int8 agrees with float32 on 256 of 256 validation images")
    assert "accuracy 93.0% (238 of 256) float32, 92.6% (237 of 256) int8" in card["Accuracy check"]
    assert "limit: a drop of at most 1.5 pp" in card["Accuracy check"] and card["Accuracy check"].endswith("passed")
    assert "1,993 of 2,000" in card["Fidelity"] and "lower bound 99.4%, limit 98%" in card["Fidelity"]
    point = card["Operating point"]
    assert ">= 0.618: sensitivity >= 99%, measured 99.4% (2,156 of 2,169 malignant images)" in point
    assert "cross-fitted over 5 grouped folds" in point and "81.2% (268 of 330 benign images)" in point
    assert "at least 3 usable fields" in card["Sample rule"] and "On 97 val pseudo-samples" in card["Sample rule"]
    ood = card["Unlike training"]
    assert "above 123;" not in ood and "above 123 (score: squared Mahalanobis" in ood
    assert "set to flag 4% of validation images, measured 4.08% (20 of 490 held-out images)" in ood
    assert "blurred (focus below 351)" in card["Quality check"] and "1.03% (21 of 2,036)" in card["Quality check"]
    assert not [t for line in card.values() for t in too_precise(line)]


def test_evidence_record_is_rendered_when_present_and_today_s_fields_otherwise():
    evidence = {"on": "out-of-group", "grouping": "sequence", "groups": 120, "folds": 5, "images": 2169,
                "interval": [0.9891234, 0.9973]}
    with_evidence = {**MANIFEST, "operating_point": {**MANIFEST["operating_point"], "evidence": evidence}}
    point = words(with_evidence)["Operating point"]
    assert ("measured out of group: 5 folds over 120 groups (blocks of consecutive file numbers per class, a proxy "
            "for patients: no patient IDs given), 2,169 images; 95% interval 98.9%-99.7%") in point
    assert "measured out of group" not in words()["Operating point"]
    shared = evidence_words({"on": "shares groups with training", "grouping": "image", "groups": 40, "images": 40})
    assert shared.startswith("measured on images that share groups with training (") and "40 images" in shared
    assert evidence_words({"on": "somewhere else"}) == ""


def test_the_check_says_its_images_share_groups_with_training():
    shared = {"on": "shares groups with training", "grouping": "image", "groups": 256, "folds": 0, "images": 256,
              "interval": [0.9, 0.95]}
    fidelity = {**shared, "groups": 2000, "images": 2000, "interval": [0.994, 0.999]}
    card = words({**MANIFEST, "check_evidence": {"accuracy": shared, "fidelity": fidelity}})
    assert card["Accuracy check"].endswith("passed; measured on images that share groups with training (an image-level "
                                           "split: no grouping, so these images may come from the training images' "
                                           "patients, 256 groups), 256 images; 95% interval 90.0%-95.0%")
    assert "measured on images that share groups with training" in card["Fidelity"]
    assert "2,000 images; 95% interval 99.4%-99.9%" in card["Fidelity"]
    assert "measured" not in words()["Accuracy check"] and "measured" not in words()["Fidelity"]


def test_the_model_s_limits_are_the_card_s_last_line():
    card = card_lines({**MANIFEST, "limits": ["Held-out images of one collection.", "Validate at each site."]})
    assert card[-1].topic == "Limits" and card[-1].words == "Held-out images of one collection. Validate at each site."
    assert "Limits" not in words()


def test_expected_rates_are_a_line_of_the_card_with_their_evidence():
    evidence = {"on": "out-of-group", "grouping": "sequence", "groups": 56, "folds": 5, "images": 2604,
                "interval": [0.031, 0.05]}
    card = words({**MANIFEST, "expected_rates": {"ood_rate": {"rate": 0.04, "n": 2604, "evidence": evidence},
                                                 "inconclusive_rate": {"rate": 0.013, "n": 500}}})
    assert card["Expected on site"].startswith("ood 4% of fields (measured out of group: 5 folds over 56 groups")
    assert card["Expected on site"].endswith("; inconclusive 1.3% of samples")
    assert "Expected on site" not in words()


def test_the_flag_rate_per_class_is_on_the_card_with_its_interval():
    evidence = {"on": "out-of-group", "grouping": "sequence", "groups": 14, "folds": 5, "images": 403,
                "interval": [0.0212345, 0.0561234]}
    by_class = {"Benign": {"rate": 0.0372208, "n": 403, "evidence": evidence}, "Early": {"rate": 0.0406, "n": 788}}
    ood = words({**MANIFEST, "ood": {**MANIFEST["ood"], "class_held_out_flagged": by_class}})["Unlike training"]
    assert ood.endswith("; per class: Benign 3.72% (2.12%-5.61%), Early 4.06%")
    assert "per class" not in words()["Unlike training"]


def test_a_bare_model_and_an_ood_note_say_what_is_off():
    card = words({"ood_note": "off: the model has no pooled embedding"})
    assert card["Accuracy check"].startswith("none recorded")
    assert card["Unlike training"] == "off: the model has no pooled embedding"
    assert card["Quality check"].startswith("off")
    failed = words({"check": {**MANIFEST["check"], "passed": False, "failures": ["drop bound 2.1 pp > 1.5 pp"]}})
    assert failed["Accuracy check"].endswith("FAILED: drop bound 2.1 pp > 1.5 pp")


def test_bench_lines_round_latency_and_memory():
    lines = {line.topic: line.words for line in bench_lines({
        "machine": {"cpu_model": "Cortex-A76", "cores": 4}, "runs": 100, "threads": 1, "delegate": "cpu",
        "throughput_ips": 81.234567, "peak_rss_mb": 85.3984375, "latency_ms": {"p50": 12.3456, "p99": 15.0, "mean": 12.31},
        "created": "2026-12-06T21:00:00+00:00"})}
    assert lines["Latency"] == "p50 12.3 ms, p99 15.0 ms, mean 12.3 ms (bare invoke over 100 runs)"
    assert lines["Peak memory"].startswith("85.4 MB") and lines["Throughput"].startswith("81.2 images/s")


@pytest.mark.parametrize("value, expected", [(0.6176318349795804, "0.618"), (351.1124, "351"), (12345.6, "12,300"),
                                             (0.999904990196228, "1.00"), (4, "4"), (0.0027995, "0.00280"),
                                             (None, "-"), (float("nan"), "-"), (-0.5, "-0.500")])
def test_significant_digits(value, expected):
    assert significant(value) == expected


def test_no_rounding_ever_writes_more_than_four_significant_digits():
    values = np.random.default_rng(0).lognormal(0, 4, 500)
    assert not [v for v in values if too_precise(significant(float(v))) or too_precise(setting(float(v)))]
    assert share(2156, 2169, "malignant images") == "99.4% (2,156 of 2,169 malignant images)"
    assert setting(0.99 * 100) == "99" and setting(1.5) == "1.5" and share(1, 0) == "-"


def test_report_and_info_say_the_card_in_the_same_words(tmp_path):
    import json

    from typer.testing import CliRunner

    from allx.edge_runner.cli import app as edge_app
    from edge_models import LABELS, tiny_models
    from test_report import manifest_json, run_report

    manifest = manifest_json(tmp_path / "model.json")
    document = json.loads(manifest.read_text())
    document.update(operating_point=MANIFEST["operating_point"], quality=MANIFEST["quality"])
    manifest.write_text(json.dumps(document))
    assert run_report(tmp_path, manifest).exit_code == 0
    report = (tmp_path / "out" / "site.md").read_text()
    expected = {line.topic: line.words for line in card_lines(document)}
    assert expected["Operating point"] in report and expected["Quality check"] in report

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_int8.tflite").write_bytes(tiny_models().int8.read_bytes())
    (folder / "model.json").write_text(json.dumps({**document, "labels": list(LABELS), "input": {}}))
    info = CliRunner().invoke(edge_app, ["info", str(folder)])
    assert info.exit_code == 0, info.output
    assert expected["Operating point"] in info.stdout and expected["Accuracy check"] in info.stdout
    assert not too_precise(info.stdout.split("accuracy check")[1])
