"""Atomic writes for every allx output: a temp file beside the target, then os.replace.

A reader (or a Ctrl-C) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from allx.errors import OutputError


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (str is UTF-8) to `path` atomically, with the usual (umask) permissions."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data, indent: int = 2) -> Path:
    """`data` as JSON (UTF-8, a newline at the end), atomically."""
    return write_atomic(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_write(path: str | Path, data: bytes | str) -> Path:
    """write_atomic, with an unwritable path as one clear OutputError instead of an OSError."""
    try:
        return write_atomic(path, data)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err}), expected a writable path") from None


def save_figure_atomic(figure, path: str | Path, **savefig) -> Path:
    """A matplotlib figure as PNG, atomically (the caller closes the figure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        figure.savefig(temp, format="png", **savefig)
        os.chmod(temp, 0o666 & ~current_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
