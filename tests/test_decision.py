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


def test_allowed_misses_is_the_binomial_bound():
    from scipy.stats import binom

    from allx.decision import allowed_misses

    for n, rate, risk in ((2200, 0.01, 0.05), (500, 0.01, 0.05), (1000, 0.05, 0.1), (50, 0.01, 0.05)):
        m = allowed_misses(n, rate, risk)
        assert m == 0 or binom.cdf(m, n, rate) <= risk
        assert binom.cdf(m + 1, n, rate) > risk or m == 0 and binom.cdf(0, n, rate) > risk


def test_with_confidence_the_point_leaves_fewer_misses_than_the_plain_quantile():
    from allx.decision import allowed_misses, choose_operating_point

    rng = np.random.default_rng(3)
    n_malignant, n_benign = 2000, 400
    scores = np.concatenate([rng.beta(8, 1, n_malignant), rng.beta(1, 8, n_benign)])
    probabilities = np.stack([1 - scores, scores, np.zeros_like(scores), np.zeros_like(scores)], axis=1)
    truth = np.array([1] * n_malignant + [0] * n_benign)
    classes = ["Benign", "Early", "Pre", "Pro"]
    plain = choose_operating_point(probabilities, truth, classes, 0.99)
    bounded = choose_operating_point(probabilities, truth, classes, 0.99, confidence=0.95)
    assert round((1 - plain.sensitivity) * n_malignant) == 20
    assert round((1 - bounded.sensitivity) * n_malignant) == allowed_misses(n_malignant, 0.01, 0.05) < 20
    assert bounded.threshold < plain.threshold and bounded.specificity <= plain.specificity

    # simulated: the plain quantile misses the target on new images about half the time, the bound ~5%
    fails = {"plain": 0, "bounded": 0}
    for _ in range(200):
        chosen = rng.beta(8, 1, n_malignant)
        fresh = rng.beta(8, 1, 20000)
        for name, confidence in (("plain", None), ("bounded", 0.95)):
            p = np.stack([1 - chosen, chosen, 0 * chosen, 0 * chosen], axis=1)
            both = np.concatenate([p, [[1.0, 0.0, 0.0, 0.0]]])
            point = choose_operating_point(both, np.r_[np.ones(n_malignant), 0], classes, 0.99, confidence=confidence)
            fails[name] += (fresh >= point.threshold).mean() < 0.99
    assert fails["plain"] > 60 and fails["bounded"] < 25
