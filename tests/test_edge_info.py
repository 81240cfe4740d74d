"""`allx-edge info`'s description, read from the model's card: one read of the file, its hashes, its tensors."""

import json

from edge_models import LABELS, tiny_models

from allx.edge_runner.info import describe_model
from allx.files import sha256_file


def test_describe_a_folder_from_its_card(tmp_path):
    (tmp_path / "model.tflite").write_bytes(tiny_models().int8.read_bytes())
    (tmp_path / "model.json").write_text(json.dumps({"format": "allx-tflite/1", "model_file": "model.tflite",
                                                     "labels": list(LABELS), "precision": "int8"}))
    info = describe_model(tmp_path)
    assert info.sha256 == sha256_file(tmp_path / "model.tflite")
    assert info.manifest_sha256 == sha256_file(tmp_path / "model.json") and info.metadata == "model.json"
    assert info.file_size_bytes == (tmp_path / "model.tflite").stat().st_size and not info.edgetpu_compiled
    assert info.labels == LABELS and info.manifest["precision"] == "int8"
    assert info.inputs[0].shape[-1] == 3 and info.inputs[0].dtype == "uint8"
