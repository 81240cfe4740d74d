"""Exact duplicates (same bytes) and near-duplicates (perceptual hash), grouped so a split keeps them together.

Near-duplicates: 64-bit DCT perceptual hash (`imagehash.phash`, 8x8) within NEAR_DISTANCE bits. Groups are
connected components of the graph "hashes within the distance" (single linkage), so chaining can put
A and C together through B even when A and C are farther apart; reports give the largest group.

Why phash <= 10, measured on all-taleqani/Original (3,256 images, 5.3 M pairs): pairs at 0..10 bits
(113) were, on every montage looked at, re-captures of the same field (same framing, focus or exposure
changed); at 12 bits 15 of 19 pairs were different fields and the first cross-class pairs appear (10),
at 14 bits 175 of 367 pairs are cross-class. Hamming distances of this phash are even (32 bits set).
Known limit: a field re-captured after moving the stage is shifted, and phash does not see that.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from allx.errors import DataError, ImageError
from allx.images import decode_image_bytes, first_line

NEAR_DISTANCE = 10
HASH_BITS = 64
MAX_BLOCK = 1 << 22  # hash pairs compared per numpy step: bounds memory to ~32 MB for any data set size


@dataclass(frozen=True)
class ImageRecord:
    """One decoded image: content hash, perceptual hash and what it looked like on disk."""

    relpath: str
    sha256: str
    phash: int
    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class Conflict:
    """A duplicate group whose images sit under more than one class folder."""

    kind: str  # "exact": the same bytes under two classes; "near": near-duplicates across classes
    paths: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({class_of(p) for p in self.paths}))

    def to_json(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes), "paths": list(self.paths)}


@dataclass(frozen=True)
class Duplicates:
    """Hashes of the readable images and how they group. `groups` covers every readable image
    (singletons included); exact copies are always in the same group."""

    records: tuple[ImageRecord, ...]
    unreadable: tuple[tuple[str, str], ...]
    distance: int
    exact_groups: tuple[tuple[str, ...], ...]
    groups: tuple[tuple[str, ...], ...]
    conflicts: tuple[Conflict, ...]

    @property
    def near_groups(self) -> tuple[tuple[str, ...], ...]:
        return tuple(g for g in self.groups if len(g) > 1)

    def largest_group(self) -> int:
        return max((len(g) for g in self.groups), default=0)

    def copies(self) -> dict[str, str]:
        """Exact copies to drop -> the copy kept (the first path of its group)."""
        return {path: group[0] for group in self.exact_groups for path in group[1:]}

    def method(self) -> dict:
        return {
            "hash": f"imagehash.phash ({HASH_BITS} bits, DCT 8x8 of a 32x32 greyscale)",
            "distance": self.distance,
            "grouping": "connected components of pairs within the distance (chaining; exact copies joined)",
            "groups": len(self.near_groups),
            "images_in_groups": sum(len(g) for g in self.near_groups),
            "largest_group": self.largest_group(),
        }


def class_of(relpath: str) -> str:
    return relpath.split("/", 1)[0]


def find_duplicates(root: Path, relpaths: list[str], distance: int = NEAR_DISTANCE,
                    progress: Callable[[int, int], None] | None = None) -> Duplicates:
    """Hash every image (unreadable ones are listed, never fatal) and group exact and near-duplicates."""
    if not 0 <= distance <= HASH_BITS:
        raise DataError(f"got near-duplicate distance {distance}, expected 0..{HASH_BITS} bits")
    records, unreadable = [], []
    for done, relpath in enumerate(relpaths, 1):
        try:
            records.append(hash_image(root, relpath))
        except ImageError as err:
            unreadable.append((relpath, str(err).removeprefix(f"{relpath}: ")))
        if progress:
            progress(done, len(relpaths))
    exact = exact_groups(records)
    groups = group_records(records, exact, distance)
    return Duplicates(tuple(records), tuple(unreadable), distance, exact, groups, find_conflicts(groups, exact))


def hash_image(root: Path, relpath: str) -> ImageRecord:
    """Content sha256 of the file's bytes and the phash of its pixels as allx.images decodes them."""
    import imagehash  # scipy underneath: only the data commands pay for it

    try:
        data = (root / relpath).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            width, height, mode = *image.size, image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{relpath}: not a readable image ({first_line(err)})") from None
    pixels = decode_image_bytes(data, relpath)  # the one loader's rules: size limit, EXIF, modes -> RGB
    phash = imagehash.phash(Image.fromarray(pixels))
    bits = np.packbits(phash.hash.flatten())
    return ImageRecord(relpath, hashlib.sha256(data).hexdigest(), int.from_bytes(bits.tobytes(), "big"),
                       width, height, mode)


def exact_groups(records: list[ImageRecord]) -> tuple[tuple[str, ...], ...]:
    by_content: dict[str, list[str]] = {}
    for record in records:
        by_content.setdefault(record.sha256, []).append(record.relpath)
    return tuple(sorted(tuple(sorted(g)) for g in by_content.values() if len(g) > 1))


def close_pairs(hashes: np.ndarray, distance: int) -> np.ndarray:
    """(i, j) index pairs, i < j, whose 64-bit hashes differ in at most `distance` bits."""
    n = len(hashes)
    rows = max(1, MAX_BLOCK // max(n, 1))
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, n, rows):
        bits = popcount(hashes[start:start + rows, None] ^ hashes[None, :])
        i, j = np.nonzero(bits <= distance)
        i = i + start
        found.append(np.stack([i[j > i], j[j > i]], axis=1))
    return np.concatenate(found)


def popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    table = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
    return table[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1)


def group_records(records: list[ImageRecord], exact: tuple[tuple[str, ...], ...],
                  distance: int) -> tuple[tuple[str, ...], ...]:
    """Union-find over close pairs and exact copies: every record in exactly one group."""
    index = {r.relpath: k for k, r in enumerate(records)}
    parent = list(range(len(records)))

    def root_of(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]  # path halving keeps the trees flat
            k = parent[k]
        return k

    hashes = np.array([r.phash for r in records], dtype=np.uint64)
    links = [tuple(pair) for pair in close_pairs(hashes, distance).tolist()]
    links += [(index[g[0]], index[p]) for g in exact for p in g[1:]]
    for a, b in links:
        parent[root_of(a)] = root_of(b)
    members: dict[int, list[str]] = {}
    for k, record in enumerate(records):
        members.setdefault(root_of(k), []).append(record.relpath)
    return tuple(sorted(tuple(sorted(g)) for g in members.values()))


def find_conflicts(groups, exact) -> tuple[Conflict, ...]:
    """Groups spanning classes; "exact" when the same bytes sit under two classes."""
    exact_across = {p for g in exact if len({class_of(x) for x in g}) > 1 for p in g}
    conflicts = []
    for group in groups:
        if len({class_of(p) for p in group}) > 1:
            kind = "exact" if exact_across.intersection(group) else "near"
            conflicts.append(Conflict(kind, group))
    return tuple(conflicts)
