"""allx.decision: the malignant/benign answer at an operating point chosen for a target sensitivity."""

import numpy as np
import pytest

from allx.decision import (OperatingPoint, choose_operating_point, decide, malignant_scores,
                           sensitivity_specificity)
from allx.errors import ModelError, UsageError

CLASSES = ("Benign", "Early", "Pre", "Pro")


def probabilities_for(malignant_scores_, subtype=1):
    """Rows whose p(Benign) = 1 - score, the rest on one subtype."""
    rows = np.zeros((len(malignant_scores_), 4))
    rows[:, 0] = 1 - np.asarray(malignant_scores_)
    rows[:, subtype] = malignant_scores_
    return rows


def test_threshold_reaches_the_target_with_the_best_specificity():
    rng = np.random.default_rng(0)
    malignant = rng.uniform(0.3, 1.0, 200)
    benign = rng.uniform(0.0, 0.6, 100)
    probabilities = probabilities_for(np.concatenate([malignant, benign]))
    truth = np.array([1] * 200 + [0] * 100)
    point = choose_operating_point(probabilities, truth, CLASSES, target_sensitivity=0.95)
    assert point.sensitivity >= 0.95
    # one step higher would miss the target: the threshold is the highest that reaches it
    caught_above = (malignant > point.threshold).mean()
    assert caught_above < 0.95
    assert point.specificity == pytest.approx((benign < point.threshold).mean())
    assert sensitivity_specificity(probabilities, truth, CLASSES, point)["malignant_sensitivity"] == point.sensitivity


def test_a_target_of_one_catches_every_malignant_image():
    probabilities = probabilities_for([0.2, 0.9, 0.05, 0.01])
    point = choose_operating_point(probabilities, [2, 1, 0, 0], CLASSES, target_sensitivity=1.0)
    assert point.threshold == pytest.approx(0.2) and point.sensitivity == 1.0 and point.specificity == 1.0


def test_decide_names_the_subtype_and_renormalises_confidence():
    point = OperatingPoint(threshold=0.3)
    yes = decide([0.6, 0.05, 0.3, 0.05], CLASSES, point)
    assert yes.malignant and yes.label == "Pre" and yes.confidence == pytest.approx(0.75)
    assert yes.words == "B-ALL suspected (Pre, 0.75)"
    no = decide([0.8, 0.1, 0.05, 0.05], CLASSES, point)
    assert not no.malignant and no.words == "no B-ALL seen" and no.label == "Benign"
    assert not decide([0.6, 0.05, 0.3, 0.05], CLASSES).malignant  # default 0.5 threshold


def test_operating_point_round_trips_and_rejects_bad_values():
    point = OperatingPoint(0.42, 0.99, 0.995, 0.93, 300, 80, "val")
    assert OperatingPoint.from_dict(point.to_dict()) == point
    for bad in ({"threshold": 1.5}, {"threshold": "0.4"}, {}, [0.4], {"threshold": True}):
        with pytest.raises(ModelError):
            OperatingPoint.from_dict(bad)


def test_bad_requests_are_usage_errors():
    probabilities = probabilities_for([0.9, 0.1])
    with pytest.raises(UsageError, match="target-sensitivity"):
        choose_operating_point(probabilities, [1, 0], CLASSES, target_sensitivity=1.5)
    with pytest.raises(UsageError, match="both benign and malignant"):
        choose_operating_point(probabilities, [1, 1], CLASSES)
    with pytest.raises(ModelError, match="Benign"):
        malignant_scores(probabilities, ("A", "B", "C", "D"))
