"""How a shipped figure was measured: one record shape, written beside every number `allx convert` ships.

A threshold or rate chosen on images that share patients with the training images is too tight for new
patients (a random validation split, or near-duplicate groups that cannot see patients). Each figure in
model.json therefore carries an evidence record saying whether it was measured out of group (on images
scored by statistics fitted without their group) and over which grouping, how many groups, folds and
images, and an interval. JSON carries the codes below; `words` renders them for people (allx-edge info,
the convert report, the web page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allx.layout import SplitKind

OUT_OF_GROUP = "out-of-group"
SHARES_GROUPS = "shares groups with training"

# grouping codes (the split kinds' codes): how images were grouped so that a fold holds out whole patients
PATIENT_GROUPS = SplitKind.GROUPS.value  # patient or slide IDs (--groups)
FILE_BLOCKS = SplitKind.SEQUENCE.value  # contiguous blocks of file numbers per class, a proxy for patients
SINGLE_IMAGES = SplitKind.IMAGE.value  # each image its own group (file names carry no numbers: no proxy)
GROUPING_WORDS = {
    PATIENT_GROUPS: "patient groups (--groups)",
    FILE_BLOCKS: "blocks of consecutive file numbers per class, a proxy for patients: no patient IDs given",
    SINGLE_IMAGES: "single images: no patient IDs, and no file numbers to stand in for them",
    SplitKind.NEAR_DUPLICATE.value: "near-duplicate groups, which cannot see patients",
}
# A figure measured on the split's own validation images names the split's grouping; an image-level split
# (SplitKind.IMAGE) there means no grouping at all, not file names without numbers.
SHARED_GROUPING_WORDS = {SINGLE_IMAGES: "an image-level split: no grouping, so these images may come from the "
                                        "training images' patients"}
INTERVAL_LEVEL = 0.95
BOOTSTRAP_DRAWS = 1000


@dataclass(frozen=True)
class Evidence:
    """Where one figure was measured; `interval` is a 95% interval of the figure (None when not computed)."""

    on: str  # OUT_OF_GROUP or SHARES_GROUPS
    grouping: str  # a grouping code above (or a split kind code for a figure measured on a split's subset)
    groups: int
    folds: int  # 0: a single held-out subset, not cross-fitted
    images: int
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {"on": self.on, "grouping": self.grouping, "groups": self.groups, "folds": self.folds,
                "images": self.images, "interval": None if self.interval is None else list(self.interval)}

    @classmethod
    def from_dict(cls, data) -> Evidence | None:
        """A stored record, or None when `data` is not one (an older model.json carries none)."""
        if not isinstance(data, dict) or data.get("on") not in (OUT_OF_GROUP, SHARES_GROUPS):
            return None
        interval = data.get("interval")
        interval = (float(interval[0]), float(interval[1])) if isinstance(interval, list) and len(interval) == 2 else None
        number = (lambda key: int(data[key]) if isinstance(data.get(key), (int, float)) else 0)
        return cls(data["on"], str(data.get("grouping", "")), number("groups"), number("folds"), number("images"),
                   interval)

    def words(self, percent: bool = True) -> str:
        """E.g. "out of group: 5 folds over 56 groups (blocks of ...), 2,604 images; 95% interval 3.1%-5.0%"."""
        words = GROUPING_WORDS if self.on == OUT_OF_GROUP else {**GROUPING_WORDS, **SHARED_GROUPING_WORDS}
        how = words.get(self.grouping, self.grouping)
        where = (f"out of group: {self.folds} folds over {self.groups:,} groups ({how})" if self.on == OUT_OF_GROUP
                 else f"on images that share groups with training ({how}, {self.groups:,} groups)")
        text = f"{where}, {self.images:,} images"
        if self.interval is not None:
            lo, hi = self.interval
            shown = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.3f}")
            text += f"; {INTERVAL_LEVEL:.0%} interval {shown(lo)}-{shown(hi)}"
        return text


def group_interval(values: Sequence[float], groups: Sequence, seed: int = 0,
                   draws: int = BOOTSTRAP_DRAWS) -> tuple[float, float]:
    """95% interval of the mean of `values` from a bootstrap over whole groups (images of one patient are
    not independent, so resampling images would give too narrow an interval)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return (0.0, 0.0)
    _, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    sums, counts = np.bincount(codes, values), np.bincount(codes)
    picks = np.random.default_rng(seed).integers(0, len(counts), size=(draws, len(counts)))
    means = sums[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1)
    tail = (1 - INTERVAL_LEVEL) / 2
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def rate_record(flags: Sequence[bool], groups: Sequence, evidence: Evidence, seed: int = 0,
                images: int | None = None) -> dict:
    """model.json "expected_rates" entry: {"rate", "n", "evidence"} with the group-bootstrap interval; n counts
    the flags (fields or samples), `images` the images behind them (default: one per flag)."""
    flags = np.asarray(flags, dtype=np.float64)
    record = Evidence(evidence.on, evidence.grouping, evidence.groups, evidence.folds,
                      len(flags) if images is None else images, group_interval(flags, groups, seed))
    return {"rate": float(flags.mean()) if len(flags) else 0.0, "n": len(flags), "evidence": record.to_dict()}
