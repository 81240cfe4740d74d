"""The operating point of a logreg head, chosen on cross-fitted predictions.

The threshold for malignant sensitivity 0.99 is an extreme quantile: chosen on a validation part alone it
rests on the 3 or 4 lowest-scoring malignant images there, and on the real data it missed the target on
new patients (5-fold block CV: sensitivity 0.975, one fold 0.922). Here every train and val image is
predicted by a head fitted without its group (StratifiedGroupKFold over INNER_FOLDS grouped folds, C
fixed to the one validation chose), so the threshold is chosen on ~6x more held-out images, each scored
as a new patient's would be; and it is chosen so that the target holds with CONFIDENCE
(allx.decision.allowed_misses), not just on the choosing images: measured on the same folds, the plain
quantile gave sensitivity 0.986 on the test parts, this rule 0.993 (README "Patient-like splits"). Only the
logreg head does this: its fit takes seconds (train.logistic).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from allx import layout
from allx.decision import OperatingPoint, benign_index, choose_operating_point, has_benign
from allx.errors import ModelError
from allx.files import sha256_file
from allx.jsonio import read_json
from allx.train.groups import file_number, sequence_blocks
from allx.train.logistic import fit_one, predict

INNER_FOLDS = 5
CONFIDENCE = 0.95  # the target sensitivity holds on new images with this probability (decision.allowed_misses)


def crossfitted_probabilities(features, image_rows: Sequence[int], view_rows: Sequence[Sequence[int]],
                              labels: np.ndarray, groups: Sequence[str], c: float, n_classes: int,
                              folds: int = INNER_FOLDS, class_weights: dict | None = None) -> np.ndarray:
    """(images, classes) probabilities: image i (its view 0, `image_rows[i]` of `features`) predicted by a
    logistic regression fitted on the training views (`view_rows`) of the images outside i's inner fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    per_class = {label: {g for g, l in zip(groups, labels) if l == label} for label in set(labels.tolist())}
    fewest = min(len(g) for g in per_class.values())
    if fewest < 2:  # a fold would hold out a whole class: its images scored by a head that never saw it
        raise ValueError(f"cross-fitting needs at least 2 groups in every class, got {fewest} in one")
    k = min(folds, len(set(groups)))
    out = np.zeros((len(labels), n_classes))
    flat = (lambda rows: np.asarray(features[np.asarray(rows, dtype=np.int64)], dtype=np.float32).reshape(len(rows), -1))
    view_labels = lambda images: np.concatenate([[labels[i]] * len(view_rows[i]) for i in images])  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        parts = list(StratifiedGroupKFold(n_splits=k).split(np.zeros(len(labels)), labels, list(groups)))
    for inner, held in parts:
        rows = np.concatenate([np.asarray(view_rows[i], dtype=np.int64) for i in inner])
        model = fit_one(flat(rows), view_labels(inner), c, class_weights)
        out[held] = predict(model, flat([image_rows[i] for i in held]), n_classes)
    return out


def crossfitted_point(probabilities: np.ndarray, labels, classes, target: float, where: str,
                      folds: int) -> OperatingPoint:
    return choose_operating_point(probabilities, np.asarray(labels), classes, target, confidence=CONFIDENCE,
                                  chosen_on=f"{where}, cross-fitted over {folds} grouped folds, "
                                            f"{CONFIDENCE:.0%} confidence")


def first_rows(paths) -> dict[str, tuple[int, int]]:
    """path -> (its first feature row, its number of views): a view cache repeats each path once per view,
    image-major (train.view_features)."""
    rows: dict[str, list[int]] = {}
    for k, path in enumerate(paths):
        rows.setdefault(path, [k, 0])[1] += 1
    return {path: (first, views) for path, (first, views) in rows.items()}


def run_point(features: dict, classes, groups_of, c: float, target: float, class_weights_of=None):
    """`allx train`'s cross-fitted point over its train and val features ({subset: Features}); None when the
    classes have no Benign or the images lack a side. Returns (point, how the images were grouped)."""
    parts = [features[name] for name in ("train", "val") if name in features]
    stacked = np.concatenate([np.asarray(f.features, dtype=np.float32).reshape(len(f.paths), -1) for f in parts])
    labels_all = np.concatenate([np.asarray(f.labels) for f in parts])
    offsets = np.cumsum([0] + [len(f.paths) for f in parts])
    rows: dict[str, tuple[int, int]] = {}
    for offset, part in zip(offsets, parts):
        rows.update({p: (offset + first, views) for p, (first, views) in first_rows(part.paths).items()})
    images = list(rows)
    first = [rows[p][0] for p in images]
    labels = labels_all[first]
    if not has_benign(classes) or len(set(labels == benign_index(classes))) < 2:
        return None, None
    groups, how = groups_of(images)
    views = [range(rows[p][0], rows[p][0] + rows[p][1]) for p in images]
    weights = class_weights_of(labels) if class_weights_of else None
    probabilities = crossfitted_probabilities(stacked, first, views, labels, groups, c, len(classes),
                                              class_weights=weights)
    return crossfitted_point(probabilities, labels, classes, target, f"train+val ({how})", INNER_FOLDS), how


def proxy_groups(relpaths: Sequence[str], block_size: int) -> tuple[list[str], str]:
    """Groups for a run whose split kept none: blocks of consecutive file numbers per class (the
    --group-by sequence proxy for patients), or each image alone when the names carry no numbers."""
    if all(file_number(p) is not None for p in relpaths):
        blocks = sequence_blocks(relpaths, block_size)
        return [blocks[p] for p in relpaths], f"blocks of {block_size} file numbers"
    return list(relpaths), "single images"


def read_run_point(model_path: Path):
    """(the OperatingPoint `allx train` chose for this very model.keras, where it came from), or (None, why
    not): OPERATING_POINT beside the model is used only when it names this model's sha256."""
    path = Path(model_path).parent / layout.OPERATING_POINT
    if not path.is_file():
        return None, f"chosen on the check subset (no {layout.OPERATING_POINT} beside the model)"
    document = read_json(path, "operating point", ModelError)
    if not isinstance(document, dict) or document.get("kind") != layout.RecordKind.OPERATING_POINT.value:
        raise ModelError(f"{path}: expected a record of kind {layout.RecordKind.OPERATING_POINT.value!r}")
    if document.get("model_sha256") != sha256_file(model_path):
        return None, (f"chosen on the check subset: {layout.OPERATING_POINT} beside the model belongs to another "
                      f"{Path(model_path).name} (its sha256 differs), not used")
    point = OperatingPoint.from_dict(document.get("operating_point"), str(path))
    return point, f"{layout.OPERATING_POINT} beside the model: {point.chosen_on}"
