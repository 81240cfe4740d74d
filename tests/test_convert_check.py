"""The check's arithmetic and gate on hand-made predictions (no model needed)."""

import numpy as np
import pytest

from allx.convert.check import CheckPredictions, metrics_of, summarize
from allx.convert.modes import Thresholds

LABELS = ("Benign", "Early", "Pre", "Pro")


def one_hot(indices, classes=4, confidence=0.9):
    probabilities = np.full((len(indices), classes), (1 - confidence) / (classes - 1), np.float32)
    probabilities[np.arange(len(indices)), indices] = confidence
    return probabilities


def report_for(truth, float_top, quant_top, thresholds=Thresholds()):
    predictions = CheckPredictions(tuple(f"img{i}" for i in range(len(truth))), np.asarray(truth),
                                   one_hot(float_top), one_hot(quant_top))
    return summarize(predictions, LABELS, "int8", "val", thresholds, [1.0, 2.0, 3.0], ())


def test_identical_predictions_pass():
    truth = [0, 1, 2, 3] * 25
    report = report_for(truth, truth, truth)
    assert report.passed and report.agreement == 1.0 and report.mean_abs_prob_diff == 0.0
    assert report.float.accuracy == report.quantized.accuracy == 1.0
    assert report.to_dict()["per_class"][2] == {"label": "Pre", "support": 25, "float_recall": 1.0,
                                                "quantized_recall": 1.0, "drop_pp": 0.0}


def test_each_limit_is_named_when_broken():
    truth = np.array([0, 1, 2, 3] * 25)
    quant = truth.copy()
    quant[truth == 3] = 2  # class Pro collapses into Pre
    report = report_for(truth, truth, quant)
    assert not report.passed and len(report.failures) == 3
    assert report.failures[0] == ("all classes: 25 right->wrong, 0 wrong->right of 100; drop bound 25.0 pp "
                                  "(limit --max-drop 1.5 pp)")
    assert report.failures[1].startswith("Pro: 25 right->wrong, 0 wrong->right of 25; drop bound 100.0 pp")
    assert "fidelity: 25 of 100 val images changed top-1 label" in report.failures[2]
    assert report.to_dict()["passed"] is False and len(report.to_dict()["verdicts"]) == 5


def test_a_drop_exactly_at_the_limit_passes():
    truth = np.array([0, 1, 2, 3] * 25)
    quant = truth.copy()
    quant[0] = 1  # one Benign image of 100 right->wrong, nothing the other way: the bound is the observed loss
    assert report_for(truth, truth, quant, Thresholds(1.0, 4.0, 0.9)).passed
    assert not report_for(truth, truth, quant, Thresholds(0.99, 4.0, 0.9)).passed


def test_a_better_quantized_model_is_not_a_drop():
    truth = np.array([0, 1, 2, 3] * 5)
    worse = truth.copy()
    worse[:4] = (truth[:4] + 1) % 4
    report = report_for(truth, worse, truth, Thresholds(1.0, 15.0, 0.0))
    assert report.passed and report.drop_pp < 0 and report.paired[0].drop_bound_pp < 0
    # one wrong->right image of 5 is little evidence of direction: the class bound stays positive
    assert report.paired[1].drop_bound_pp == pytest.approx((2 * Thresholds().confidence - 1) / 5 * 100)


def test_malignant_sensitivity_ignores_confusion_between_subtypes():
    truth = np.array([0, 0, 1, 2, 3, 3])
    predicted = np.array([0, 1, 2, 3, 1, 0])  # subtypes swapped: still malignant; one Pro called Benign
    metrics = metrics_of(truth, predicted, LABELS)
    assert metrics.malignant_sensitivity == pytest.approx(3 / 4)
    assert metrics.benign_specificity == pytest.approx(1 / 2)
    assert metrics.accuracy == pytest.approx(1 / 6)


def test_classes_without_images_and_labels_without_benign():
    truth = np.array([1, 1, 2])
    metrics = metrics_of(truth, truth, LABELS)
    assert metrics.recall == (None, 1.0, 1.0, None) and metrics.benign_specificity is None
    assert metrics_of(truth, truth, ("a", "b", "c", "d")).malignant_sensitivity is None


def test_latency_percentiles_and_probability_difference():
    truth = [0, 1, 2, 3]
    predictions = CheckPredictions(("a", "b", "c", "d"), np.array(truth), one_hot(truth, confidence=0.9),
                                   one_hot(truth, confidence=0.6))
    report = summarize(predictions, LABELS, "int8", "val", Thresholds(), [1.0, 2.0, 3.0, 4.0], ("x: unreadable",))
    assert report.mean_abs_prob_diff == pytest.approx(np.mean([0.3, 0.1, 0.1, 0.1]))
    assert report.latency_ms_p50 == pytest.approx(2.5) and report.skipped == ("x: unreadable",)


def test_flip_margins_tell_near_ties_from_confident_flips():
    truth = np.array([0, 1, 2, 3])
    float_probs = np.array([[0.9, 0.1, 0, 0], [0.05, 0.5, 0.45, 0], [0, 0, 1.0, 0], [0, 0, 0.2, 0.8]], np.float32)
    quant_probs = np.array([[0.9, 0.1, 0, 0], [0.05, 0.45, 0.5, 0], [0, 0, 1.0, 0], [0, 0, 0.6, 0.4]], np.float32)
    report = summarize(CheckPredictions(("a", "b", "c", "d"), truth, float_probs, quant_probs), LABELS, "int8",
                       "val", Thresholds(), [1.0], ())
    assert report.disagreements == 2
    assert report.flip_margin_median == pytest.approx(np.median([0.05, 0.6]))
    assert report.margin_median == pytest.approx(np.median([0.8, 0.05, 1.0, 0.6]))
    assert report_for([0, 1], [0, 1], [0, 1]).flip_margin_median is None


def test_a_report_regated_with_other_thresholds_is_judged_again():
    from dataclasses import replace

    from allx.convert.check import gate

    truth = np.array([0, 1, 2, 3] * 25)
    quant = truth.copy()
    quant[truth == 3] = 2
    opened = report_for(truth, truth, quant, Thresholds(100.0, 100.0, 0.0))
    assert opened.passed
    strict = gate(replace(opened, thresholds=Thresholds()))
    assert not strict.passed and strict.paired[0].limit_pp == Thresholds().max_drop
