"""Atomic file writes for the runner's results (CSV, JSON, Markdown, streamed logs)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

from allx.errors import AllxError
from allx.files import LogInUse, StreamedFile, write_atomic


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
    """A CSV written row by row to PATH.part and renamed to PATH when closed (long camera sessions).

    allx.files.StreamedFile does the writing: no planted link is followed, and a second process given
    the same PATH is refused (exit 2) instead of one of the two logs being lost.
    """

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.path = Path(path)
        try:
            self.file = StreamedFile(self.path)
        except LogInUse:
            raise AllxError(f"{self.path}: another process is writing this log, expected a log path of "
                            "its own") from None
        except OSError as err:
            raise AllxError(f"{self.path}: cannot write ({err.strerror or err}), expected a writable file path") \
                from None
        self.write(header)

    def write(self, row: Sequence) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(row)
        try:
            self.file.write(buffer.getvalue())
        except OSError as err:
            self.file.abandon()
            raise AllxError(f"{self.path}: cannot write ({err.strerror or err}); the rows so far are in "
                            f"{self.file.part}") from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:
            raise AllxError(f"{self.path}: cannot write ({err.strerror or err}); the rows so far are in "
                            f"{self.file.part}") from None
