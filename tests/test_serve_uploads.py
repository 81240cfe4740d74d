"""Upload limits of `allx-edge serve`: refused before decoding (type, size, count, pixels), safe names."""

from __future__ import annotations


import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from allx.edge_runner.serve.uploads import UploadLimits, display_name  # noqa: E402
from serve_clients import png_bytes, bomb_png, model_dir, make_client, client, start, upload  # noqa: E402


def test_bad_uploads_are_refused_before_decoding_and_the_rest_is_kept(client):
    key = start(client)
    response = upload(client, key, [("ok.png", png_bytes(1)), ("notes.txt", b"not an image"),
                                    ("bomb.png", bomb_png()), ("../../etc/passwd", png_bytes(2)), ("empty.png", b"")])
    body = response.json()
    assert response.status_code == 200
    assert [f["path"] for f in body["added"]] == ["ok.png", "passwd"]  # the name is a label, never a path
    errors = " ".join(r["error"] for r in body["refused"])
    assert "not an image" in errors and "decompression bomb" in errors and "empty file" in errors
    only_bad = upload(client, key, [("bomb.png", bomb_png())])
    assert only_bad.status_code == 413  # the README's codes: too large (a pixel count here), not an image
    not_images = upload(client, key, [("a.txt", b"text"), ("b.txt", b"more text")])
    assert not_images.status_code == 415 and len(not_images.json()["refused"]) == 2
    mixed = upload(client, key, [("a.txt", b"text"), ("empty.png", b"")])
    assert mixed.status_code == 400


def test_size_and_count_limits(model_dir, tmp_path):
    limits = UploadLimits(max_file_bytes=20_000, max_files=2)
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db", limits)
    key = start(client)
    big = png_bytes(3, size=120)  # ~43 KB of noise
    response = upload(client, key, [("big.png", big)])
    refusal = response.json()["refused"][0]
    assert response.status_code == 413 and f"got {len(big):,} bytes, expected at most 20,000" in refusal["error"]
    kept = upload(client, key, [("big.png", big), ("small.png", png_bytes(4, 8))])
    assert kept.status_code == 200 and [f["path"] for f in kept.json()["added"]] == ["small.png"]
    too_many = upload(client, key, [(f"f{i}.png", png_bytes(i, 8)) for i in range(3)])
    assert too_many.status_code == 413 and "got more than 2 files" in too_many.json()["error"]
    page = client.post(f"/samples/{key}/fields", files=[("files", ("big.png", big, "image/png"))])
    assert page.status_code == 413 and "expected at most 20,000" in page.text
    huge = client.post(f"/api/samples/{key}/fields", content=b"x" * (limits.max_request_bytes + 1),
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert huge.status_code == 413
    assert client.get("/health").status_code == 200
    bench.close()


def test_pixel_limit_is_checked_from_the_header():
    from allx.edge_runner.serve.uploads import UploadRejected, check_upload

    with pytest.raises(UploadRejected, match="got 2000x2000 = 4,000,000 pixels"):
        check_upload("wide.png", bomb_png(2000, 2000), UploadLimits(max_pixels=1_000_000))


def test_display_name_strips_paths_and_control_characters():
    assert display_name("../../etc/passwd", "f") == "passwd"
    assert display_name("C:\\Users\\x\\smear.jpg", "f") == "smear.jpg"
    assert display_name("..", "field-1") == "field-1"
    assert display_name("a\x00b\nc.png", "f") == "abc.png"
