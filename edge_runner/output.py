"""A CSV log appended row by row (long camera sessions) through allx.files.SharedLog."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from allx.errors import OutputError
from allx.files import LogMismatch, SharedLog, csv_line


class StreamedCsv:
    """A CSV log that sessions append to: the header once, then every row as it comes.

    allx.files.SharedLog does the writing: two processes given the same PATH both keep all their rows
    (each row is written whole under a lock), a log with other columns is refused, a crash keeps the rows.
    """

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.path = Path(path)
        try:
            self.file = SharedLog(self.path, csv_line(header))
        except LogMismatch as err:
            raise OutputError(f"{self.path}: {err.strerror}, expected a log of the columns "
                              f"{','.join(header)} (give a new --log path)") from None
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}), expected a writable path") \
                from None

    def write(self, row: Sequence) -> None:
        try:
            self.file.write(csv_line(row))
        except OSError as err:
            self.close()
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}); the rows so far are in "
                              f"{self.path}") from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:
            raise OutputError(f"{self.path}: cannot close ({err.strerror or err})") from None

