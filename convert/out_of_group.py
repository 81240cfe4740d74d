"""Out-of-group evidence for the numbers `allx convert` ships: cross-fitting over group folds of train+val.

A threshold set on validation images that share patients with the training images is too tight for new
patients: on the real smears, with a random validation split, the "unlike training" flag promised 4% and
fired on 12% of a new-patient block. So every shipped number is set the way train.crossfit sets the
operating point: the train+val images are cut into K folds of whole groups, and each fold is scored by
statistics fitted WITHOUT it (`out_of_fold`), so every image is scored as a new patient's would be. The
thresholds are then read off the pooled out-of-fold scores; the statistics the device uses are fitted on
all train+val images.

Groups, whatever split the user brought: the patient groups the split records (`--groups`); else blocks
of DEFAULT_BLOCK_SIZE consecutive file numbers per class (a proxy for patients, README "Patient-like
splits"); else, when the file names carry no numbers, single images (no patient proxy; the evidence says so).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allx.edge_runner.quality import measure
from allx.evidence import FILE_BLOCKS, OUT_OF_GROUP, PATIENT_GROUPS, SINGLE_IMAGES, Evidence
from allx.errors import DataError
from allx.images import read_batches
from allx.train.groups import DEFAULT_BLOCK_SIZE, file_number, sequence_blocks

FOLDS = 5


@dataclass(frozen=True)
class GroupFolds:
    """Train+val images, their groups, and K folds of whole groups (stratified by class)."""

    relpaths: tuple[str, ...]
    labels: np.ndarray  # class index per image
    groups: tuple[str, ...]
    grouping: str  # an allx.evidence grouping code
    held: tuple[np.ndarray, ...]  # per fold, the indices it holds out

    @property
    def folds(self) -> int:
        return len(self.held)

    def evidence(self, images: int | None = None, interval: tuple[float, float] | None = None) -> Evidence:
        return Evidence(OUT_OF_GROUP, self.grouping, len(set(self.groups)), self.folds,
                        len(self.relpaths) if images is None else images, interval)

    def subset(self, keep: np.ndarray) -> GroupFolds:
        """The same folds restricted to the images `keep` (a boolean mask), e.g. the readable ones."""
        index = np.flatnonzero(keep)
        position = np.full(len(self.relpaths), -1)
        position[index] = np.arange(len(index))
        held = tuple(position[h][position[h] >= 0] for h in self.held)
        return GroupFolds(tuple(self.relpaths[i] for i in index), self.labels[index],
                          tuple(self.groups[i] for i in index), self.grouping, held)


def groups_for(relpaths: Sequence[str], patient_groups: dict | None,
               block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[list[str], str]:
    """(group per image, grouping code): patient groups when the split records them for every image, else
    file-number blocks per class, else single images. Blocks shrink below `block_size` when a class has
    too few images to give every fold one of its blocks (a fold without a class would score that class's
    images by statistics that never saw it)."""
    if patient_groups and all(p in patient_groups for p in relpaths):
        return [f"{patient_groups[p]}" for p in relpaths], PATIENT_GROUPS
    if relpaths and all(file_number(p) is not None for p in relpaths):
        fewest = min(Counter(p.split("/")[0] for p in relpaths).values())
        blocks = sequence_blocks(relpaths, max(1, min(block_size, fewest // FOLDS)))
        return [blocks[p] for p in relpaths], FILE_BLOCKS
    return list(relpaths), SINGLE_IMAGES


def make_folds(relpaths: Sequence[str], labels: Sequence[int], groups: Sequence[str], grouping: str,
               folds: int = FOLDS, seed: int = 0) -> GroupFolds:
    """K folds of whole groups, each class's groups spread over them (scikit-learn's StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold  # scikit-learn is heavy: only where folds are made

    labels = np.asarray(labels)
    k = min(folds, len(set(groups)))
    if k < 2:
        raise DataError(f"got {len(set(groups))} group(s) of train+val images, expected at least 2 to score "
                        "each image without its group")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        held = tuple(np.sort(h) for _, h in splitter.split(np.zeros(len(labels)), labels, list(groups)))
    return GroupFolds(tuple(relpaths), labels, tuple(groups), grouping, held)


def out_of_fold(folds: GroupFolds, fit_and_score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Every image's score from statistics fitted without its fold: `fit_and_score(fit, held)` fits on the
    indices `fit` and returns the scores (rows) of the indices `held`."""
    every = np.arange(len(folds.relpaths))
    out = None
    for held in folds.held:
        fit = np.setdiff1d(every, held)
        scores = np.asarray(fit_and_score(fit, held))
        if out is None:
            out = np.zeros((len(every), *scores.shape[1:]), dtype=scores.dtype)
        out[held] = scores
    return out


def surrogate_probabilities(folds: GroupFolds, embeddings: np.ndarray, n_classes: int,
                            c: float | None = None) -> np.ndarray:
    """Out-of-fold class probabilities: a logistic head on the converted model's embedding, refitted without
    each fold (train.logistic, the default recipe's own head; for another head an approximation). The
    model's own probabilities on train images are in-sample and would make every rule look perfect."""
    from allx.train.logistic import DEFAULT_C, fit_one, predict

    c = DEFAULT_C if c is None else c
    x = np.asarray(embeddings, dtype=np.float64)
    return out_of_fold(folds, lambda fit, held: predict(fit_one(x[fit], folds.labels[fit], c, None), x[held],
                                                        n_classes))


MAX_IMAGES = 5000  # train+val images read for the evidence (every k-th in file order beyond that)


@dataclass(frozen=True)
class TrainVal:
    """What one pass over the train+val images gives every cross-fitted number: their folds, the converted
    model's embeddings (through edge_runner.EdgeModel, int8 effects included) and their quality measures."""

    folds: GroupFolds
    embeddings: np.ndarray
    measures: tuple  # edge_runner.quality.QualityMeasures per image


def draw_evenly(relpaths: Sequence[str], count: int) -> list[str]:
    """Every k-th path (sorted), so each class and each stretch of file numbers is represented."""
    ordered = sorted(relpaths)
    if len(ordered) <= count:
        return ordered
    return [ordered[int(i)] for i in np.linspace(0, len(ordered) - 1, count)]


def read_train_val(edge_model, data_dir, split, patient_groups: dict | None = None, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> TrainVal:
    """Read every train+val image once (a broken one is skipped: it says nothing about the distribution)."""
    relpaths = draw_evenly([*split.subset("train"), *split.subset("val")], MAX_IMAGES)
    if not relpaths:
        raise DataError("the split has no train or val images, expected some to set the shipped thresholds on")
    classes = list(split.classes)
    labels = [classes.index(p.split("/")[0]) for p in relpaths]
    groups, grouping = groups_for(relpaths, patient_groups)
    folds = make_folds(relpaths, labels, groups, grouping, seed=seed)
    kept = np.zeros(len(relpaths), bool)
    embeddings, measures = [], []
    for batch in read_batches(data_dir, relpaths, edge_model.input_size, progress=progress):
        for index, pixels in zip(batch.indices, batch.pixels):
            embeddings.append(edge_model.predict_with_embedding(pixels)[1])
            measures.append(measure(pixels))
            kept[index] = True
    if not kept.any():
        raise DataError(f"none of {len(relpaths)} train+val images could be read, expected some to set the "
                        "shipped thresholds on")
    return TrainVal(folds.subset(kept), np.stack(embeddings), tuple(measures))
