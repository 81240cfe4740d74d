"""The technician's pages of `allx-edge serve`: forms, escaping, the sample page."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from serve_clients import png_bytes, client, model_dir  # noqa: E402


def test_pages_escape_html_in_sample_id_and_note(client):
    response = client.post("/samples", data={"sample_id": "<script>alert(1)</script>", "operator": "<i>o</i>"},
                           follow_redirects=True)
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.text and "&lt;script&gt;" in response.text
    key = str(response.url).rsplit("/", 1)[-1]
    client.post(f"/samples/{key}/fields", files=[("files", ("<b>f</b>.png", png_bytes(5), "image/png"))])
    page = client.post(f"/samples/{key}/review", data={"action": "confirm", "note": "<img src=x onerror=alert(1)>"})
    assert page.status_code == 200, page.text
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text
    log_page = client.get("/log")
    assert "<script>alert" not in log_page.text and "&lt;script&gt;" in log_page.text


def test_sample_page_upload_through_the_form(client):
    page = client.post("/samples", data={"sample_id": "S-9", "operator": "bo"}, follow_redirects=True)
    key = str(page.url).rsplit("/", 1)[-1]
    response = client.post(f"/samples/{key}/fields", files=[("files", ("f.png", png_bytes(5), "image/png")),
                                                            ("files", ("x.txt", b"hello", "text/plain"))])
    assert response.status_code == 200
    assert "f.png" in response.text and "not an image" in response.text and "Sample verdict" in response.text
