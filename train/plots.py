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


CV_METRICS = (("accuracy", "accuracy"), ("malignant_sensitivity", "malignant\nsensitivity"),
              ("benign_specificity", "benign\nspecificity"), ("op_sensitivity", "sensitivity at\noperating point"),
              ("op_specificity", "specificity at\noperating point"))


def plot_cv(summary: dict, classes, folds_done: int, split_kind, path: Path) -> Path:
    """Each fold's value (dots) and the mean with its 95% bootstrap interval (bar) for every CV metric."""
    names = [(key, label) for key, label in CV_METRICS if key in summary]
    names += [(f"recall_{c}", f"recall\n{c}") for c in classes if f"recall_{c}" in summary]
    figure, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 4.2))
    for x, (key, _) in enumerate(names):
        entry = summary[key]
        values = [v for v in entry["folds"] if v is not None]
        ax.scatter(x + np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [x] * len(values), values,
                   s=18, color="tab:blue", alpha=0.7, zorder=3, label="fold" if x == 0 else None)
        if entry["mean"] is not None:
            low = entry["low"] if entry["low"] is not None else entry["mean"]
            high = entry["high"] if entry["high"] is not None else entry["mean"]
            # (a bootstrap interval of a few folds can sit a rounding error off the mean: never a negative bar)
            below, above = max(entry["mean"] - low, 0.0), max(high - entry["mean"], 0.0)
            ax.errorbar([x + 0.3], [entry["mean"]], yerr=[[below], [above]], fmt="D",
                        color="black", capsize=4, zorder=4, label="mean, 95% interval" if x == 0 else None)
    ax.set_xticks(range(len(names)), [label for _, label in names], fontsize=8)
    ax.set(ylim=(min(0.5, ax.get_ylim()[0]), 1.02), ylabel="on the fold's test part")
    ax.set_title(f"{folds_done}-fold cross-validation; split: {split_kind.words}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path)
