"""Train/val/test splits: whole groups (allx.train.groups) assigned per class, saved and read as SPLIT.json.

SPLIT.json is `{"classes": [...], "train": [...], "val": [...], "test": [...], "meta": {...}}` with paths
relative to DATA_DIR (POSIX, first component = class folder). Any file of that shape is accepted, also
one written by hand: val, test and meta may be missing, other keys are kept in meta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from allx import __version__
from allx.errors import DataError
from allx.layout import RecordKind, SplitKind
from allx.files import write_json
from allx.jsonio import read_json
from allx.train.dataset import data_fingerprint
from allx.train.duplicates import NEAR_DISTANCE, class_of
from allx.train.groups import DEFAULT_BLOCK_SIZE, Grouping, Progress, kept_groups, make_groups

SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Paths per subset (relative to DATA_DIR); a path's class is its first folder."""

    classes: tuple[str, ...]
    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def subset(self, name: str) -> tuple[str, ...]:
        if name not in SUBSETS:
            raise DataError(f"got subset {name!r}, expected one of {', '.join(SUBSETS)}")
        return getattr(self, name)

    def labels(self, name: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[class_of(p)] for p in self.subset(name)]

    def counts(self) -> dict[str, dict[str, int]]:
        """subset -> class -> number of images."""
        return {s: {c: sum(class_of(p) == c for p in self.subset(s)) for c in self.classes} for s in SUBSETS}

    @property
    def kind(self) -> SplitKind:
        """How related images were kept together (meta["split_kind"]; hand-written splits are image-level)."""
        return SplitKind.parse(self.meta.get("split_kind"))

    def to_json(self) -> dict:
        return {"kind": RecordKind.SPLIT.value, "classes": list(self.classes),
                **{s: list(self.subset(s)) for s in SUBSETS}, "meta": self.meta}


def make_split(data_dir: str | Path, val: float = 0.15, test: float = 0.15, seed: int = 42,
               distance: int = NEAR_DISTANCE, progress: Progress | None = None,
               group_by: SplitKind | str = SplitKind.NEAR_DUPLICATE, groups_file: str | Path | None = None,
               block_size: int = DEFAULT_BLOCK_SIZE, similarity: float | None = None) -> Split:
    """Stratified split in which groups (allx.train.groups: near-duplicates always, plus file-number
    blocks, patient IDs or embedding neighbours as asked) never straddle subsets.

    One copy of each exact duplicate is kept (the first path in sorted order); a near-duplicate group
    spanning classes (label conflict) is dropped whole. Unreadable files are left out and listed in meta.
    """
    fractions = check_fractions(val, test)
    check_seed(seed)
    grouping = make_groups(data_dir, group_by, groups_file, block_size, similarity, distance, progress)
    return split_groups(grouping, fractions, seed)


def split_groups(grouping: Grouping, fractions: dict[str, float], seed: int) -> Split:
    """Assign whole groups to train/val/test: per class, groups are shuffled with `seed` and each goes
    whole to the subset furthest below its target count, so subsets match the fractions up to the
    size of the last groups."""
    by_class = grouping.by_class()
    check_class_sizes(by_class, fractions)
    rng = np.random.default_rng(seed)
    subsets: dict[str, list[str]] = {s: [] for s in SUBSETS}
    for name, class_groups in by_class.items():
        shuffled = [class_groups[k] for k in rng.permutation(len(class_groups))]
        for subset, group in zip(assign_groups(shuffled, fractions, name), shuffled):
            subsets[subset].extend(group)
    split = Split(grouping.classes, *(tuple(sorted(subsets[s])) for s in SUBSETS))
    meta = split_meta(grouping, split, fractions, seed)
    return Split(split.classes, split.train, split.val, split.test, meta)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"got seed {seed!r}, expected a non-negative integer")
    return seed


def check_fractions(val: float, test: float) -> dict[str, float]:
    for name, value in (("val", val), ("test", test)):
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise DataError(f"got {name} fraction {value!r}, expected a number in [0, 1)")
    if val + test >= 1:
        raise DataError(f"got val {val} + test {test} = {val + test:g}, expected less than 1 (train needs the rest)")
    return {"train": round(1 - val - test, 10), "val": val, "test": test}


def needed_per_class(fractions: dict[str, float]) -> int:
    """Fewest images a class needs so every subset with a non-zero fraction gets at least one."""
    return max(math.ceil(1 / f - 1e-9) for f in fractions.values() if f > 0)


def check_class_sizes(by_class: dict[str, list[tuple[str, ...]]], fractions: dict[str, float]) -> None:
    needed = needed_per_class(fractions)
    wanted = [s for s in SUBSETS if fractions[s] > 0]
    for name, groups in by_class.items():
        images = sum(len(g) for g in groups)
        if images < needed:
            raise DataError(f"class {name!r} has {images} usable image(s), needs at least {needed} to give "
                            f"{', '.join(wanted)} one each at fractions "
                            + ", ".join(f"{s}={fractions[s]:g}" for s in wanted))
        if len(groups) < len(wanted):
            raise DataError(f"class {name!r}: its {images} images form {len(groups)} near-duplicate group(s), "
                            f"need at least {len(wanted)} to give {', '.join(wanted)} one each")


def target_counts(n: int, fractions: dict) -> dict:
    """Largest-remainder rounding: counts sum to n and none falls below floor(n * fraction)."""
    exact = {s: n * f for s, f in fractions.items()}
    counts = {s: math.floor(exact[s]) for s in fractions}
    by_remainder = sorted(fractions, key=lambda s: counts[s] - exact[s])
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def assign_groups(groups: list[tuple[str, ...]], fractions: dict, name: str, strict: bool = True) -> list:
    """The part (subset or fold) of each group: whole groups go to the part furthest below its target
    (ties: the first in `fractions`' order). `strict`: every part with a target must get an image."""
    targets = target_counts(sum(len(g) for g in groups), fractions)
    open_subsets = [s for s in fractions if targets[s] > 0]
    filled = {s: 0 for s in fractions}
    chosen = []
    for group in groups:
        subset = max(open_subsets, key=lambda s: targets[s] - filled[s])  # ties: train, val, test
        filled[subset] += len(group)
        chosen.append(subset)
    empty = [str(s) for s in open_subsets if filled[s] == 0]
    if empty and strict:
        raise DataError(f"class {name!r}: its near-duplicate groups could not give {', '.join(empty)} any image "
                        f"(group sizes {sorted(len(g) for g in groups)}); lower the distance, the block size "
                        "or the fractions")
    return chosen


def split_meta(grouping: Grouping, split: Split, fractions, seed: int) -> dict:
    """What a reader needs to trust or reproduce the split."""
    all_paths = [p for s in SUBSETS for p in split.subset(s)]
    kept_paths = set(all_paths)
    duplicates = grouping.duplicates
    return {
        "created_by": f"allx data split (allx {__version__})",
        "split_kind": grouping.kind.value,
        "seed": seed,
        "fractions": fractions,
        "data_dir": str(grouping.root),
        "data_fingerprint": data_fingerprint(grouping.root, all_paths),
        "counts": split.counts(),
        "grouping": grouping.method,
        "near_duplicate": duplicates.method(),
        "near_duplicate_groups": [list(g) for g in kept_groups(duplicates) if len(g) > 1],
        "groups": len(grouping.groups),
        "dropped_duplicates": [{"path": p, "copy_of": kept} for p, kept in sorted(duplicates.copies().items())
                               if kept in kept_paths],  # copies inside a label conflict are listed there
        "label_conflicts": [c.to_json() for c in duplicates.conflicts],
        "unreadable": [{"path": p, "reason": r} for p, r in grouping.unreadable],
    }


def write_split(split: Split, path: str | Path) -> Path:
    """Write SPLIT.json atomically (temp file in the same folder, then rename); parents are created."""
    path = Path(path)
    try:
        write_json(path, split.to_json(), indent=1)
    except OSError as err:
        raise DataError(f"cannot write split file {path}: {err.strerror or err}") from None
    return path


def read_split(path: str | Path, data_dir: str | Path) -> Split:
    """Read and check a SPLIT.json against data_dir: every path exists, sits in a listed class and
    appears once. Raises DataError with one line naming the first problem."""
    path, root = Path(path), Path(data_dir)
    document = load_json(path)
    if not root.is_dir():
        raise DataError(f"data directory {root}: no such directory")
    classes = check_classes(document.get("classes"), path)
    subsets, seen = {}, {}
    for name in SUBSETS:
        subsets[name] = check_paths(document.get(name), name, path, classes, seen, required=name == "train")
    if not seen:
        raise DataError(f"{path}: names no images, expected paths in train, val or test")
    missing = [p for p in seen if not (root / p).is_file()]  # a link to an image elsewhere is its class's image
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataError(f"{path}: {len(missing)} file(s) missing under {root}: {', '.join(missing[:3])}{more}")
    meta = dict(document["meta"]) if isinstance(document.get("meta"), dict) else {}
    meta.update({k: v for k, v in document.items() if k not in (*SUBSETS, "classes", "meta", "kind")})
    return Split(classes, subsets["train"], subsets["val"], subsets["test"], meta)


def load_json(path: Path) -> dict:
    """The split document (allx.jsonio: size and nesting limits, finite numbers), as a JSON object."""
    document = read_json(path, "split file")
    if not isinstance(document, dict):
        raise DataError(f"split file {path}: got a JSON {type(document).__name__}, "
                        'expected an object {"classes": [...], "train": [...], "val": [...], "test": [...]}')
    return document


def check_classes(classes, path: Path) -> tuple[str, ...]:
    if not isinstance(classes, list) or not classes:
        raise DataError(f"{path}: got classes {classes!r}, expected a non-empty list of class folder names")
    for name in classes:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise DataError(f"{path}: got class name {name!r}, expected a folder name")
    if len(set(classes)) != len(classes):
        raise DataError(f"{path}: classes list a name twice: {classes}")
    return tuple(classes)


def check_paths(paths, subset: str, path: Path, classes, seen: dict, required: bool) -> tuple[str, ...]:
    """One subset's list: relative POSIX paths inside a listed class, none seen before."""
    if paths is None and not required:
        return ()
    if not isinstance(paths, list):
        raise DataError(f"{path}: got {subset} = {paths!r:.60}, expected a list of paths relative to DATA_DIR")
    normalized = []
    for item in paths:
        if not isinstance(item, str) or not item:
            raise DataError(f"{path}: got {item!r} in {subset}, expected a path string")
        parts = PurePosixPath(item).parts  # "C/./f" and "C//f" are "C/f": one image, one spelling
        if item.startswith("/") or "\\" in item or ".." in parts or len(parts) < 2:
            raise DataError(f"{path}: got {item!r} in {subset}, expected a relative POSIX path <class>/<file>")
        item = "/".join(parts)
        normalized.append(item)
        if parts[0] not in classes:
            raise DataError(f"{path}: {item!r} in {subset} is in folder {parts[0]!r}, "
                            f"expected one of the classes {list(classes)}")
        if item in seen:
            where = "twice in " + subset if seen[item] == subset else f"in both {seen[item]} and {subset}"
            raise DataError(f"{path}: {item!r} is listed {where}")
        seen[item] = subset
    return tuple(normalized)
