"""MODEL_CARD.md: what a run was trained on, how it was split, how well it did, and what it is for."""

from __future__ import annotations

from pathlib import Path

from allx.files import write_atomic
from allx.text import markdown_table, number


def write_model_card(path: Path, config, backbone, weights, size, split, metrics, skipped) -> None:
    counts = {name: len(split.subset(name)) for name in ("train", "val", "test")}
    lines = [
        f"# Model card: {backbone.name} ALL classifier",
        "",
        "**Intended use: decision support only.** A hematologist (or the referral pathway) makes the diagnosis.",
        "Not a medical device; not validated outside the data below.",
        "",
        "## Data",
        f"- Data directory: `{config.data_dir}`",
        f"- Classes: {', '.join(split.classes)}",
        f"- Split: train {counts['train']}, val {counts['val']}, test {counts['test']} images;"
        f" {split.kind.words}",
        f"- Images skipped as unreadable: {len(skipped)}",
        "",
        "## Model",
        f"- Backbone: `{backbone.name}` (frozen), weights `{weights}` — {backbone.weights_source}; licence {backbone.licence}",
        f"- Input: raw RGB 0..255, {size[0]}x{size[1]}; preprocessing inside the model: {backbone.preprocessing}",
        f"- Features: {features_words(config, backbone)}",
        f"- Head: {head_words(config, len(split.classes))}",
        f"- Fine-tuned top layers: {config.fine_tune_layers}",
        f"- Training augmentation: {config.augment or 'none'}",
        f"- Background swap: {swap_words(config)}",
        "",
        "## Test metrics",
    ]
    if "accuracy" in metrics:
        lines += [
            f"- Accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}, n = {metrics['n']}",
            f"- Malignant sensitivity {number(metrics['malignant_sensitivity'], 4, 'n/a')},"
            f" benign specificity {number(metrics['benign_specificity'], 4, 'n/a')}",
            "",
            *markdown_table(("class", "precision", "recall", "F1", "support"), (
                (name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
                for name, m in metrics["per_class"].items())),
        ]
    else:
        lines.append(f"- {metrics.get('note', 'not evaluated')}")
    lines += ["", "## Limits", *(f"- {limit}" for limit in LIMITS)]
    write_atomic(path, "\n".join(lines) + "\n")


# Measured on the ALL (Taleqani) data with the default recipe (README, "What the maps say"): with its white
# cells painted out, a held-out field still mostly gets its own class, and the occlusion maps do not point at
# the cells. Said in every card because nothing inside one training run can rule it out; `allx convert` ships
# the same sentences in model.json ("limits"), so allx-edge info and the Model page say them too.
LIMITS = (
    "The test images are held-out images of the same collection as the training images. Where each class was "
    "photographed as its own series (its own slides, stain, lighting and background), a model can tell the "
    "classes apart by the background without looking at the white cell, and this accuracy then overstates the "
    "accuracy at a new site. On the ALL (Taleqani) data that is the case: measure it on a new model with "
    "`benchmarks/explain.py` (accuracy with the cells painted out; where the occlusion maps point) and "
    "`benchmarks/explain_shortcut.py` (the same recipe trained on the backgrounds alone).",
    "Validate at each site on its own smears before use.",
)


def features_words(config, backbone) -> str:
    if config.features == "multiscale":
        return f"global averages of {', '.join(backbone.taps)}, concatenated (multiscale)"
    return f"the last feature map ({backbone.feature_layer_note})"


def head_words(config, n_classes: int) -> str:
    if config.head == "logreg":
        return (f"Flatten -> Dense({n_classes}, softmax), a multinomial logistic regression on standardised features "
                "(scikit-learn L-BFGS; C chosen by validation log-loss, then fitted again on train + validation)")
    return (f"{config.head} -> Dropout(0.5) -> Dense({n_classes}, softmax); Adam lr {config.learning_rate}, categorical "
            f"cross-entropy; up to {config.epochs} epochs, early stopping on validation loss")


def swap_words(config) -> str:
    if config.cell_masks is None:
        return "none (the training fields as they are)"
    return (f"{config.swap_copies} composites per training image: its white cells on the cell-free background of "
            f"a training image of another class (cell masks from `{config.cell_masks}`)")
