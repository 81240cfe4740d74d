"""edge_runner.sample: the pure aggregation rule, and a SampleSession over a tiny model folder."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from edge_models import LABELS, SIZE, tiny_models
from PIL import Image, ImageFilter

from allx.decision import VERDICT_BENIGN, VERDICT_INCONCLUSIVE, VERDICT_MALIGNANT, OperatingPoint
from allx.edge_runner.model import EdgeModel, Prediction
from allx.edge_runner.sample import FieldResult, SampleRule, SampleSession, aggregate, aggregate_probabilities
from allx.errors import ModelError

PRE = (0.02, 0.03, 0.9, 0.05)
BENIGN_ROW = (0.9, 0.04, 0.03, 0.03)


def field(name: str, probabilities, usable: bool = True, reason: str | None = None) -> FieldResult:
    top = int(np.argmax(probabilities))
    prediction = Prediction(LABELS[top], probabilities[top], ((LABELS[top], probabilities[top]),),
                            tuple(probabilities), 1.0)
    return FieldResult(name, "0" * 64, prediction, None, usable, reason)


def test_mean_log_probability_is_a_normalised_geometric_mean():
    merged = aggregate_probabilities([PRE, BENIGN_ROW])
    expected = np.sqrt(np.array(PRE) * np.array(BENIGN_ROW))
    assert np.allclose(merged, expected / expected.sum())


def test_five_malignant_fields_give_one_subtype_verdict():
    verdict = aggregate([field(f"f{i}.jpg", PRE) for i in range(5)], LABELS, SampleRule(), "S1")
    assert (verdict.verdict, verdict.subtype, verdict.reason) == (VERDICT_MALIGNANT, "Pre", None)
    assert verdict.words.startswith("B-ALL suspected (Pre, 0.9") and len(verdict.fields_used) == 5
    record = verdict.to_dict()
    assert record["kind"] == "sample" and record["sample_id"] == "S1" and record["verdict"] == "malignant"
    json.dumps(record)


def test_benign_fields_say_no_b_all_seen():
    verdict = aggregate([field(f"f{i}", BENIGN_ROW) for i in range(4)], LABELS, SampleRule())
    assert verdict.verdict == VERDICT_BENIGN and verdict.words == "no B-ALL seen" and verdict.subtype is None


def test_the_rule_threshold_moves_the_verdict():
    row = (0.7, 0.1, 0.1, 0.1)  # malignant score 0.3
    fields = [field(f"f{i}", row) for i in range(3)]
    assert aggregate(fields, LABELS, SampleRule(threshold=0.5, min_agreement=0)).verdict == VERDICT_BENIGN
    assert aggregate(fields, LABELS, SampleRule(threshold=0.2, min_agreement=0)).verdict == VERDICT_MALIGNANT


@pytest.mark.parametrize("fields, reason", [
    ([], "no fields"),
    ([field("a", PRE), field("b", PRE, False, "blurred: focus 12 < 40")], "too few usable fields: 1, expected at least 3"),
    ([field("a", PRE), field("b", PRE)] + [field(f"x{i}", PRE, False, "unreadable") for i in range(3)],
     "too many fields set aside: 3 of 5"),
    ([field("a", PRE), field("b", PRE), field("c", BENIGN_ROW), field("d", BENIGN_ROW)],
     "fields disagree"),
])
def test_inconclusive_says_why(fields, reason):
    verdict = aggregate(fields, LABELS, SampleRule(min_agreement=0.6), "S")
    assert verdict.verdict == VERDICT_INCONCLUSIVE and verdict.subtype is None and verdict.reason.startswith(reason)
    assert verdict.words == f"inconclusive: {verdict.reason}"


def test_set_aside_fields_are_named_with_their_reason():
    fields = [field(f"f{i}", PRE) for i in range(3)] + [field("blur.jpg", BENIGN_ROW, False, "blurred: focus 3 < 40")]
    verdict = aggregate(fields, LABELS, SampleRule())
    assert verdict.verdict == VERDICT_MALIGNANT and verdict.fields_set_aside == (("blur.jpg", "blurred: focus 3 < 40"),)
    assert verdict.to_dict()["fields_set_aside"] == [{"path": "blur.jpg", "reason": "blurred: focus 3 < 40"}]


def test_rule_round_trips_and_refuses_nonsense():
    rule = SampleRule(threshold=0.3, min_fields=2, chosen_on="val", samples=40, sensitivity=1.0)
    assert SampleRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    with pytest.raises(ModelError, match="threshold"):
        SampleRule.from_dict({"threshold": 3})
    with pytest.raises(ModelError, match="method"):
        SampleRule.from_dict({"method": "vote"})


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """The tiny float32 model in a folder whose model.json carries an operating point, a rule and quality limits."""
    folder = tmp_path_factory.mktemp("sample-model")
    shutil.copy(tiny_models().float32, folder / "model_float32.tflite")
    manifest = {"format": "allx-tflite/1", "model_file": "model_float32.tflite", "labels": list(LABELS),
                "operating_point": OperatingPoint(0.4, 0.99, chosen_on="val").to_dict(),
                "sample_rule": SampleRule(threshold=0.4, min_fields=2, min_agreement=0.0).to_dict(),
                "quality": {"focus_min": 50.0, "shadows_max": 0.2, "highlights_max": 0.2}}
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def textured(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(60, 200, (SIZE, SIZE, 3), dtype=np.uint8))


def test_a_session_reads_checks_classifies_and_sets_aside(model_folder, tmp_path):
    model = EdgeModel.load(model_folder)
    for i in range(3):
        textured(i).save(tmp_path / f"good{i}.png")
    textured(9).filter(ImageFilter.GaussianBlur(3)).save(tmp_path / "blur.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    session = SampleSession(model, "P-7")
    results = [session.add_field(tmp_path / name) for name in ("good0.png", "good1.png", "good2.png", "blur.png",
                                                              "broken.jpg")]
    assert [r.usable for r in results] == [True, True, True, False, False]
    assert results[3].reason.startswith("blurred: focus ") and "not a readable image" in results[4].reason
    assert len(results[0].sha256) == 64 and results[0].decision is not None and results[0].quality.ok
    verdict = session.verdict()
    assert verdict.sample_id == "P-7" and verdict.verdict in (VERDICT_MALIGNANT, VERDICT_BENIGN)
    assert verdict.fields_used == tuple(str(tmp_path / f"good{i}.png") for i in range(3))
    assert [name for name, _ in verdict.fields_set_aside] == [str(tmp_path / "blur.png"), str(tmp_path / "broken.jpg")]
    same = SampleSession(model, "bytes")
    assert same.add_field("good0.png", (tmp_path / "good0.png").read_bytes()).sha256 == results[0].sha256


def test_a_session_with_zero_usable_fields_is_inconclusive(model_folder, tmp_path):
    session = SampleSession(EdgeModel.load(model_folder), "empty")
    (tmp_path / "broken.jpg").write_bytes(b"")
    session.add_field(tmp_path / "broken.jpg")
    session.add_field(tmp_path / "missing.jpg")
    verdict = session.verdict()
    assert verdict.verdict == VERDICT_INCONCLUSIVE and "set aside" in verdict.reason and len(verdict.fields_set_aside) == 2


def test_a_flagged_field_lowers_its_pull_instead_of_leaving_the_sample_short():
    """Three of five benign fields flagged unlike training: set aside (weight 0) the sample is inconclusive;
    counted at half weight it is decided by its fields, and the verdict names the flagged ones."""
    flagged = [replace(field(f"f{i}", BENIGN_ROW), flagged=True) for i in range(3)]
    plain = [field(f"g{i}", BENIGN_ROW) for i in range(2)]
    aside = [replace(f, usable=False, reason="uncertain: unlike training images", flagged=False) for f in flagged]
    assert aggregate(aside + plain, LABELS, SampleRule()).reason.startswith("too many fields set aside: 3 of 5")
    verdict = aggregate(flagged + plain, LABELS, SampleRule(flagged_weight=0.5))
    assert verdict.verdict == VERDICT_BENIGN and verdict.fields_flagged == ("f0", "f1", "f2")
    assert verdict.words == "no B-ALL seen; 3 of 5 fields unlike training, counted at lower weight"
    assert verdict.to_dict()["fields_flagged"] == ["f0", "f1", "f2"]


def test_flagged_fields_weigh_less_in_the_aggregate_and_the_agreement():
    # two flagged malignant fields against two plain benign ones: at full weight a tie the threshold settles,
    # at a small weight the plain fields decide and agree
    fields = [replace(field("m0", PRE), flagged=True), replace(field("m1", PRE), flagged=True),
              field("b0", BENIGN_ROW), field("b1", BENIGN_ROW)]
    light = aggregate(fields, LABELS, SampleRule(flagged_weight=0.1, min_fields=3, min_agreement=0.8))
    assert light.verdict == VERDICT_BENIGN and light.agreement == pytest.approx(2 / 2.2)
    full = aggregate(fields, LABELS, SampleRule(flagged_weight=1.0, min_fields=3, min_agreement=0.8))
    assert full.verdict == VERDICT_INCONCLUSIVE and full.reason.startswith("fields disagree")
