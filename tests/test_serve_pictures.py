"""The sample page's pictures: a thumbnail and the full image per field, the occlusion map on demand, the token."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from allx.edge_runner.serve.picture_routes import breakable  # noqa: E402
from allx.edge_runner.serve.pictures import THUMBNAIL_SIDE, forget_old_pictures, make_pictures  # noqa: E402
from allx.images import decode_image_bytes  # noqa: E402
from serve_clients import make_client, model_dir, png_bytes, start, upload  # noqa: E402,F401  (model_dir: fixture)


def jpeg_bytes(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def served(model_dir, tmp_path):  # noqa: F811
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    yield client, bench
    bench.close()


def test_pictures_are_made_once_with_the_model_input_of_the_classified_field():
    data = jpeg_bytes(400, 300)
    pictures = make_pictures(data, (32, 32))
    thumbnail = Image.open(io.BytesIO(pictures.thumbnail))
    assert thumbnail.format == "JPEG" and thumbnail.size == (THUMBNAIL_SIDE, 120)  # aspect kept
    assert Image.open(io.BytesIO(pictures.full)).size == (400, 300)  # under the cap: the full size
    np.testing.assert_array_equal(pictures.pixels, decode_image_bytes(data, "f", (32, 32)))  # what the model saw
    assert make_pictures(b"not an image", (32, 32)) is None


def test_every_field_links_its_thumbnail_and_full_image_behind_the_token(served):
    client, _ = served
    key = start(client)
    truncated = png_bytes(9)[:300]  # its header passes the upload check, its pixels cannot be decoded
    upload(client, key, [("Snap_001-left.png", png_bytes(1)), ("broken.png", truncated)])
    page = client.get(f"/samples/{key}").text
    assert f'src="/samples/{key}/fields/1/thumbnail.jpg"' in page
    assert f'href="/samples/{key}/fields/1/image.jpg"' in page
    assert "Snap_<wbr>001-<wbr>left.png" in page  # the name wraps after separators only
    assert 'class="set-aside"' in page and "no picture" in page  # the broken field: greyed, with its reason
    assert 'class="reason">broken.png: unreadable image' in page
    thumbnail = client.get(f"/samples/{key}/fields/1/thumbnail.jpg")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (40, 40)  # a small upload stays its own size
    assert client.get(f"/samples/{key}/fields/2/thumbnail.jpg").status_code == 404
    assert client.get(f"/samples/{key}/fields/3/image.jpg").status_code == 404
    assert TestClient(client.app).get(f"/samples/{key}/fields/1/thumbnail.jpg").status_code == 401


def test_occlusion_map_is_made_on_request_once(served):
    client, bench = served
    key = start(client, "S-2")
    upload(client, key, [("a.png", png_bytes(2)), ("b.png", png_bytes(3))])
    assert all(p.occlusion is None for p in bench.sample(key).pictures)  # nothing computed at upload
    page = client.get(f"/samples/{key}").text
    assert page.count("data-overlay=") == 2  # one button per field
    first = client.get(f"/samples/{key}/fields/2/occlusion.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).size == (32, 32)  # at the model's input: what it saw
    pictures = bench.sample(key).pictures
    assert pictures[0].occlusion is None and pictures[1].occlusion == first.content
    assert client.get(f"/samples/{key}/fields/2/occlusion.png").content == first.content


def test_camera_still_has_pictures_too(model_dir, tmp_path):  # noqa: F811
    frame = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db", capture=lambda: frame)
    key = start(client)
    assert client.post(f"/api/samples/{key}/camera").status_code == 200
    assert client.get(f"/samples/{key}/fields/1/thumbnail.jpg").status_code == 200
    bench.close()


def test_breakable_escapes_and_marks_separators():
    assert str(breakable("a_b<c>-d.jpg")) == "a_<wbr>b&lt;c&gt;-<wbr>d.jpg"


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
