"""The split's three charts: subset sizes, subset proportions, classes per subset."""

from __future__ import annotations

from pathlib import Path

from allx.errors import DataError
from allx.files import save_figure_atomic
from allx.train.split import SUBSETS, Split

COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


def save_split_charts(split: Split, split_path: str | Path) -> list[Path]:
    """Write <stem>_sizes.png, <stem>_proportions.png and <stem>_classes.png next to split_path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    split_path = Path(split_path)
    subsets = [s for s in SUBSETS if split.subset(s)]
    sizes = [len(split.subset(s)) for s in subsets]
    charts = {"sizes": plot_sizes, "proportions": plot_proportions, "classes": plot_classes}
    written = []
    for suffix, plot in charts.items():
        figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
        try:
            plot(axes, split, subsets, sizes)
            figure.tight_layout()
            out = split_path.with_name(f"{split_path.stem}_{suffix}.png")
            try:
                save_figure_atomic(figure, out)
            except OSError as err:
                raise DataError(f"cannot write chart {out}: {err.strerror or err}") from None
            written.append(out)
        finally:
            plt.close(figure)
    return written


def plot_sizes(axes, split: Split, subsets: list[str], sizes: list[int]) -> None:
    bars = axes.bar(subsets, sizes, color=[COLOURS[s] for s in subsets])
    axes.bar_label(bars)
    axes.set_ylabel("images")
    axes.set_title(f"Subset sizes ({sum(sizes)} images)")


def plot_proportions(axes, split: Split, subsets: list[str], sizes: list[int]) -> None:
    axes.pie(sizes, labels=subsets, colors=[COLOURS[s] for s in subsets], autopct="%1.1f%%", startangle=90)
    axes.set_title("Subset proportions")
    axes.axis("equal")


def plot_classes(axes, split: Split, subsets: list[str], sizes: list[int]) -> None:
    counts = split.counts()
    width = 0.8 / len(subsets)
    for k, subset in enumerate(subsets):
        positions = [i + (k - (len(subsets) - 1) / 2) * width for i in range(len(split.classes))]
        bars = axes.bar(positions, [counts[subset][c] for c in split.classes], width,
                        label=subset, color=COLOURS[subset])
        axes.bar_label(bars, fontsize=8)
    axes.set_xticks(range(len(split.classes)), split.classes)
    axes.set_ylabel("images")
    axes.set_title("Class distribution per subset")
    axes.legend()


