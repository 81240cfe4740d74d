"""The pictures of a field on the sample page: a thumbnail, the full image, and the occlusion map.

Made once, when the field arrives (an upload or a camera still), and kept with the open sample, so a
page view never decodes an upload again. The field is decoded by the one loader (allx.images) and
resized to the model's input by its rule, so `pixels` are the very pixels the model classified; the
occlusion map is computed from them with the served model on first request, then kept as well.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from allx.errors import ImageError
from allx.images import decode_image_bytes, resize_rgb
from allx.edge_runner.explain import explain, overlay_png

THUMBNAIL_SIDE = 160  # px, longest side: sharp at the page's 80 CSS px on a phone's 2x screen
FULL_SIDE = 1280  # px, longest side of the image a click opens: enough to judge focus and stain
JPEG_QUALITY = 85
KEPT_SAMPLES = 10  # the most recently started samples keep their pictures; older ones drop them, so a
                   # server that runs for weeks holds at most ~10 samples x 20 fields x ~0.5 MB


@dataclass
class FieldPictures:
    thumbnail: bytes  # JPEG
    full: bytes  # JPEG
    pixels: np.ndarray  # (H, W, 3) uint8 at the model's input: what the model saw
    occlusion: bytes | None = None  # PNG, made on first request

    def occlusion_png(self, model) -> bytes:
        """The occlusion map over the field, computed once (call it on the interpreter's thread)."""
        if self.occlusion is None:
            self.occlusion = overlay_png(self.pixels, explain(model, self.pixels))
        return self.occlusion


def make_pictures(image: bytes | np.ndarray, input_size: tuple[int, int]) -> FieldPictures | None:
    """Pictures of an encoded upload or of decoded pixels; None when the upload is no readable image (the
    field is then set aside with why, and the page shows no picture)."""
    try:
        pixels = image if isinstance(image, np.ndarray) else decode_image_bytes(image)
    except ImageError:
        return None
    picture = Image.fromarray(np.ascontiguousarray(pixels, np.uint8), "RGB")
    model_input = np.asarray(resize_rgb(picture, input_size), np.uint8)
    return FieldPictures(jpeg(picture, THUMBNAIL_SIDE), jpeg(picture, FULL_SIDE), model_input)


def jpeg(picture: Image.Image, side: int) -> bytes:
    """The picture as a JPEG whose longest side is at most `side` (aspect kept)."""
    copy = picture.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    copy.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def forget_old_pictures(samples, keep: int = KEPT_SAMPLES) -> None:
    """Drop the pictures of all but the last `keep` of `samples` (in the order they were started); their
    fields stay listed."""
    started = list(samples)
    for sample in started[:max(0, len(started) - keep)]:
        sample.pictures[:] = [None] * len(sample.pictures)
