"""The routes of a field's pictures: thumbnail, full image and occlusion map, numbered from 1, behind the token."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

from allx.edge_runner.serve.picture_routes import FIELD, breakable, picture_urls  # noqa: E402
from serve_clients import model_dir, png_bytes, served, start, upload  # noqa: E402,F401  (fixtures)


def test_picture_urls_are_the_routes_of_one_field():
    urls = picture_urls("k1", 3)
    assert urls == {"thumbnail": "/samples/k1/fields/3/thumbnail.jpg", "full": "/samples/k1/fields/3/image.jpg",
                    "occlusion": "/samples/k1/fields/3/occlusion.png"}
    assert all(url.startswith(FIELD.format(key="k1", number=3) + "/") for url in urls.values())


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


def test_a_field_number_outside_the_sample_is_not_found(served):
    client, _ = served
    key = start(client, "S-3")
    upload(client, key, [("a.png", png_bytes(7))])
    for number in (0, 2):
        response = client.get(f"/samples/{key}/fields/{number}/image.jpg")
        assert response.status_code == 404 and "expected 1 to 1" in response.text
    assert client.get("/samples/no-such-key/fields/1/image.jpg").status_code == 404


def test_breakable_escapes_and_marks_separators():
    assert str(breakable("a_b<c>-d.jpg")) == "a_<wbr>b&lt;c&gt;-<wbr>d.jpg"
