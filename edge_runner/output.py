"""Atomic file writes for the runner's results (CSV, JSON, Markdown, streamed logs)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from allx.errors import AllxError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write to a temporary file in the same folder, then rename over `path` (never a half-written file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temp, path)
    except OSError as err:
        raise AllxError(f"{path}: cannot write ({err.strerror or err}), expected a writable path") from None
    return path


def write_json(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


class StreamedCsv:
    """A CSV written row by row to PATH.part and renamed to PATH when closed (long camera sessions)."""

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.part, "w", encoding="utf-8", newline="")
        except OSError as err:
            raise AllxError(f"{self.path}: cannot write ({err.strerror or err}), expected a writable path") from None
        self.writer = csv.writer(self.file)
        self.writer.writerow(header)

    def write(self, row: Sequence) -> None:
        self.writer.writerow(row)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            os.replace(self.part, self.path)
