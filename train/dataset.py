"""A directory-labelled image set (DATA_DIR/<class>/...): scanning, fingerprint and the `inspect` report.

Classes are the sorted names of DATA_DIR's sub-folders (hidden ones ignored), as
`keras.utils.image_dataset_from_directory` does; images may sit in nested folders below a class
folder. A path is relative to DATA_DIR, POSIX style, and its first component is its class.
A file that is a symbolic link to a regular image file elsewhere is an image of its class, as the usual
loaders (Keras, torchvision) take it: a class folder of links is a common way to build a subset. A
dangling link or one to something that is not a regular file is listed with why, never silently skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, UnidentifiedImageError

from allx.errors import DataError
from allx.images import IMAGE_SUFFIXES, first_line
from allx.train.duplicates import NEAR_DISTANCE, Duplicates, find_duplicates

Progress = Callable[[int, int], None]  # progress(done, total)


@dataclass(frozen=True)
class Dataset:
    """The images found under `root`: `items` are (relpath, class index); `unreadable` are (relpath, reason)."""

    root: Path
    classes: tuple[str, ...]
    items: tuple[tuple[str, int], ...]
    unreadable: tuple[tuple[str, str], ...] = ()

    def paths(self) -> list[str]:
        return [relpath for relpath, _ in self.items]

    def count_per_class(self) -> dict[str, int]:
        counts = Counter(index for _, index in self.items)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class InspectReport:
    """What `allx data inspect` found; `to_json()` is the documented JSON document."""

    data_dir: Path
    classes: tuple[str, ...]
    per_class: dict[str, int]
    sizes: dict[str, int]  # "WxH" -> count
    modes: dict[str, int]  # Pillow mode before conversion to RGB -> count
    unreadable: tuple[tuple[str, str], ...]
    duplicates: Duplicates

    @property
    def total(self) -> int:
        return sum(self.per_class.values())

    def balance(self) -> dict:
        """Each class's share of the images and the largest-to-smallest class ratio."""
        counts = self.per_class.values()
        smallest = min(counts, default=0)
        ratio = round(max(counts) / smallest, 3) if smallest else None
        shares = {name: round(n / self.total, 4) if self.total else 0.0 for name, n in self.per_class.items()}
        return {"shares": shares, "largest_to_smallest": ratio}

    def to_json(self) -> dict:
        dup = self.duplicates
        return {
            "data_dir": str(self.data_dir),
            "total": self.total,
            "classes": list(self.classes),
            "per_class": self.per_class,
            "balance": self.balance(),
            "sizes": self.sizes,
            "modes": self.modes,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "duplicate_groups": [list(g) for g in dup.exact_groups],
            "near_duplicate_groups": [list(g) for g in dup.near_groups],
            "label_conflicts": [conflict.to_json() for conflict in dup.conflicts],
            "near_duplicate": dup.method(),
        }


def scan_dataset(data_dir: str | Path) -> Dataset:
    """Find the class folders and their images; files that are not images are listed, never fatal.

    Each image's header is opened (not decoded), so a zero-byte or mislabelled file is caught here.
    """
    root = check_data_dir(data_dir)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class folders, expected DATA_DIR/<class>/<image files>")
    escaping = [p.name for p in class_dirs if not inside(root, p)]
    if escaping:
        raise DataError(f"{root}: class folder {escaping[0]!r} is a symbolic link leading outside DATA_DIR, "
                        "expected class folders inside it")
    classes = tuple(p.name for p in class_dirs)
    items, unreadable = [], []
    for stray in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        unreadable.append((stray.name, "not inside a class folder"))
    for index, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.rglob("*")):
            relpath = path.relative_to(root).as_posix()
            if path.is_dir() or any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            reason = file_problem(path) or check_image_header(path)
            if reason:
                unreadable.append((relpath, reason))
            else:
                items.append((relpath, index))
    if not items:
        skipped = "; ".join(f"{relpath}: {reason}" for relpath, reason in unreadable[:3])
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        raise DataError(f"{root}: no readable images in {len(classes)} class folder(s)"
                        + (f" (skipped {skipped}{more})" if skipped else "")
                        + f", expected image files ({', '.join(IMAGE_SUFFIXES)})")
    return Dataset(root, classes, tuple(items), tuple(unreadable))


def file_problem(path: Path) -> str | None:
    """Why a file (or the file a link leads to) cannot be an image, before its header is read; else None."""
    if path.is_symlink() and not path.exists():
        return "a symbolic link to nothing (its target is missing)"
    if not path.is_file():  # a FIFO would block the reader, a socket or device is no image
        return "not a regular file" + (" (a symbolic link's target)" if path.is_symlink() else "")
    return None


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symbolic link followed, is still under DATA_DIR `root`."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def check_data_dir(data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"data directory {root}: no such directory")
    if not root.is_dir():
        raise DataError(f"data directory {root}: is a file, expected a directory of class folders")
    return root.resolve()


def check_image_header(path: Path) -> str | None:
    """None for an image file whose header Pillow can read, else the reason it is skipped."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'!r})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"not a readable image ({first_line(err)})"
    if width == 0 or height == 0:
        return f"empty image ({width}x{height})"
    return None


def data_fingerprint(data_dir: str | Path, relpaths) -> str:
    """Short sha256 over (relpath, size, mtime) of each file, in the given order (order matters:
    cached features are aligned with it). A missing file is hashed as missing, not an error."""
    root = Path(data_dir)
    digest = hashlib.sha256()
    for relpath in relpaths:
        try:
            stat = (root / relpath).stat()
            digest.update(f"{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{relpath}\0missing\n".encode())
    return digest.hexdigest()[:16]


def inspect_dataset(data_dir: str | Path, distance: int = NEAR_DISTANCE,
                    progress: Progress | None = None) -> InspectReport:
    """Scan, decode and hash every image: counts, sizes, modes, unreadable files and duplicates."""
    dataset = scan_dataset(data_dir)
    duplicates = find_duplicates(dataset.root, dataset.paths(), distance, progress)
    failed = {relpath for relpath, _ in duplicates.unreadable}
    per_class = Counter(dataset.classes[index] for relpath, index in dataset.items if relpath not in failed)
    records = duplicates.records
    return InspectReport(
        data_dir=dataset.root,
        classes=dataset.classes,
        per_class={name: per_class.get(name, 0) for name in dataset.classes},
        sizes=dict(Counter(f"{r.width}x{r.height}" for r in records).most_common()),
        modes=dict(Counter(r.mode for r in records).most_common()),
        unreadable=dataset.unreadable + duplicates.unreadable,
        duplicates=duplicates,
    )
