"""A CSV log written row by row (long camera sessions); whole files go through allx.files."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from allx.errors import OutputError


class StreamedCsv:
    """A CSV written row by row to PATH.part and renamed to PATH when closed (long camera sessions)."""

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.part, "w", encoding="utf-8", newline="")
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err}), expected a writable path") from None
        self.writer = csv.writer(self.file)
        self.writer.writerow(header)

    def write(self, row: Sequence) -> None:
        self.writer.writerow(row)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            os.replace(self.part, self.path)
