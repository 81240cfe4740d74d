"""A run folder appears whole or not at all: training writes into a hidden staging folder beside OUT,
and only a finished run is renamed to OUT.

An interrupted or failed run never mixes with a finished one: OUT keeps the previous run untouched until
the new one is complete. Replacing a previous run is two renames (old OUT aside, staging to OUT) with
the old one put back if the second fails; files in the old folder that a run does not write (a convert
output folder kept inside the run, notes) are carried into the new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from allx import layout
from allx.errors import DataError
from allx.files import interrupts_deferred


def check_out_dir(out: Path) -> None:
    """OUT may be new, empty, or a previous run folder; anything else would be lost when it is replaced."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise DataError(f"--out {out}: got an existing {'link' if out.is_symlink() else 'file'}, "
                        "expected a new folder, an empty one or a previous run folder")
    names = {entry.name for entry in out.iterdir()}
    if names and not names & {layout.MODEL_KERAS, layout.TRAIN_CONFIG}:
        raise DataError(f"--out {out}: got a folder holding other files ({', '.join(sorted(names)[:3])}), "
                        "expected a new folder, an empty one or a previous run folder (not replaced)")


def make_staging_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=layout.staging_prefix(out.name)))


def publish_run(staging: Path, out: Path) -> Path:
    """Make the finished run in `staging` the folder `out` (the previous run replaced as a whole)."""
    try:
        with interrupts_deferred():  # two renames: a Ctrl-C between them would leave no run at OUT
            return swap_in(staging, out)
    except OSError as err:
        raise DataError(f"--out {out}: could not publish the run ({err.strerror or err}), expected a writable "
                        f"folder; the finished run is kept in {staging}") from None


def swap_in(staging: Path, out: Path) -> Path:
    if not out.exists():
        os.rename(staging, out)
        return out
    if out.is_symlink() or not out.is_dir():
        raise DataError(f"--out {out}: became a {'link' if out.is_symlink() else 'file'} during training, "
                        f"expected a folder; the finished run is in {staging}")
    for entry in out.iterdir():
        if entry.name not in layout.RUN_FILES and not (staging / entry.name).exists():
            os.rename(entry, staging / entry.name)  # not part of a run: keep it with the new run
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=layout.replaced_prefix(out.name)))
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(aside / out.name, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return out


def discard_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
