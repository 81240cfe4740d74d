"""Atomic file writes for the runner's results (CSV, JSON, Markdown, streamed logs)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from allx.errors import AllxError
from allx.files import write_atomic


def write_text_atomic(path: str | Path, text: str) -> Path:
    """allx.files.write_atomic, with an unwritable path as one clear AllxError."""
    try:
        return write_atomic(path, text)
    except OSError as err:
        raise AllxError(f"{path}: cannot write ({err.strerror or err}), expected a writable path") from None


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
