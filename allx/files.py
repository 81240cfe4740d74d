"""Every allx output is written here: atomically for files, directly for streams, under a lock for shared logs.

- A regular file is written to a temp file beside it (created with O_CREAT|O_EXCL|O_NOFOLLOW, so a
  planted symlink or a file of the same name is never written through) and renamed over the target:
  a reader, or a Ctrl-C, sees the old file or the new one, never half of one.
- An output that is a symlink updates the file it points to (the link stays a link).
- A FIFO, a device (/dev/full, /dev/null, a terminal) or a socket is written in place: renaming a file
  over it would replace the device by a regular file.
- `interrupts_deferred()` holds a Ctrl-C until a group of writes is done: a model folder is published as a
  whole (every file old or every file new), not half replaced.
- `SharedLog` appends a long log row by row, each row under an advisory lock (fcntl.flock), so two
  processes given the same log both keep every row instead of one log replacing the other.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import secrets
import signal
import stat
import threading
from pathlib import Path
from typing import Iterable, Sequence

from allx.errors import OutputError

TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
LOG_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class LogMismatch(OSError):
    """A shared log file that already holds other columns."""


def write_atomic(path: str | Path, data: bytes | str, mode: int = 0o666) -> Path:
    """Write `data` (str is UTF-8) to `path`: atomically for a file, in place for a stream or device.
    `mode` (less the umask) is the new file's; 0o600 for a secret, readable from its first byte by its owner only."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if is_stream(path):
        write_stream(path, payload)
        return path
    target = link_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp, handle = create_temp(target, mode)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        replace_with(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C inside the block raises KeyboardInterrupt when the block ends, not in the middle of it.

    Signals reach only the main thread, so elsewhere (and where SIGINT is ignored) this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def write_json(path: str | Path, data, indent: int = 2) -> Path:
    """`data` as JSON (UTF-8, a newline at the end), atomically."""
    return write_atomic(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    return write_atomic(path, csv_text(header, rows))


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), +SUM(...), @cmd).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell a spreadsheet shows as text, never runs: a string starting with = + - @, tab or CR gets a
    leading apostrophe (OWASP's CSV-injection rule). Numbers stay numbers, so -0.5 is still -0.5."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """csv.writer whose every cell goes through csv_safe: every CSV allx writes is written with it."""

    def __init__(self, stream, lineterminator: str = "\r\n"):
        self.writer = csv.writer(stream, lineterminator=lineterminator)

    def writerow(self, row: Sequence) -> None:
        self.writer.writerow([csv_safe(value) for value in row])

    def writerows(self, rows: Iterable[Sequence]) -> None:
        for row in rows:
            self.writerow(row)


def csv_text(header: Sequence[str], rows: Iterable[Sequence], lineterminator: str = "\r\n") -> str:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer, lineterminator)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def csv_line(row: Sequence) -> str:
    """One CSV line (for a log appended row by row)."""
    buffer = io.StringIO()
    SafeCsvWriter(buffer).writerow(row)
    return buffer.getvalue()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (OSError for a FIFO or device: reading one could
    block forever or never end)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
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
    target = link_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp, handle = create_temp(target)
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format="png", **savefig)
        replace_with(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def is_stream(path: Path) -> bool:
    """Whether `path` (links followed) exists and is a FIFO, device or socket rather than a regular file."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_stream(path: Path, payload: bytes) -> None:
    """Write into an existing FIFO or device as it is (never created, truncated or replaced)."""
    handle = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(handle, "wb") as stream:
        stream.write(payload)
        stream.flush()


def link_target(path: Path) -> Path:
    """The file a symlinked output points to (followed to the end), else `path` itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def create_temp(target: Path, mode: int = 0o666) -> tuple[Path, int]:
    """(temp path, open fd) beside `target`: a new file, never an existing one or a link; `mode` less the umask."""
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return temp, os.open(temp, TEMP_FLAGS, mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(target.parent))


def replace_with(temp: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(target))
    os.replace(temp, target)


class SharedLog:
    """Lines appended to PATH by one process or several (two camera sessions given the same --log).

    PATH (a symlink's target) is opened O_APPEND|O_NOFOLLOW and every write takes an exclusive advisory
    lock (fcntl.flock) around whole lines: rows of two writers interleave, none is torn and none is lost,
    and nothing written before is ever replaced. The header is written once, when the file is empty; a
    file that starts with another header is refused (LogMismatch) rather than mixed. A stream or device
    PATH is written in place. Each write goes straight to the file, so a crash keeps every row so far.
    """

    def __init__(self, path: str | Path, header: str):
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path", str(self.path))
        self.stream = is_stream(self.path)
        self.target = self.path if self.stream else link_target(self.path)
        if self.stream:
            self.fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            self.write(header)
            return
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.target, LOG_FLAGS, 0o666)
        try:
            with self.locked():
                expected = header.encode("utf-8")
                first = os.pread(self.fd, len(expected), 0)
                if not first:
                    write_all(self.fd, expected)
                elif first != expected:
                    shown = first.decode("utf-8", "replace").splitlines()[0][:60] if first.strip() else "blank"
                    raise LogMismatch(errno.EINVAL, f"starts with {shown!r}, not this log's header line",
                                      str(self.path))
        except BaseException:
            os.close(self.fd)
            raise

    @contextlib.contextmanager
    def locked(self):
        if self.stream:
            yield
            return
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits for the other writer's line, never longer
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def write(self, text: str) -> None:
        with self.locked():
            write_all(self.fd, text.encode("utf-8"))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]
