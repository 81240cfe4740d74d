"""A rejected model (by its manifest's status or allx convert's rejected file name) runs only when allowed."""

from pathlib import Path

import pytest

from allx.edge_runner.manifest_check import check_manifest
from allx.edge_runner.status import admit, is_rejected
from allx.errors import ModelError

REJECTED = check_manifest({"status": "rejected", "check": {"failures": ["accuracy drop 0.05 > 0.01"]}}, "m.json")


def test_rejected_by_status_or_by_name():
    passed = check_manifest({"status": "passed"}, "m.json")
    assert is_rejected(REJECTED, Path("model_int8.tflite"))
    assert is_rejected(passed, Path("model_int8.rejected.tflite"))  # the name travels with a copied file
    assert not is_rejected(passed, Path("model_int8.tflite"))


def test_admit_refuses_a_rejected_model_unless_allowed():
    assert admit(check_manifest({}, "m.json"), Path("m.tflite"), allow_rejected=False) is False
    assert admit(REJECTED, Path("m.tflite"), allow_rejected=True) is True
    with pytest.raises(ModelError, match=r"status rejected \(accuracy drop 0.05 > 0.01\).*--allow-rejected"):
        admit(REJECTED, Path("m.tflite"), allow_rejected=False)
