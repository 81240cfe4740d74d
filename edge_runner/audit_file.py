"""The audit log's file before and around SQLite: whole or damaged, where its key may live, how it is opened,
and SQLite's failures as one line each."""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from allx.edge_runner import seal
from allx.errors import DataError, UsageError

BUSY_TIMEOUT_S = 30.0
SQLITE_MAGIC = b"SQLite format 3\0"


class LogLocked(DataError):
    """Another process held the log past the busy timeout (the row goes to the spool, when allowed)."""



def check_whole(path: Path) -> None:
    """A file of 0 bytes, or shorter than its SQLite header says, is a damaged log. SQLite would take an
    empty file for a new database, and the next write would silently start a new chain."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO or device would block or never end
            raise DataError(f"{path}: not a regular file, expected the audit log's SQLite file")
        size = status.st_size
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as err:
        raise DataError(f"{path}: cannot read the audit log ({err.strerror or err}), expected a readable file") from None
    if size == 0:
        raise DataError(f"{path}: got 0 bytes, expected an audit log: the file was emptied, a damaged log (keep it "
                        "for inspection; a new log is only started where no file exists)")
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise DataError(f"{path}: damaged or not an audit log (no SQLite header), expected an allx audit log "
                        "(keep this file for inspection and give another --log-db)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    counted = header[24:28] == header[92:96]  # the page count is valid when written with the change counter
    if counted and size < pages * page_size:
        raise DataError(f"{path}: got {size} bytes, expected {pages * page_size} ({pages} pages of {page_size} as "
                        "its header says): the file was cut short, a damaged log (keep it for inspection)")


def check_key_dir_apart(path: Path, key_dir: Path) -> None:
    """The sealing key must not sit beside the log: a key copied or backed up with the log proves nothing."""
    folder, keys = path.resolve().parent, key_dir.resolve()
    if keys == folder:
        raise UsageError(f"{key_dir}: got the sealing keys' folder = the log's folder, expected another folder "
                         "(the user's config folder by default)")


def check_not_gone(path: Path, key_dir: Path) -> None:
    """No file, but a key says a log written to was here: it was removed or moved, not never made."""
    for key in seal.keys_naming(key_dir, path.resolve()):
        raise DataError(f"{path}: no such file, but the sealing key {key.path} belongs to a log written here (up to "
                        f"seal {key.epoch}), expected that log: restore it, or move the key aside to start a new log")


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection; read-only ones open an archived log in a read-only folder too (SQLite cannot make the
    WAL index file there, so such a log is opened immutable, which it is, once every row is in the main file)."""
    if not readonly:
        return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    target = f"file:{quote(str(path.resolve()))}"
    connection = sqlite3.connect(f"{target}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError as err:
        connection.close()
        if os.access(path.parent, os.W_OK) or not any(word in str(err) for word in ("readonly", "unable to open")):
            raise
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise DataError(f"{path}: in a read-only folder with rows still in {wal.name}, expected a log closed "
                        "cleanly: copy both files to a writable folder to check it")
    return sqlite3.connect(f"{target}?immutable=1", uri=True, isolation_level=None)


def file_identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino
@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """sqlite3 failures as one DataError line: read-only, locked past the timeout, not a database, corrupt."""
    try:
        yield
    except sqlite3.Error as err:
        text = str(err)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            raise DataError(f"{path}: cannot write the audit log ({text}), expected a writable file and folder "
                            "(or another --log-db)") from None
        if "locked" in text or "busy" in text:
            raise LogLocked(f"{path}: audit log still locked by another process after {BUSY_TIMEOUT_S:g} s "
                            f"({text}), expected it to be free") from None
        raise DataError(f"{path}: damaged or not an audit log ({text}), expected an allx audit log "
                        "(keep this file for inspection and give another --log-db)") from None
