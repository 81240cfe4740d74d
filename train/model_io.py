"""Load and save whole Keras models (.keras files): one-line errors on load, atomic writes on save."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from allx.errors import ModelError
from allx.images import first_line

KERAS_ENTRIES = ("config.json", "metadata.json")


def load_keras_model(path: str | Path):
    """The model saved at `path` (a .keras file), with allx's custom layers registered."""
    import keras

    import allx.train.layers  # noqa: F401  (registers PixelNormalization before deserializing)

    path = check_keras_file(Path(path))
    try:
        return keras.saving.load_model(path, compile=False)
    # A damaged archive surfaces as any of these, from zipfile, h5py, json or Keras's deserializer.
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        reason = f"{err.__class__.__name__}: {first_line(err)[:200]}"
        raise ModelError(f"{path}: not a loadable Keras model ({reason})") from None


def check_keras_file(path: Path) -> Path:
    """Refuse, in one line each, a missing, empty, wrongly named or non-Keras file."""
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelError(f"{path}: is a directory, expected a .keras model file")
    if path.suffix != ".keras":
        raise ModelError(f"{path}: got a '{path.suffix or 'suffix-less'}' file, expected a .keras model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file (0 bytes), expected a .keras model file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        raise ModelError(f"{path}: corrupt or not a .keras file (not a zip archive)") from None
    missing = [entry for entry in KERAS_ENTRIES if entry not in names]
    if missing:
        raise ModelError(f"{path}: not a Keras model archive, missing {', '.join(missing)}")
    return path


def save_keras_model(model, path: str | Path) -> Path:
    """Write `model` to `path` atomically: a temp file in the same folder, then os.replace.

    An interrupted or failed save (Ctrl-C included) removes the temp file and leaves any earlier
    file at `path` untouched.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: got a '{path.suffix or 'suffix-less'}' target, expected a .keras file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the .keras suffix, and the pid keeps two writers from sharing a temp file.
    temp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
