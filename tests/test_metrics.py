"""Evaluation metrics, especially the clinical malignant-vs-benign pair."""

import numpy as np
import pytest

from allx.train.metrics import classification_metrics

CLASSES = ["Benign", "Early", "Pre", "Pro"]


def one_hot(predicted, n=4):
    return np.eye(n)[predicted] * 0.9 + 0.025


def test_perfect_predictions_score_one():
    labels = np.array([0, 1, 2, 3, 1])
    metrics = classification_metrics(one_hot(labels), labels, CLASSES)
    assert metrics["accuracy"] == 1.0
    assert metrics["malignant_sensitivity"] == 1.0 and metrics["benign_specificity"] == 1.0
    assert np.trace(metrics["confusion_matrix"]) == 5


def test_malignant_subtype_confusion_still_counts_as_malignant():
    labels = np.array([1, 2, 3, 0, 0])
    predicted = np.array([2, 3, 0, 0, 1])  # Early->Pre, Pre->Pro: wrong subtype, still malignant; Pro->Benign: missed
    metrics = classification_metrics(one_hot(predicted), labels, CLASSES)
    assert metrics["accuracy"] == pytest.approx(1 / 5)
    assert metrics["malignant_sensitivity"] == pytest.approx(2 / 3)
    assert metrics["benign_specificity"] == pytest.approx(1 / 2)
    assert metrics["per_class"]["Pro"]["recall"] == 0.0
    assert metrics["confusion_matrix"][3][0] == 1


def test_without_a_benign_class_the_clinical_pair_is_absent():
    labels = np.array([0, 1])
    metrics = classification_metrics(one_hot(labels, 2), labels, ["a", "b"])
    assert metrics["malignant_sensitivity"] is None and metrics["benign_specificity"] is None
