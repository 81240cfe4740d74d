"""Files in OUT_DIR: checked writable up front, every write atomic (temp file beside it, then os.replace)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from allx.errors import OutputError


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


