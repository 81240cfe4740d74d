"""Files in OUT_DIR: checked writable up front, every write atomic (temp file beside it, then os.replace)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from allx.errors import AllxError


class OutputError(AllxError):
    """OUT_DIR cannot be created or written (exit 2)."""


def check_writable(out_dir: Path) -> Path:
    """Create OUT_DIR and prove a file can be written there, before any slow work starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".allx-write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write there ({err.strerror or err.__class__.__name__}), "
                          "expected a writable output folder") from None
    return out_dir


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a temp file beside `path`, then os.replace: readers see the old file or the new, never half."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
