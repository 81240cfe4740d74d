"""What an audit row says about where a result came from: the image's facts, and the model's, from its card."""

import json
from contextlib import closing

import numpy as np
import pytest
from edge_models import LABELS, tiny_models

from allx.edge_runner.audit import AuditLog
from allx.edge_runner.batch import ImageResult
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.provenance import RunLog, field_record, image_facts, model_facts
from allx.files import sha256_file


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder with its model.json (no metadata embedded in the .tflite: the folder's manifest is in force)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.tflite").write_bytes(tiny_models().float32.read_bytes())
    (folder / "model.json").write_text(json.dumps({"format": "allx-tflite/1", "model_file": "model.tflite",
                                                   "labels": list(LABELS)}))
    return folder


def test_model_facts_come_from_the_card_read_at_load(folder, tmp_path):
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("model.tflite", "model.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    model = EdgeModel.load(copy)
    expected = {"model_sha256": sha256_file(copy / "model.tflite"), "manifest_sha256": sha256_file(copy / "model.json")}
    assert model.card.manifest_path == copy / "model.json" and model.card.source == "model.json"
    for name in ("model.tflite", "model.json"):  # gone or changed after load: the facts still describe what runs
        (copy / name).write_bytes(b"changed")
    facts = model_facts(model)
    assert {key: facts[key] for key in expected} == expected and facts["model_file"] == "model.tflite"


def test_a_bare_tflite_has_no_manifest_hash(tmp_path):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tiny_models().float32.read_bytes())
    model = EdgeModel.load(bare, labels=list(LABELS))
    facts = model_facts(model)
    assert facts["manifest_sha256"] is None and facts["model_sha256"] == sha256_file(bare)


def test_image_facts_of_an_unreadable_file_have_a_null_hash(tmp_path):
    image = tmp_path / "field.png"
    image.write_bytes(b"pixels")
    assert image_facts(image) == {"image": "field.png", "image_path": str(image), "image_sha256": sha256_file(image)}
    assert image_facts(tmp_path / "absent.png")["image_sha256"] is None


def test_run_log_rows_carry_the_operator_and_model_facts(folder, tmp_path):
    model = EdgeModel.load(folder)
    failed = ImageResult(str(tmp_path / "broken.png"), error="unreadable image")
    record = field_record(failed, model.labels, model_facts(model), "ana")
    assert record["kind"] == "field" and record["label"] is None and record["error"] == "unreadable image"
    pixels = np.zeros((*model.input_size, 3), np.uint8)
    good = ImageResult(str(tmp_path / "field.png"), model.classify(pixels))
    with closing(RunLog(AuditLog.open(tmp_path / "audit.db"), model_facts(model), "ana")) as run:
        run.field(good, model.labels, sample_id="S-1")
    with AuditLog.open(tmp_path / "audit.db", readonly=True) as log:
        row = log.rows()[0]
    assert row["operator"] == "ana" and row["record"]["model_sha256"] == model.card.sha256
    assert set(row["record"]["probabilities"]) == set(LABELS) and row["record"]["sample_id"] == "S-1"
