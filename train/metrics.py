"""Classification metrics from predicted probabilities (scikit-learn), incl. the clinical malignant/benign pair.

Malignant = every class except "Benign" (Early, Pre, Pro are malignant B-ALL subtypes).
"""

from __future__ import annotations

import numpy as np

from allx.decision import benign_index, has_benign


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, classes) -> dict:
    """accuracy, loss, per-class precision/recall/F1, confusion matrix, malignant sensitivity, benign specificity."""
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

    classes = list(classes)
    indices = list(range(len(classes)))
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax rounding
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0)
    result = {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": float(log_loss(labels, probabilities, labels=indices)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "classes": classes,
    }
    result.update(malignant_vs_benign(labels, predicted, classes))
    return result


def malignant_vs_benign(labels: np.ndarray, predicted: np.ndarray, classes) -> dict:
    """Sensitivity for malignant (any non-Benign class) and specificity for Benign; None without a Benign class."""
    if not has_benign(classes):
        return {"malignant_sensitivity": None, "benign_specificity": None}
    benign = benign_index(classes)
    truly_malignant = labels != benign
    said_malignant = predicted != benign
    sensitivity = float(said_malignant[truly_malignant].mean()) if truly_malignant.any() else None
    specificity = float((~said_malignant)[~truly_malignant].mean()) if (~truly_malignant).any() else None
    return {"malignant_sensitivity": sensitivity, "benign_specificity": specificity}
