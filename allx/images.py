"""The one image loader: training, conversion checks and the device runner all read pixels here.

Rule (documented in README, "Image loading"):
  1. refuse files whose header declares more than MAX_PIXELS pixels (decompression bombs);
  2. apply the EXIF orientation;
  3. convert to 8-bit RGB: greyscale, palette, CMYK, YCbCr and LAB via Pillow; 16-bit by keeping the
     top 8 bits; anything with alpha is composited on white (a smear's background is light);
  4. if a size is given and differs, resize the whole image (no crop, aspect not kept) with bilinear
     filtering, as `keras.utils.image_dataset_from_directory` does by default.
The result is a contiguous uint8 array (H, W, 3): raw pixels. Scaling to the backbone's range is a
layer inside the model, so nothing here normalises.
"""

from __future__ import annotations

import io
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from allx.errors import ImageError

MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read `path` as uint8 RGB (H, W, 3); resize to size=(height, width) when given."""
    path = Path(path)
    return decode_rgb(path, path, size)


def decode_rgb(source, name, size: tuple[int, int] | None) -> np.ndarray:
    """The one decoding rule for a file path or an in-memory file `source` (`name` in messages): the pixel
    count checked from the header before decoding, EXIF rotation applied, RGB, resized when `size` is given."""
    try:
        if isinstance(source, Path):
            check_regular_file(source)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                check_pixel_count(image.size, name)
                image.load()
                # in place: without an orientation tag nothing is copied (a copy was a fifth of a decode's time)
                ImageOps.exif_transpose(image, in_place=True)
                rgb = to_rgb(image)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, expected an image file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name}: not a readable image ({err.__class__.__name__})") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name}: unreadable image ({first_line(err)})") from None
    if size is not None:
        rgb = resize_rgb(rgb, size)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def check_regular_file(path: Path) -> None:
    """Refuse a FIFO, device or socket before opening it: opening a FIFO blocks until a writer comes."""
    mode = path.stat().st_mode  # FileNotFoundError / IsADirectoryError are reported by the caller
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(str(path))
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file (a FIFO, device or socket), expected an image file")


@dataclass(frozen=True)
class ImageBatch:
    """Readable images of one batch: `indices` into the requested paths, their uint8 `pixels` (N, H, W, 3),
    and ("relpath", reason) for each image of the batch that could not be read."""

    indices: tuple[int, ...]
    pixels: np.ndarray
    unreadable: tuple[tuple[str, str], ...]


def read_batches(root: str | Path, relpaths: Sequence[str], size: tuple[int, int], batch: int = 32,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[ImageBatch]:
    """The one loop that reads many images: `relpaths` under `root`, in batches, via load_image.

    An unreadable image is reported in its batch and the rest go on. The next batch is decoded in a
    thread while the caller works on this one (JPEG decoding releases the GIL, so a model's inference
    and the decoding overlap). `progress(done, total)` is called after each batch.
    """
    root = Path(root)
    starts = range(0, len(relpaths), batch)

    def read(start: int) -> ImageBatch:
        indices, images, unreadable = [], [], []
        for index in range(start, min(start + batch, len(relpaths))):
            try:
                images.append(load_image(root / relpaths[index], size))
                indices.append(index)
            except ImageError as err:
                unreadable.append((relpaths[index], str(err)))
        pixels = np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)
        return ImageBatch(tuple(indices), pixels, tuple(unreadable))

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, starts[0]) if len(starts) else None
        for position, start in enumerate(starts):
            current = pending.result()
            pending = pool.submit(read, starts[position + 1]) if position + 1 < len(starts) else None
            yield current
            if progress:
                progress(min(start + batch, len(relpaths)), len(relpaths))


def decode_image_bytes(data: bytes, name: str = "<bytes>", size: tuple[int, int] | None = None) -> np.ndarray:
    """Same rule as load_image, for an image already in memory (e.g. an upload)."""
    return decode_rgb(io.BytesIO(data), name, size)


def check_pixel_count(size: tuple[int, int], path) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{path}: image too large, got {width}x{height} = {width * height:,} pixels, "
            f"expected at most {MAX_PIXELS:,}"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{path}: empty image, got {width}x{height}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (16-bit keeps its top 8 bits; alpha composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if image.mode == "F":
            array = np.clip(array, 0, 255)
        elif array.max(initial=0) > 255 or image.mode.startswith("I;16"):
            array = array.astype(np.float64) / 257.0  # 0..65535 -> 0..255
        grey = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to (height, width) with bilinear filtering; a no-op when already that size."""
    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__
