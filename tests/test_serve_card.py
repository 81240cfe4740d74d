"""The Model page of `allx-edge serve`: the loaded model's card in words (no page shows a raw float with more than
4 significant digits), kept when its folder goes."""

from __future__ import annotations

import html
import json
import re

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')

from allx import layout  # noqa: E402
from allx.edge_runner.bench import bench_models  # noqa: E402
from allx.files import write_json  # noqa: E402
from edge_models import LABELS, tiny_models  # noqa: E402
from test_edge_card_text import MANIFEST, too_precise  # noqa: E402
from serve_clients import client, make_client, model_dir, png_bytes, start, upload  # noqa: E402,F401 (fixtures)

TAG = re.compile(r"<[^>]+>")


@pytest.fixture(scope="module")
def carded_model(tmp_path_factory):
    """The tiny int8 model in a folder with a model.json full of long floats and a bench.json beside it."""
    folder = tmp_path_factory.mktemp("carded")
    (folder / "model.tflite").write_bytes(tiny_models().int8.read_bytes())
    manifest = {key: value for key, value in MANIFEST.items() if key != "ood"}  # no statistics file to go with it
    write_json(folder / layout.MANIFEST, {"format": "allx-tflite/1", "model_file": "model.tflite",
                                          "labels": list(LABELS), "status": "passed", **manifest,
                                          "ood_note": "off: calibrated without an embedding"})
    write_json(folder / layout.BENCH, bench_models([folder / "model.tflite"], runs=5, warmup=1, threads=1).to_dict())
    return folder


def test_model_page_is_a_card_in_words(carded_model, tmp_path):
    client, bench = make_client(carded_model / "model.tflite", tmp_path / "log.db")
    page = html.unescape(TAG.sub(" ", client.get("/model").text))
    assert "int8 agrees with float32 on 256 of 256 validation images" in page
    assert "measured 99.4% (2,156 of 2,169 malignant images)" in page
    assert "Unlike training" in page and "off: calibrated without an embedding" in page
    assert "Peak memory" in page and "the bench process's own high-water mark" in page
    assert client.get("/api/model").json()["operating_point"]["threshold"] == 0.6176318349795804  # JSON: full
    bench.close()


def test_no_page_shows_a_raw_float_with_more_than_4_significant_digits(carded_model, tmp_path):
    client, bench = make_client(carded_model / "model.tflite", tmp_path / "log.db")
    key = start(client)
    upload(client, key, [(f"field{i}.png", png_bytes(i)) for i in range(3)])
    client.post(f"/samples/{key}/review", data={"action": "confirm"})
    for path in ("/", f"/samples/{key}", "/log", "/model"):
        text = html.unescape(TAG.sub(" ", client.get(path).text))
        text = re.sub(r"\b[0-9a-f]{12,}\b|\d{4}-\d\d-\d\d[ T][\d:]+", " ", text)  # hashes, sample keys and times
        assert not too_precise(text), (path, too_precise(text))
    bench.close()
    assert json.loads((carded_model / layout.MANIFEST).read_text())["quality"]["focus_min"] == 351.1124398803711


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
