"""Files in OUT_DIR: checked writable up front, every write atomic (temp file beside it, then os.replace)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from allx.errors import AllxError
from allx.files import write_atomic  # noqa: F401  (convert modules import it from here)


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


