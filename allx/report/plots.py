"""The report's plots as PNG bytes (matplotlib, Agg): latency per device/model, per-class accuracy, confusion matrix."""

from __future__ import annotations

import io
import math

import numpy as np

from allx.report.inputs import AccuracyCheck, BenchRow, Evaluation

FLOAT_COLOUR, QUANT_COLOUR = "#4c72b0", "#dd8452"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(figure)
    return buffer.getvalue()


def plot_latency(rows: list[BenchRow], names: list[str]) -> bytes:
    """One line per (device, model): raw samples as a violin when the file has them, else its percentiles.

    The thin line spans min..max, the thick bar p50..p99, a tick marks p50 and a diamond p95.
    """
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7.5, 1.2 + 0.7 * len(rows)))
    positions = np.arange(len(rows))[::-1]
    for y, row in zip(positions, rows):
        if row.samples_ms:
            parts = ax.violinplot([row.samples_ms], positions=[y], vert=False, widths=0.7, showextrema=False)
            for body in parts["bodies"]:
                body.set(facecolor=FLOAT_COLOUR, alpha=0.25)
        stats = row.latency_ms
        ax.hlines(y, stats["min"], stats["max"], color="grey", linewidth=1)
        ax.hlines(y, stats["p50"], stats["p99"], color=FLOAT_COLOUR, linewidth=7, alpha=0.8)
        ax.plot([stats["p50"]], [y], marker="|", markersize=16, color="black")
        ax.plot([row.p95_ms], [y], marker="D", markersize=6, color=QUANT_COLOUR)
    ax.set_yticks(positions, names)
    lows = [r.latency_ms["min"] for r in rows]
    highs = [r.latency_ms["max"] for r in rows]
    if min(lows) > 0 and max(highs) / min(lows) > 20:  # very different devices: a log axis keeps both readable
        ax.set_xscale("log")
    ax.set(xlabel="latency per image, ms (lower is better)", title="Inference latency: min-max line, p50-p99 bar, "
           "| p50, ◆ p95")
    ax.grid(axis="x", alpha=0.3)
    return png_bytes(figure)


def plot_class_accuracy(check: AccuracyCheck) -> bytes:
    """Per-class recall (= per-class accuracy) of the float model and the converted one, side by side."""
    plt = pyplot()
    labels = [c.label for c in check.per_class]
    x = np.arange(len(labels))
    floats = [np.nan if c.float_recall is None else c.float_recall * 100 for c in check.per_class]
    quants = [np.nan if c.quantized_recall is None else c.quantized_recall * 100 for c in check.per_class]
    figure, ax = plt.subplots(figsize=(7, 3.8))
    for offset, values, name, colour in ((-0.2, floats, "float (Keras)", FLOAT_COLOUR),
                                         (0.2, quants, check.precision, QUANT_COLOUR)):
        bars = ax.bar(x + offset, values, width=0.4, label=name, color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    low = np.nanmin([*floats, *quants, 100.0])
    bottom = max(0.0, 10 * math.floor((low - 5) / 10))
    ax.set_ylim(bottom, 104)  # zoomed in, so a difference of a point or two is visible
    ax.set_xticks(x, labels)
    ax.set(ylabel=f"per-class accuracy (recall), %{f' (axis from {bottom:.0f})' if bottom else ''}",
           title=f"Accuracy per class on the {check.subset} subset: float vs {check.precision}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(figure)


def plot_confusion(evaluation: Evaluation) -> bytes:
    """Counts, true class on rows and predicted class on columns (scikit-learn's display)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay(np.asarray(evaluation.confusion_matrix), display_labels=list(evaluation.classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d")
    ax.set_title(f"Confusion matrix, {evaluation.subset} subset (n={evaluation.n})")
    return png_bytes(figure)
