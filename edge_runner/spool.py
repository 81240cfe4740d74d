"""Rows that waited for a locked audit log: a file beside the log, replayed by its next writer.

When another process holds the log past the busy timeout, the row goes to `<log>.spool` (one JSON line,
written under an advisory lock and synced) instead of waiting in memory, so a Ctrl-C or a crash loses
nothing. Each line carries an HMAC under the spool key of the log's key file: a line someone else wrote
or changed is refused at replay. The next write to the log first replays the spool, in order, each row
keeping the time it was spooled (`spooled_utc`), inside the same transaction and seal as its own row.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import secrets
from pathlib import Path

from allx import layout
from allx.edge_runner.seal import SealingKey, mac
from allx.errors import DataError
from allx.files import SharedLog

HEADER = "allx-audit-spool 1\n"
MAC_FIELDS = ("id", "spooled_utc", "record")


def spool_path(log_path: Path) -> Path:
    return Path(log_path).with_name(layout.AUDIT_SPOOL.format(log_name=Path(log_path).name))


def add(log_path: Path, key: SealingKey, record: dict, spooled_utc: str) -> None:
    """Keep one record for the next writer (durably: written, then synced)."""
    line = {"id": secrets.token_hex(16), "spooled_utc": spooled_utc, "record": record}
    line["mac"] = mac(key.spool_key, {name: line[name] for name in MAC_FIELDS})
    path = spool_path(log_path)
    try:
        spool = SharedLog(path, HEADER)
        try:
            spool.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
            os.fsync(spool.fd)
        finally:
            spool.close()
    except OSError as err:
        raise DataError(f"{path}: cannot keep a row for the locked audit log ({err.strerror or err}), expected a "
                        "writable folder beside the log") from None


class Pending:
    """The spool's lines, read under its lock; `clear()` empties it once they are committed to the log."""

    def __init__(self, path: Path, fd: int, lines: list[dict]):
        self.path, self.fd, self.lines = path, fd, lines

    def clear(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, len(HEADER))
            os.fsync(self.fd)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1


def take(log_path: Path, key: SealingKey) -> Pending:
    """The waiting lines (none when there is no spool), locked until clear() or release()."""
    path = spool_path(log_path)
    try:
        if path.stat().st_size <= len(HEADER):
            return Pending(path, -1, [])
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return Pending(path, -1, [])
    except OSError as err:
        raise DataError(f"{path}: cannot read the rows kept for the audit log ({err.strerror or err}), expected a "
                        "readable file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = b""
        while block := os.read(fd, 1 << 20):
            data += block
        return Pending(path, fd, parse(path, data.decode("utf-8", "replace"), key))
    except BaseException:
        os.close(fd)
        raise


def parse(path: Path, text: str, key: SealingKey) -> list[dict]:
    """Checked lines; a torn last line (a writer killed mid-line) was never acknowledged and is dropped."""
    if not text.startswith(HEADER):
        raise DataError(f"{path}: got {text[:30]!r}, expected a spool starting {HEADER.strip()!r}; move it aside")
    body = text[len(HEADER):]
    lines = body.split("\n")[:-1]  # the part after the last newline is torn (or empty)
    checked = []
    for number, line in enumerate(lines, start=2):
        try:
            item = json.loads(line)
            good = hmac.compare_digest(mac(key.spool_key, {name: item[name] for name in MAC_FIELDS}), str(item["mac"]))
        except (ValueError, KeyError, TypeError):
            good = False
        if not good or not isinstance(item.get("record"), dict):
            raise DataError(f"{path}: line {number}: got a row this device did not write (its MAC does not match), "
                            "expected only rows kept by allx-edge; move the file aside to go on, and keep it")
        checked.append(item)
    return checked
