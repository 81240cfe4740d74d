"""A CSV log written row by row (long camera sessions) through allx.files.StreamedFile."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from allx.errors import OutputError
from allx.files import LogInUse, StreamedFile


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
            raise OutputError(f"{self.path}: another process is writing this log, expected a log path of "
                              "its own") from None
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}), expected a writable path") \
                from None
        self.write(header)

    def write(self, row: Sequence) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(row)
        try:
            self.file.write(buffer.getvalue())
        except OSError as err:
            self.file.abandon()
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}); the rows so far are in "
                              f"{self.file.part}") from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}); the rows so far are in "
                              f"{self.file.part}") from None
