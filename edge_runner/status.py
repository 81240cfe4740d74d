"""Whether a model passed `allx convert`'s accuracy check: a rejected model runs only when asked, and says so.

`allx convert` saves a model that failed its check as model_<precision>.rejected.tflite with
"status": "rejected" in its manifest. allx-edge refuses such a model unless --allow-rejected, and then
marks every result it prints or writes.
"""

from __future__ import annotations

from pathlib import Path

from allx.edge_runner.manifest_check import Manifest
from allx.errors import ModelError

NOTE = "REJECTED MODEL: failed its accuracy check"


def is_rejected(manifest: Manifest, model_path: Path) -> bool:
    """The manifest says status rejected, or the file carries the rejected name allx convert gives."""
    return manifest.rejected or ".rejected." in Path(model_path).name


def admit(manifest: Manifest, model_path: Path, allow_rejected: bool) -> bool:
    """True when the model is a rejected one that may run (allow_rejected); ModelError when it may not."""
    if not is_rejected(manifest, model_path):
        return False
    if allow_rejected:
        return True
    failures = manifest.check_failures
    why = f" ({'; '.join(failures[:2])})" if failures else ""
    raise ModelError(f"{model_path}: got a model with status rejected{why}, expected one that passed allx "
                     "convert's accuracy check; pass --allow-rejected to run it anyway")
