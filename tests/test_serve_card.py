"""The Model page of `allx-edge serve`: the loaded model's card, kept when its folder goes."""

from __future__ import annotations


import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from edge_models import LABELS  # noqa: E402
from serve_clients import png_bytes, model_dir, make_client, client, start, upload  # noqa: E402


def test_model_folder_removed_while_serving(model_dir, tmp_path):
    import shutil

    folder = tmp_path / "gone"
    shutil.copytree(model_dir, folder)
    client, bench = make_client(folder / "model.tflite", tmp_path / "log.db")
    key = start(client)
    shutil.rmtree(folder)
    response = upload(client, key, [("a.png", png_bytes(1))])
    assert response.status_code == 200 and response.json()["added"][0]["label"] in LABELS
    page = client.get("/model")
    assert page.status_code == 200 and "gone from disk" in page.text
    assert client.get("/api/model").json()["on_disk"] is False
    bench.close()


def test_model_page_shows_card_and_bench(client):
    page = client.get("/model")
    assert page.status_code == 200
    card = client.get("/api/model").json()
    assert card["labels"] == list(LABELS) and len(card["model_sha256"]) == 64
    assert card["model_sha256"] in page.text and "allx-edge bench" in page.text
