"""The plots a person looks at after training: loss/accuracy curves and the confusion matrix (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from allx.files import save_figure_atomic  # noqa: E402


def save_figure(figure, path: Path) -> Path:
    """Write a PNG atomically and close the figure."""
    try:
        return save_figure_atomic(figure, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)


def plot_curves(history: dict, path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation, side by side."""
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            loss_ax.plot(epochs, history[key], style, label=key.replace("_", " "))
    for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
        if key in history:
            acc_ax.plot(epochs, history[key], style, label=key.replace("_", " "))
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="categorical cross-entropy")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(figure, path)


def plot_confusion_matrix(matrix, classes, path: Path, title: str = "Confusion matrix") -> Path:
    """Counts with true class on rows, predicted on columns (scikit-learn's display)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, ax = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay(confusion_matrix=np.asarray(matrix), display_labels=list(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title(title)
    return save_figure(figure, path)
