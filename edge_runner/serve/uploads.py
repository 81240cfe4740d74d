"""Upload limits, checked before any pixel is decoded: bytes per file, files per request, pixels per image.

A file's name is only ever a label shown to people and written to the log: it is reduced to its last
component, stripped of control characters and cut short, and never joined to a path.
"""

from __future__ import annotations

import io
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from allx.errors import ImageError

# Formats a microscope camera or phone produces; anything else is refused before decoding.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
NAME_CHARS = 120


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int = 20 * 1024 * 1024
    max_files: int = 20
    max_pixels: int = 40_000_000

    @property
    def max_request_bytes(self) -> int:
        """A whole multipart request: every file at its limit plus room for the form's own fields."""
        return self.max_files * self.max_file_bytes + 1024 * 1024


class UploadRejected(ImageError):
    """One upload refused before decoding; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def display_name(filename: str | None, fallback: str) -> str:
    """The last component of a client's file name, printable and short; `fallback` when nothing is left."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        return fallback
    return name[:NAME_CHARS]


def too_large(name: str, size: int, limits: UploadLimits) -> UploadRejected:
    return UploadRejected(f"{name}: got {size:,} bytes, expected at most {limits.max_file_bytes:,}", 413)


def check_upload(name: str, data: bytes, limits: UploadLimits) -> None:
    """Refuse an empty, oversized or non-image file, or one whose header declares too many pixels."""
    if not data:
        raise UploadRejected(f"{name}: empty file, expected an image")
    if len(data) > limits.max_file_bytes:
        raise too_large(name, len(data), limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                fmt, (width, height) = image.format, image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected(f"{name}: refused as a decompression bomb (its header declares more pixels than "
                             f"Pillow's limit), expected at most {limits.max_pixels:,} pixels", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadRejected(f"{name}: not an image, expected {', '.join(IMAGE_FORMATS)}", 415) from None
    if fmt not in IMAGE_FORMATS:
        raise UploadRejected(f"{name}: got a {fmt} file, expected {', '.join(IMAGE_FORMATS)}", 415)
    if width * height > limits.max_pixels or width < 1 or height < 1:
        raise UploadRejected(f"{name}: got {width}x{height} = {width * height:,} pixels, expected 1 to "
                             f"{limits.max_pixels:,} (a decompression bomb is refused before decoding)", 413)
