"""The shared image loader on awkward and broken files: every mode becomes uint8 RGB, bad files one ImageError."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from allx.errors import ImageError
from allx.images import MAX_PIXELS, decode_image_bytes, is_image_file, load_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries no pixel data: a decompression bomb costs nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def rgb_pixels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_rgb_round_trip_keeps_pixels(tmp_path, rgb_pixels):
    Image.fromarray(rgb_pixels).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.dtype == np.uint8 and loaded.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded, rgb_pixels)


def test_resize_gives_height_width(tmp_path, rgb_pixels):
    Image.fromarray(rgb_pixels).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", (10, 14)).shape == (10, 14, 3)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        load_image(tmp_path / "empty.jpg")


def test_truncated_jpeg(tmp_path, rgb_pixels):
    Image.fromarray(rgb_pixels).resize((256, 256)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_non_image_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(tmp_path / "notes.jpg")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_header_over_pixel_limit_is_refused(tmp_path):
    width = 10_000
    height = MAX_PIXELS // width + 1  # just over allx's limit, under Pillow's own bomb limit
    (tmp_path / "big.png").write_bytes(png_header_only(width, height))
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_decompression_bomb_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match="bomb.png"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="upload"):
        decode_image_bytes(png_header_only(100_000, 100_000), "upload")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert loaded.shape == (12, 16, 3)
    red, green, blue = loaded.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60  # C=0, M=Y=100% prints red


def test_16_bit_greyscale_keeps_top_bits(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 257 * 10]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    loaded = load_image(tmp_path / "grey16.png")
    assert loaded.shape == (1, 4, 3)
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 128, 255, 10])
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    loaded = load_image(tmp_path / "alpha.png")
    np.testing.assert_array_equal(loaded[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(loaded[3, 3], [255, 255, 255])


def test_palette_and_transparent_palette(tmp_path, rgb_pixels):
    Image.fromarray(rgb_pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    assert loaded.shape == (24, 32, 3)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 1
    palette.save(tmp_path / "pt.png", transparency=1)
    np.testing.assert_array_equal(load_image(tmp_path / "pt.png")[0, 0], [255, 255, 255])


def test_greyscale_becomes_three_equal_channels(tmp_path):
    Image.new("L", (5, 3), 77).save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.shape == (3, 5, 3) and (loaded == 77).all()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (40, 20, 3)  # portrait once rotated
    assert loaded[5, 10, 0] > 200 and loaded[35, 10, 0] < 60  # the stored left half is now on top


def test_is_image_file(tmp_path):
    for name in ("a.JPG", "b.png", ".hidden.png", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(p.name for p in tmp_path.iterdir() if is_image_file(p))
    assert found == ["a.JPG", "b.png"]
