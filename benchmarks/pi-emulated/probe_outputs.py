"""Print, per image, a digest of the decoded pixels and the model's raw float32 probabilities (JSON lines).

Usage: python probe_outputs.py MODEL IMAGE...

Run once on the x86 host and once inside the emulated arm64 rootfs, then compare the two outputs with
compare_predictions.py: equal lines mean the same pixels went in (image decoding is part of the
pipeline too) and the same bits came out. It uses the runner's own path: EdgeModel.load / load_pixels /
predict, exactly as `allx-edge classify` does.
"""

from __future__ import annotations

import hashlib
import json
import sys

from allx.errors import AllxError
from allx.edge_runner.model import EdgeModel


def probe_image(model: EdgeModel, path: str) -> dict:
    """The digest of one image's pixels and the probabilities' exact bytes (or the error)."""
    try:
        pixels = model.load_pixels(path)
    except AllxError as err:
        return {"path": path, "error": str(err)}
    probabilities = model.predict(pixels)
    return {
        "path": path,
        "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "probabilities_float32_hex": probabilities.astype("<f4").tobytes().hex(),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        model = EdgeModel.load(argv[0])
    except AllxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in argv[1:]:
        print(json.dumps(probe_image(model, path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
