"""benchmarks/recipes.py --quick end to end (its own module, so pytest-xdist runs it beside the other slow ones)."""

import json

import pytest
from test_benchmarks import run_script


@pytest.mark.slow
def test_recipes_quick_cross_validates_every_recipe_and_head_with_and_without_tta(tmp_path):
    out = tmp_path / "recipes.json"
    printed = run_script("recipes.py", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                         "--heads", "gap,logreg")
    result = json.loads(out.read_text())
    assert result["kind"] == "recipes-cv" and result["folds"] == 5 and result["fold_kind"] == "block"
    assert [(r["recipe"], r["head"], r["tta"]) for r in result["rows"]] == [
        (recipe, head, tta) for recipe in ("plain", "dihedral", "dihedral+stain") for head in ("gap", "logreg")
        for tta in (False, True)]
    for row in result["rows"]:
        assert len(row["folds"]) == 5 and 0 <= row["worst_fold"]["accuracy"] <= row["mean"]["accuracy"] <= 1
        if row["head"] == "logreg":  # C chosen on each fold's validation block; allx train's cross-fitted point
            assert all(chosen["C"] in (0.001, 0.01, 0.03, 0.1, 0.3, 1.0) for chosen in row["chosen_on_val"])
            assert all(0 <= fold["sensitivity_at_crossfit_point"] <= 1 for fold in row["folds"])
    assert result["best"]["recipe"] in ("plain", "dihedral", "dihedral+stain") and "| dihedral | logreg |" in printed
    # the image alone (no dihedral views) when only the plain recipe is asked for: no TTA row; multiscale features
    run_script("recipes.py", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--recipes", "plain",
               "--chunks", "3", "--features", "multiscale", "--heads", "logreg")
    plain = json.loads(out.read_text())
    assert [(r["recipe"], r["tta"]) for r in plain["rows"]] == [("plain", False)] and plain["features"] == "multiscale"
