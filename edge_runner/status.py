"""Whether a model passed `allx convert`'s accuracy check: a rejected model runs only when asked, and says so.

`allx convert` saves a model that failed its check as model_<precision>.rejected.tflite with
"status": "rejected" in its manifest, in model_<precision>.rejected.json and embedded in the .tflite.
The status is read from the manifest in force (the embedded copy wins over the folder's, so a .tflite
copied alone under any name is still known for what it is) when the model is resolved, and carried on
its card; allx-edge refuses such a model unless --allow-rejected, and then marks every result it prints
or writes.
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
    """True when the model is a rejected one that may run (allow_rejected); ModelError when it may not.
    `manifest` is the one in force (edge_runner.metadata.ModelCard.manifest), never only the folder's."""
    if not is_rejected(manifest, model_path):
        return False
    if allow_rejected:
        return True
    failures = manifest.check_failures
    why = f" ({'; '.join(failures[:2])})" if failures else ""
    raise ModelError(f"{model_path}: got a model with status rejected{why}, expected one that passed allx "
                     "convert's accuracy check; pass --allow-rejected to run it anyway")
