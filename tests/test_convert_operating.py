"""convert.operating: pseudo-samples of consecutive files, the field operating point and the sample rule."""

import numpy as np
import pytest

from allx.convert.operating import choose_sample_rule, operating_sections, pseudo_samples, sections_for
from allx.decision import OperatingPoint

LABELS = ("Benign", "Early", "Pre", "Pro")


def test_pseudo_samples_are_runs_of_consecutive_file_numbers_within_a_class():
    paths = [f"Pre/img-{n}.jpg" for n in (10, 2, 1, 3, 11, 4, 5, 12)] + ["Benign/b-1.jpg", "Benign/b-2.jpg"]
    truth = [2] * 8 + [0, 0]
    samples = pseudo_samples(paths, truth, size=5)
    assert [[paths[i] for i in s] for s in samples] == [
        ["Pre/img-1.jpg", "Pre/img-2.jpg", "Pre/img-3.jpg", "Pre/img-4.jpg", "Pre/img-5.jpg"],
        ["Pre/img-10.jpg", "Pre/img-11.jpg", "Pre/img-12.jpg"]]  # the 2-image Benign run is too short


def test_patient_groups_win_over_file_numbers():
    paths = ["Pre/a.jpg", "Pre/b.jpg", "Pre/c.jpg"]
    groups = {"Pre/a.jpg": "P1", "Pre/c.jpg": "P1", "Pre/b.jpg": "P2"}
    assert sorted(map(sorted, pseudo_samples(paths, [2, 2, 2], groups))) == [[0, 2], [1]]


def noisy_data(seed: int = 0, per_class: int = 40):
    rng = np.random.default_rng(seed)
    paths, truth, rows = [], [], []
    for label in range(4):
        for n in range(per_class):
            row = rng.dirichlet(np.ones(4)) * 0.4
            row[label] += 0.6
            paths.append(f"{LABELS[label]}/f-{n}.jpg")
            truth.append(label)
            rows.append(row)
    return paths, truth, np.array(rows)


def test_the_sample_rule_reaches_the_target_on_the_pseudo_samples_it_was_chosen_on():
    paths, truth, probabilities = noisy_data()
    sections = operating_sections(paths, truth, probabilities, LABELS, 0.99, "val")
    point, rule = OperatingPoint.from_dict(sections["operating_point"]), sections["sample_rule"]
    assert point.sensitivity >= 0.99 and point.chosen_on == "val"
    assert rule["samples"] == 32 and rule["sensitivity"] == 1.0 and rule["inconclusive"] <= 0.05
    assert rule["chosen_on"] == "val pseudo-samples of 5 consecutive fields" and rule["min_agreement"] in (0.8, 0.6, 0.5, 0.0)


def test_without_benign_samples_there_is_a_note_not_a_crash():
    paths, truth, probabilities = noisy_data()
    keep = [i for i, t in enumerate(truth) if t != 0]

    class Predictions:
        paths = [paths[i] for i in keep]
        truth = np.array([truth[i] for i in keep])
        quantized_probabilities = probabilities[keep]

    sections = sections_for(Predictions, None, "val", LABELS, 0.99)
    assert list(sections) == ["operating_note"] and "benign and malignant" in sections["operating_note"]
    with pytest.raises(Exception):
        choose_sample_rule(Predictions.paths, list(Predictions.truth), Predictions.quantized_probabilities, LABELS,
                           OperatingPoint(0.5), 0.99, "val")


def test_a_flag_weight_is_chosen_so_flagged_fields_do_not_make_healthy_samples_inconclusive():
    """Cross-fitted pseudo-samples where 3 of 5 fields of some benign samples are flagged unlike training:
    setting them aside leaves those samples inconclusive; a weight keeps them decided, with no wrong verdict."""
    from allx.convert.operating import FieldFlags

    paths, truth, probabilities = noisy_data()
    unlike = np.zeros(len(paths), bool)
    unlike[[0, 1, 2, 5, 6, 7]] = True  # Benign files 0-2 and 5-7: two benign samples, 3 fields of 5 flagged
    flags = FieldFlags(unlike, np.zeros(len(paths), bool))
    point = OperatingPoint(0.5)
    rule, table = choose_sample_rule(paths, truth, probabilities, LABELS, point, 0.99, "cv", flags=flags)
    by_weight = {row["flagged_weight"]: row for row in table if row["min_agreement"] == rule.min_agreement}
    assert by_weight[0.0]["inconclusive"] >= 2 / 32  # set aside: too many fields set aside, twice
    assert rule.flagged_weight > 0 and rule.inconclusive < by_weight[0.0]["inconclusive"] and rule.wrong == 0
    assert {row["flagged_weight"] for row in table} == {0.0, 0.5, 1.0}
    unflagged, _ = choose_sample_rule(paths, truth, probabilities, LABELS, point, 0.99, "val")
    assert unflagged.flagged_weight == 0.0  # without flags there is nothing to weigh


def test_a_tie_keeps_the_flagged_field_at_full_weight_and_a_measured_gain_discounts_it():
    """Weights the pseudo-samples cannot tell apart (same wrong, same inconclusive): the largest is chosen.
    Where discounting flagged fields turns a wrong verdict right, the discount is chosen."""
    from allx.convert.operating import CHOICE_RULE, FieldFlags

    paths, truth, probabilities = noisy_data()
    point = OperatingPoint(0.5)
    unlike = np.zeros(len(paths), bool)
    unlike[[0, 5]] = True  # one flagged field in two benign samples: every weight decides them alike
    rule, table = choose_sample_rule(paths, truth, probabilities, LABELS, point, 0.99, "cv",
                                     flags=FieldFlags(unlike, np.zeros(len(paths), bool)))
    by_weight = {row["flagged_weight"]: row for row in table if row["min_agreement"] == rule.min_agreement}
    assert by_weight[1.0]["wrong"] == by_weight[0.5]["wrong"] == 0
    assert by_weight[1.0]["inconclusive"] == by_weight[0.5]["inconclusive"]
    assert rule.flagged_weight == 1.0
    assert [row["flagged_weight"] for row in table if row.get("chosen")] == [1.0]
    assert "a tie keeps the larger weight" in CHOICE_RULE

    odd = probabilities.copy()
    odd[[0, 1]] = [0.001, 0.997, 0.001, 0.001]  # two fields of a benign sample look malignant, and are flagged
    unlike = np.zeros(len(paths), bool)
    unlike[[0, 1]] = True
    rule, table = choose_sample_rule(paths, truth, odd, LABELS, point, 0.99, "cv",
                                     flags=FieldFlags(unlike, np.zeros(len(paths), bool)))
    tried = {row["flagged_weight"]: row for row in table}  # per weight, the agreement it settled on (the last)
    assert tried[1.0]["inconclusive"] > 0 and tried[1.0]["wrong"] == 0  # at full say the fields disagree
    assert rule.flagged_weight == 0.0 and rule.inconclusive == 0 and rule.wrong == 0


def test_cross_fitted_sections_carry_evidence_and_expected_rates():
    from allx.convert.operating import CrossFitted, FieldFlags
    from allx.convert.out_of_group import groups_for, make_folds

    paths, truth, probabilities = noisy_data(per_class=50)
    groups, code = groups_for(paths, None)
    folds = make_folds(paths, truth, groups, code)
    flags = FieldFlags(np.arange(len(paths)) % 20 == 0, np.zeros(len(paths), bool))
    check = slice(None, None, 5)  # every 5th image stands for the check subset
    sections = operating_sections(paths[check], truth[check], probabilities[check], LABELS, 0.99, "val",
                                  crossfit=CrossFitted(folds, probabilities, flags))
    point, rule, rates = sections["operating_point"], sections["sample_rule"], sections["expected_rates"]
    assert point["chosen_on"] == "train+val, cross-fitted over 5 group folds" and point["n_benign"] == 50
    assert point["evidence"]["on"] == "out-of-group" and point["evidence"]["images"] == 50
    assert rule["samples"] == 40 and rule["evidence"]["folds"] == 5
    assert rates["ood_rate"]["rate"] == pytest.approx(0.05) and rates["ood_rate"]["n"] == 200
    assert rates["inconclusive_rate"]["n"] == 40 and 0 <= rates["malignant_rate"]["rate"] <= 1
    assert sections["operating_point_check"]["evidence"] is None  # no split: nothing to say of the check subset
