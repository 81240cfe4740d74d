"""allx.decision: the malignant/benign answer at an operating point chosen for a target sensitivity."""

import ast

import numpy as np
import pytest
from test_architecture import module_sources

from allx.decision import (AUDIT_KINDS, BENIGN, UNLIKE_TRAINING, VERDICT_BENIGN, VERDICT_INCONCLUSIVE,
                           VERDICT_MALIGNANT, OperatingPoint, benign_index, choose_operating_point, decide, has_benign,
                           malignant_scores, sensitivity_specificity)
from allx.edge_runner.manifest_check import STATUSES
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


def test_the_code_a_record_carries_matches_the_decision():
    assert decide([0.2, 0.1, 0.6, 0.1], CLASSES).code == VERDICT_MALIGNANT
    assert decide([0.9, 0.05, 0.03, 0.02], CLASSES).code == VERDICT_BENIGN
    assert has_benign(CLASSES) and not has_benign(("Early", "Pre"))
    with pytest.raises(ModelError, match="expected one named 'Benign'"):
        benign_index(("Early", "Pre"))


# The vocabulary has one owner: the Benign class name, the verdict codes, the audit record kinds and the
# out-of-distribution note are spelled in allx.decision (record file kinds in allx.layout) and imported
# everywhere else, so a record writer and its reader cannot drift apart.
CODES = {VERDICT_MALIGNANT, VERDICT_BENIGN, VERDICT_INCONCLUSIVE, *AUDIT_KINDS, UNLIKE_TRAINING, *STATUSES}
CODE_OWNERS = ("allx.decision", "allx.layout", "allx.edge_runner.manifest_check")
GENERATED_CLASSES = "allx.synthetic"  # names the class folders of generated test images


def spelled_values(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal used as a value: dict keys and subscripts name a field, not a code."""
    tree = ast.parse(source)
    keys = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys if key is not None}
    keys |= {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys]


def test_benign_is_named_and_defined_only_in_decision():
    named = [f"{name}:{line}" for name, source in module_sources().items()
             if name not in ("allx.decision", GENERATED_CLASSES)
             for line, text in spelled_values(source) if text == BENIGN]
    defined = [name for name, source in module_sources().items() for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Assign)
               for target in node.targets for leaf in ast.walk(target) if getattr(leaf, "id", None) == "BENIGN"]
    assert named == [] and defined == ["allx.decision"]


def test_record_codes_are_not_spelled_outside_their_owner():
    spelled = [f"{name}:{line} {text!r}" for name, source in module_sources().items()
               if name.startswith(("allx.edge_runner", "allx.convert")) and name not in CODE_OWNERS
               for line, text in spelled_values(source) if text in CODES]
    assert spelled == []
