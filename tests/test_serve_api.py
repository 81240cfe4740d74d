"""The JSON API of `allx-edge serve` (/api/...): the sample workflow, its errors, the log as CSV."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from edge_models import LABELS  # noqa: E402
from serve_clients import png_bytes, client, model_dir, start, upload  # noqa: E402


def test_sample_workflow_through_the_api(client):
    key = start(client)
    response = upload(client, key, [(f"field{i}.png", png_bytes(i)) for i in range(3)])
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["added"]) == 3 and body["refused"] == []
    assert all(field["label"] in LABELS for field in body["added"])
    assert body["verdict"]["fields_used"] == ["field0.png", "field1.png", "field2.png"]
    assert body["verdict"]["verdict"] in ("malignant", "benign", "inconclusive") and body["verdict"]["words"]
    no_note = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Pre"})
    assert no_note.status_code == 400 and "note" in no_note.json()["error"]
    review = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Pre", "note": "<b>x</b>"})
    assert review.status_code == 200 and review.json()["label"] == "Pre"
    rows = client.get("/api/log", params={"sample": "S-1"}).json()["rows"]
    assert [r["kind"] for r in rows] == ["field"] * 3 + ["sample", "review"]
    assert rows[-1]["record"]["action"] == "override" and rows[-1]["operator"] == "ana"
    summary = client.get("/api/log/samples").json()["samples"]
    assert summary[0]["sample_id"] == "S-1" and summary[0]["fields"] == 3 and summary[0]["review"] == "override Pre"
    csv_text = client.get("/api/log.csv").text
    assert csv_text.count("S-1") >= 5 and csv_text.startswith("id,time_utc,kind")


def test_unknown_sample_and_bad_review_are_clear_errors(client):
    assert client.get("/api/samples/nope").status_code == 404
    key = start(client)
    empty = client.post(f"/api/samples/{key}/review", json={"action": "confirm"})
    assert empty.status_code == 400 and "no field yet" in empty.json()["error"]
    upload(client, key, [("a.png", png_bytes(1))])
    bad = client.post(f"/api/samples/{key}/review", json={"action": "override", "label": "Cat", "note": "n"})
    assert bad.status_code == 400 and "expected one of" in bad.json()["error"]
    assert client.post("/api/samples", json={"sample_id": "", "operator": "x"}).status_code == 400
    assert client.post("/api/samples", json={"operator": "x"}).status_code == 422
    since = client.get("/api/log", params={"since": "yesterday"})
    assert since.status_code == 400 and "expected a date" in since.json()["error"]
    for path in ("/api/log", "/api/log.csv"):  # a zone that moves it before year 1: still the client's error
        early = client.get(path, params={"since": "0001-01-01T00:00+01:00"})
        assert early.status_code == 400 and "expected a date" in early.json()["error"]


def test_log_csv_cells_never_run_as_formulas(client):
    import csv

    key = start(client, '=HYPERLINK("http://x.example","y")', "+SUM(1,2)")
    upload(client, key, [("a.png", png_bytes(1))])
    rows = list(csv.DictReader(io.StringIO(client.get("/api/log.csv").text)))
    assert {row["sample_id"] for row in rows} == {'\'=HYPERLINK("http://x.example","y")'}
    assert {row["operator"] for row in rows} == {"'+SUM(1,2)"}
