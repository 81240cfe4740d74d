"""Grouped, stratified K-fold splits: each fold holds out whole groups of every class as its test part.

The fold maker is the split maker's assignment (allx.train.split.assign_groups) with K equal parts in
place of train/val/test: per class, groups are shuffled with `seed` and each goes whole to the fold
furthest below its share. Inside each fold, the remaining groups are split again into train and a
grouped validation part, so model selection (early stopping, the operating point) never sees the
fold's test images.
"""

from __future__ import annotations

import numpy as np

from allx.errors import DataError, UsageError
from allx.train.groups import Grouping
from allx.train.split import Split, assign_groups, check_seed

MAX_FOLDS = 20


def check_folds(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_FOLDS:
        raise UsageError(f"--cv: got {k!r} folds, expected a whole number from 2 to {MAX_FOLDS}")
    return k


def grouped_folds(grouping: Grouping, k: int = 5, seed: int = 42, val: float = 0.15) -> tuple[Split, ...]:
    """K splits of `grouping`: fold f's test part is its f-th share of every class's groups; its val part
    takes about `val` of the rest, by whole groups (a class with one group left trains on it all)."""
    check_folds(k)
    check_seed(seed)
    if not isinstance(val, (int, float)) or not 0 <= val < 1:
        raise UsageError(f"got val fraction {val!r}, expected a number in [0, 1)")
    by_class = grouping.by_class()
    check_group_counts(by_class, k)
    rng = np.random.default_rng(seed)
    fold_of: dict[tuple[str, ...], int] = {}
    for name, groups in by_class.items():
        shuffled = [groups[i] for i in rng.permutation(len(groups))]
        fold_of.update(zip(shuffled, assign_groups(shuffled, {f: 1 / k for f in range(k)}, name)))
    return tuple(make_fold(grouping, by_class, fold_of, f, k, seed, val, rng) for f in range(k))


def check_group_counts(by_class: dict[str, list], k: int) -> None:
    total = sum(len(groups) for groups in by_class.values())
    if total < k:
        raise DataError(f"got {k} folds but the images form only {total} group(s), expected at least {k}")
    few = {name: len(groups) for name, groups in by_class.items() if len(groups) < k}
    if few:
        shown = ", ".join(f"{name!r} has {n}" for name, n in few.items())
        raise DataError(f"{k} folds need at least {k} groups in every class (one per fold), got: {shown}; "
                        "lower --cv or --block-size")


def make_fold(grouping: Grouping, by_class, fold_of, fold: int, k: int, seed: int, val: float, rng) -> Split:
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name, groups in by_class.items():
        parts["test"] += [p for g in groups if fold_of[g] == fold for p in g]
        rest = [g for g in groups if fold_of[g] != fold]
        rest = [rest[i] for i in rng.permutation(len(rest))]
        chosen = ["train"] * len(rest) if len(rest) < 2 or val == 0 else \
            assign_groups(rest, {"train": 1 - val, "val": val}, name, strict=False)
        if val and len(rest) >= 2 and "val" not in chosen:  # few groups: rounding gave val none, so one goes
            chosen[min(range(len(rest)), key=lambda i: len(rest[i]))] = "val"
        for part, group in zip(chosen, rest):
            parts[part] += group
    meta = {"split_kind": grouping.kind.value, "fold": fold, "folds": k, "seed": seed, "val_fraction": val,
            "data_dir": str(grouping.root), "grouping": grouping.method}
    return Split(grouping.classes, *(tuple(sorted(parts[s])) for s in ("train", "val", "test")), meta=meta)
