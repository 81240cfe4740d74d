"""benchmarks/new_patients.py --quick end to end: generated numbered images, the new-user split, the default
recipe trained at 32 px, `allx convert --int8`, then the held-out block measured as allx-edge runs it (its own
module, so pytest-xdist runs it beside the other slow ones)."""

import json

import pytest
from test_benchmarks import run_script


@pytest.mark.slow
def test_new_patients_quick_writes_every_target_with_what_model_json_states(tmp_path):
    out = tmp_path / "new_patients.json"
    printed = run_script("new_patients.py", "--work", str(tmp_path / "work"), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "new_patients" and result["quick"] is True
    assert set(result["met"]) == {"block_flagged", "other_lab_flagged", "inconclusive", "benign_inconclusive",
                                  "wrong", "benign_specificity", "check"}
    assert set(result["targets"]) >= {"block_flagged", "other_lab_flagged", "benign_inconclusive", "benign_specificity"}
    split = result["split"]
    assert result["block_fields"] == split["test"] == 32 and split["val"] + split["train"] == 128
    assert set(result["block_flagged_by_class"]) == {"Benign", "Early", "Pre", "Pro"}
    assert 0 <= result["block_flagged"] <= 1 and 0 <= result["other_lab_flagged"] <= 1 and result["other_lab_images"] > 0
    rows = result["samples"]["rows"]
    assert {row["flagged_weight"] for row in rows} == {0.0, 0.5, 1.0} and sum(row["shipped"] for row in rows) == 1
    assert rows[0]["samples"] == 8  # 8 block images per class: a five-field and a three-field sample
    stated = result["stated"]
    assert stated["ood"]["evidence"]["on"] == "out-of-group"
    assert set(stated["ood"]["class_held_out_flagged"]) == {"Benign", "Early", "Pre", "Pro"}
    assert sum(row.get("chosen", False) for row in stated["sample_rule_tradeoff"]) == 1
    assert "| measure (held-out last 20% of file numbers) |" in printed and "| Benign |" in printed
