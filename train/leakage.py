"""How much a split leaks: near-neighbour pairs whose two images sit in different subsets.

Two kinds of near-neighbours are counted: perceptual-hash pairs (within the phash distance) and
embedding pairs (cosine similarity of backbone embeddings at or above the threshold). A pair with
one image in train and one in test means the test set has seen that field, so test numbers flatter
the model on new patients.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from allx.train.dataset import scan_dataset
from allx.train.duplicates import Duplicates, close_pairs
from allx.train.embeddings import image_embeddings, similar_pairs
from allx.train.split import SUBSETS, Split

SHOWN = 5  # crossing pairs listed as examples


@dataclass(frozen=True)
class PairCount:
    """Near-neighbour pairs among a split's images of one kind, and those that cross subsets."""

    method: str
    pairs: int
    crossing: int
    by_subsets: dict[str, int]  # "train-test" -> pairs
    examples: tuple[tuple[str, str], ...]

    def to_json(self) -> dict:
        return {"method": self.method, "pairs": self.pairs, "crossing": self.crossing,
                "by_subsets": self.by_subsets, "examples": [list(e) for e in self.examples]}


def count_crossing(pairs, split: Split, method: str) -> PairCount:
    """Pairs (path_a, path_b) of the split's images, and how many join two subsets."""
    subset_of = {p: s for s in SUBSETS for p in split.subset(s)}
    inside = [(a, b) for a, b in pairs if a in subset_of and b in subset_of]
    crossing = [(a, b) for a, b in inside if subset_of[a] != subset_of[b]]
    order = {s: k for k, s in enumerate(SUBSETS)}
    names = Counter("-".join(sorted((subset_of[a], subset_of[b]), key=order.get)) for a, b in crossing)
    return PairCount(method, len(inside), len(crossing), dict(sorted(names.items())), tuple(crossing[:SHOWN]))


def phash_pairs(duplicates: Duplicates) -> list[tuple[str, str]]:
    paths = [r.relpath for r in duplicates.records]
    hashes = np.array([r.phash for r in duplicates.records], dtype=np.uint64)
    return [(paths[i], paths[j]) for i, j in close_pairs(hashes, duplicates.distance).tolist()]


def split_leakage(root: Path, split: Split, duplicates: Duplicates, similarity: float | None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, PairCount]:
    """Crossing pairs per kind: "phash" always, "embedding" when a similarity threshold is given."""
    found = {"phash": count_crossing(phash_pairs(duplicates), split,
                                     f"phash within {duplicates.distance} bits")}
    if similarity is not None:
        embeddings = image_embeddings(root, scan_dataset(root).paths(), progress=progress)  # the cached set
        names = embeddings.paths
        pairs = [(names[i], names[j]) for i, j, _ in similar_pairs(embeddings.vectors, similarity)]
        found["embedding"] = count_crossing(pairs, split, f"embedding cosine >= {similarity:g}")
    return found
