"""A field's pictures (serve/pictures.py): made once at the model's input, camera stills too, kept for the most recent samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')

from allx.edge_runner.serve.pictures import THUMBNAIL_SIDE, forget_old_pictures, make_pictures  # noqa: E402
from allx.images import decode_image_bytes  # noqa: E402
from serve_clients import make_client, model_dir, png_bytes, served, start, upload  # noqa: E402,F401  (fixtures)


def jpeg_bytes(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def test_pictures_are_made_once_with_the_model_input_of_the_classified_field():
    data = jpeg_bytes(400, 300)
    pictures = make_pictures(data, (32, 32))
    thumbnail = Image.open(io.BytesIO(pictures.thumbnail))
    assert thumbnail.format == "JPEG" and thumbnail.size == (THUMBNAIL_SIDE, 120)  # aspect kept
    assert Image.open(io.BytesIO(pictures.full)).size == (400, 300)  # under the cap: the full size
    np.testing.assert_array_equal(pictures.pixels, decode_image_bytes(data, "f", (32, 32)))  # what the model saw
    assert make_pictures(b"not an image", (32, 32)) is None


def test_camera_still_has_pictures_too(model_dir, tmp_path):  # noqa: F811
    frame = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db", capture=lambda: frame)
    key = start(client)
    assert client.post(f"/api/samples/{key}/camera").status_code == 200
    assert client.get(f"/samples/{key}/fields/1/thumbnail.jpg").status_code == 200
    bench.close()


def test_only_the_most_recent_samples_keep_their_pictures(served):
    client, bench = served
    old, new = start(client, "S-old"), start(client, "S-new")
    upload(client, old, [("a.png", png_bytes(5))])
    upload(client, new, [("b.png", png_bytes(6))])
    forget_old_pictures(bench.samples.values(), keep=1)
    assert client.get(f"/samples/{new}/fields/1/thumbnail.jpg").status_code == 200
    gone = client.get(f"/samples/{old}/fields/1/thumbnail.jpg")
    assert gone.status_code == 404 and "most recent samples" in gone.text
    page = client.get(f"/samples/{old}").text
    assert "picture not kept" in page and "a.png" in page and "data-overlay" not in page
