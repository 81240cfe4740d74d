"""model.json checked where it arrives: a wrong type or range is one line naming the field."""

import pytest

from allx.edge_runner.manifest_check import Manifest, check_manifest, label_problem
from allx.errors import ModelError


def test_an_empty_document_is_the_empty_manifest():
    manifest = check_manifest({}, "model.json")
    assert manifest == Manifest() and not manifest and not manifest.rejected


def test_fields_are_typed():
    manifest = check_manifest({"model_file": "m.tflite", "status": "rejected", "labels": ["Benign", "Pre"],
                               "input": {"shape": [1, 32, 32, 3], "dtype": "uint8", "scale": 1.0, "zero_point": 0},
                               "outputs": {"probabilities": {"name": "probs"}},
                               "ood": {"method": "max_softmax", "threshold": 0.9, "flag_rate": 0.05}}, "model.json")
    assert manifest.rejected and manifest.labels == ("Benign", "Pre") and manifest.input.shape == (1, 32, 32, 3)
    assert manifest.output_names == {"probabilities": "probs"} and manifest.ood.threshold == 0.9


@pytest.mark.parametrize("document, message", [
    ({"status": "maybe"}, "status.*expected one of passed, rejected"),
    ({"labels": ["Pre", "Pre"]}, "Pre named twice"),
    ({"model_file": "../m.tflite"}, "a file name beside the model"),
    ({"input": {"shape": [32, 32, 3]}}, r"\[1, height, width, 3\]"),
    ({"ood": {"threshold": -1}}, "threshold"),
    ({"quality": {"colour_mean": [1, 2]}}, "a list of 3 numbers"),
])
def test_a_bad_field_is_one_line_naming_it(document, message):
    with pytest.raises(ModelError, match=message):
        check_manifest(document, "model.json")


def test_label_problem():
    assert label_problem(("Benign", "Pre")) == ""
    assert label_problem(("Benign", " ")) == "label 2 is blank"
