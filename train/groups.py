"""Groups of images that must stay in one subset or fold: the unit a split or a fold assigns.

A group is never split. Groups are the connected components of these links, within one class:
- exact and perceptual-hash near-duplicates (always; label conflicts are dropped whole, as before);
- `SplitKind.SEQUENCE`: blocks of `block_size` consecutive file numbers within a class (a patient proxy:
  the files are numbered in acquisition order, so neighbouring numbers are often one patient's slide);
- `SplitKind.GROUPS`: the patient or slide ID of each image, from a groups file (columns path,group);
- optionally, pairs whose backbone embeddings are at least `similarity` cosine-similar (shifted views
  of one field that the phash misses; see allx.train.embeddings).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from allx.errors import DataError, UsageError
from allx.layout import SplitKind
from allx.train.dataset import Dataset, scan_dataset
from allx.train.duplicates import NEAR_DISTANCE, Duplicates, class_of, find_duplicates
from allx.train.embeddings import check_similarity, image_embeddings, neighbour_method, similar_pairs

# Measured on the ALL data (benchmarks/results/neighbours.json): the mean centred cosine similarity of
# two files of one class is 0.42-0.47 up to 12 file numbers apart, 0.39 at 16-24, 0.33 at 32-48 and
# levels off at 0.28-0.29 from 64 on (acquisition runs fade out by ~48-64 files); the data set averages
# 37 images per patient (3,256 images, 89 patients). Blocks of 48 put 92% of the embedding near-neighbour
# pairs inside one block and still leave the smallest class (Benign, 504) 11 blocks: two or more per
# fold for 5 folds, plus validation blocks inside each fold.
DEFAULT_BLOCK_SIZE = 48
SHOWN = 3  # paths or groups named in one error line

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Grouping:
    """The groups of a data set: each kept image in exactly one group, each group inside one class."""

    kind: SplitKind
    root: Path
    classes: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    duplicates: Duplicates
    unreadable: tuple[tuple[str, str], ...]
    method: dict  # how the groups were made, as split meta and cv.json record it

    def by_class(self) -> dict[str, list[tuple[str, ...]]]:
        return {c: [g for g in self.groups if class_of(g[0]) == c] for c in self.classes}

    def group_of(self) -> dict[str, int]:
        """path -> index of its group."""
        return {p: k for k, group in enumerate(self.groups) for p in group}


def make_groups(data_dir: str | Path, kind: SplitKind = SplitKind.NEAR_DUPLICATE, groups_file: str | Path | None = None,
                block_size: int = DEFAULT_BLOCK_SIZE, similarity: float | None = None,
                distance: int = NEAR_DISTANCE, progress: Progress | None = None) -> Grouping:
    """Scan, hash and group a data set (see the module docstring); options are checked before the work."""
    kind = check_kind(kind, groups_file, block_size)
    if similarity is not None:
        check_similarity(similarity)
    dataset = scan_dataset(data_dir)
    if len(dataset.classes) < 2:
        raise DataError(f"{dataset.root}: got 1 class folder {list(dataset.classes)}, expected at least 2 to split")
    labels = {}
    if kind is SplitKind.GROUPS:
        labels = read_groups_file(groups_file, dataset)  # before hashing: a wrong file fails fast
    elif kind is SplitKind.SEQUENCE:
        labels = sequence_blocks(dataset.paths(), block_size)
    hashing = (lambda done, total: progress("hashing images", done, total)) if progress else None
    duplicates = find_duplicates(dataset.root, dataset.paths(), distance, hashing)
    kept = kept_groups(duplicates)
    paths = sorted(p for g in kept for p in g)
    links = [(g[0], p) for g in kept for p in g[1:]] + label_links(labels, set(paths))
    method = {"kind": kind.value, "near_duplicate": duplicates.method()}
    if kind is SplitKind.SEQUENCE:
        method["block_size"] = block_size
    if kind is SplitKind.GROUPS:
        method["groups_file"] = str(groups_file)
    if similarity is not None:
        pairs = neighbour_links(dataset.root, dataset.paths(), set(paths), similarity, progress)
        links += pairs
        method["neighbours"] = {**neighbour_method(similarity), "pairs_joined": len(pairs)}
    groups = connected_groups(paths, links)
    method["groups"] = len(groups)
    method["largest_group"] = max((len(g) for g in groups), default=0)
    unreadable = dataset.unreadable + duplicates.unreadable
    return Grouping(kind, dataset.root, dataset.classes, groups, duplicates, unreadable, method)


def check_kind(kind, groups_file, block_size) -> SplitKind:
    try:
        kind = SplitKind(kind)
    except ValueError:
        raise UsageError(f"got grouping {kind!r}, expected one of {', '.join(k.value for k in SplitKind)}") from None
    if kind is SplitKind.IMAGE:
        raise UsageError("got grouping 'image', expected near-duplicate, sequence or groups (allx never splits "
                        "near-duplicates apart)")
    if kind is SplitKind.GROUPS and groups_file is None:
        raise UsageError("grouping by groups needs a groups file (--groups GROUPS.csv with columns path,group)")
    if kind is not SplitKind.GROUPS and groups_file is not None:
        raise UsageError(f"got a groups file with grouping {kind.value!r}, expected grouping 'groups'")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise UsageError(f"--block-size: got {block_size!r}, expected a whole number of files >= 1")
    return kind


def kept_groups(duplicates: Duplicates) -> list[tuple[str, ...]]:
    """Every near-duplicate group minus its extra exact copies; groups spanning classes are dropped whole."""
    copies, conflicted = duplicates.copies(), {p for c in duplicates.conflicts for p in c.paths}
    return [tuple(p for p in g if p not in copies) for g in duplicates.groups if g[0] not in conflicted]


def label_links(labels: dict[str, str], kept: set[str]) -> list[tuple[str, str]]:
    """Links joining every kept image to the first kept image with the same label."""
    first: dict[str, str] = {}
    links = []
    for path in sorted(labels):
        if path in kept:
            anchor = first.setdefault(labels[path], path)
            if anchor != path:
                links.append((anchor, path))
    return links


def connected_groups(paths: list[str], links) -> tuple[tuple[str, ...], ...]:
    """Connected components of the links over paths (every path in exactly one sorted group)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    index = {p: k for k, p in enumerate(paths)}
    rows = np.array([index[a] for a, _ in links], dtype=np.int64)
    cols = np.array([index[b] for _, b in links], dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(paths), len(paths)))
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[str]] = {}
    for path, label in zip(paths, component.tolist()):
        members.setdefault(label, []).append(path)
    return tuple(sorted(tuple(sorted(g)) for g in members.values()))


# --- sequence blocks --------------------------------------------------------------------------------

NUMBER = re.compile(r"(\d+)\D*$")


def file_number(relpath: str) -> int | None:
    """The last number in a file name's stem (WBC-Benign-012.jpg -> 12), or None."""
    found = NUMBER.search(PurePosixPath(relpath).stem)
    return int(found.group(1)) if found else None


def file_order(relpath: str) -> tuple[int, str]:
    """Sort key in capture order: the file number (unnumbered names first), then the name."""
    number = file_number(relpath)
    return (-1 if number is None else number, PurePosixPath(relpath).name)


def sequence_blocks(relpaths, block_size: int) -> dict[str, str]:
    """path -> "<class>#<block>": blocks of block_size consecutive file numbers within each class."""
    unnumbered = [p for p in relpaths if file_number(p) is None]
    if unnumbered:
        raise DataError(f"--group-by sequence: {len(unnumbered)} file name(s) carry no number: "
                        f"{listing(unnumbered)}; expected numbered files (e.g. Benign/img-012.jpg) or --groups")
    blocks = {}
    by_class: dict[str, list[str]] = {}
    for path in relpaths:
        by_class.setdefault(class_of(path), []).append(path)
    for name, paths in by_class.items():
        ordered = sorted(paths, key=lambda p: (file_number(p), p))
        blocks.update({p: f"{name}#{k // block_size}" for k, p in enumerate(ordered)})
    return blocks


# --- groups file ------------------------------------------------------------------------------------

def read_groups_file(path: str | Path, dataset: Dataset) -> dict[str, str]:
    """path -> group from a CSV with columns path,group (paths relative to DATA_DIR). Every readable
    image must be listed once, every listed path must exist, and a group must stay inside one class."""
    path = Path(path)
    rows = read_rows(path)
    known = set(dataset.paths())
    labels: dict[str, str] = {}
    empty, repeated = [], []
    for line, (relpath, group) in rows:
        if not group:
            empty.append(f"{relpath or '?'} (line {line})")
        elif relpath in labels and labels[relpath] != group:
            repeated.append(relpath)
        labels[relpath] = group
    if empty:
        raise DataError(f"{path}: {len(empty)} row(s) with an empty group: {listing(empty)}; expected a patient "
                        "or slide ID on every row")
    if repeated:
        raise DataError(f"{path}: {len(repeated)} path(s) listed with two groups: {listing(repeated)}")
    unknown = sorted(set(labels) - known)
    if unknown:
        raise DataError(f"{path}: {len(unknown)} path(s) not found among the images under {dataset.root}: "
                        f"{listing(unknown)}; expected paths relative to DATA_DIR such as {sorted(known)[0]}")
    missing = sorted(known - set(labels))
    if missing:
        raise DataError(f"{path}: {len(missing)} image(s) under {dataset.root} have no group: {listing(missing)}; "
                        "expected a row path,group for every image")
    check_one_class_per_group(labels, path)
    return labels


def read_rows(path: Path) -> list[tuple[int, tuple[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in columns or "group" not in columns:
                raise DataError(f"{path}: got columns {columns}, expected a header with path,group")
            reader.fieldnames = columns
            rows = [(reader.line_num, (norm(row.get("path")), norm(row.get("group")))) for row in reader]
    except FileNotFoundError:
        raise DataError(f"groups file {path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"groups file {path}: cannot read it as CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: no rows, expected one row path,group per image")
    return rows


def norm(value) -> str:
    return (value or "").strip()


def check_one_class_per_group(labels: dict[str, str], path: Path) -> None:
    classes: dict[str, set[str]] = {}
    for relpath, group in labels.items():
        classes.setdefault(group, set()).add(class_of(relpath))
    spanning = sorted(g for g, c in classes.items() if len(c) > 1)
    if spanning:
        shown = [f"{g} ({', '.join(sorted(classes[g]))})" for g in spanning]
        raise DataError(f"{path}: {len(spanning)} group(s) span two or more classes: {listing(shown)}; expected "
                        "each patient or slide under one class (fix the labels or the groups)")


def listing(items) -> str:
    items = list(items)
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


# --- embedding neighbours ---------------------------------------------------------------------------

def neighbour_links(root: Path, scanned: list[str], kept: set[str], similarity: float, progress: Progress | None):
    """Pairs of kept images within one class whose embeddings are at least `similarity` cosine-similar.
    Every scanned image is embedded (one cache entry per data set, shared with `allx data inspect`)."""
    report = (lambda done, total: progress("embeddings", done, total)) if progress else None
    embeddings = image_embeddings(root, scanned, progress=report)
    names = embeddings.paths
    return [(names[i], names[j]) for i, j, _ in similar_pairs(embeddings.vectors, similarity)
            if names[i] in kept and names[j] in kept and class_of(names[i]) == class_of(names[j])]


def grouping_options(group_by: str | None, groups_file, neighbours: bool | None,
                     similarity: float) -> tuple[SplitKind, float | None]:
    """The grouping kind and the embedding-neighbour threshold (None: not joined) from command-line options.

    A groups file means grouping by groups; embedding neighbours are joined by default for the
    patient-like groupings (sequence, groups) and only on request for near-duplicates alone."""
    if groups_file is not None and group_by not in (None, SplitKind.GROUPS.value):
        raise UsageError(f"got --groups and --group-by {group_by}, expected one of them")
    if groups_file is not None:
        kind = SplitKind.GROUPS
    else:
        choices = (SplitKind.NEAR_DUPLICATE.value, SplitKind.SEQUENCE.value)
        if group_by not in (None, *choices):
            raise UsageError(f"--group-by: got {group_by!r}, expected {' or '.join(choices)} (or --groups GROUPS.csv)")
        kind = SplitKind(group_by or SplitKind.NEAR_DUPLICATE.value)
    join = neighbours if neighbours is not None else kind in (SplitKind.SEQUENCE, SplitKind.GROUPS)
    return kind, check_similarity(similarity) if join else None
