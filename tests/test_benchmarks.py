"""The benchmark scripts' --quick modes run end to end and write the JSON the README and report read.

They assert the shape of the results, never a time: speed claims live in benchmarks/results/.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(name, *args):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--quick", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_training_speed_quick_writes_both_timings(tmp_path):
    out = tmp_path / "training_speed.json"
    printed = run_script("training_speed.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "training_speed" and result["epochs"] == 10
    assert result["naive_s"] > 0 and result["cached_s"] > result["feature_extraction_s"] > 0
    assert result["speedup"] == pytest.approx(result["naive_s"] / result["cached_s"], rel=0.01)
    assert "synthetic" in result["data"] and "speedup" in printed


def test_block_folds_hold_out_one_contiguous_block_per_class():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("recipes", REPO / "benchmarks" / "recipes.py")
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    labels = np.array([0] * 10 + [1] * 15)
    folds = recipes.block_folds(labels, 5)
    tested = np.concatenate([f["test"] for f in folds])
    assert sorted(tested) == list(range(25)), "every image is tested exactly once"
    for fold in folds:
        parts = [set(fold[name]) for name in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(set().union(*parts)) == 25
        for label in (0, 1):
            rows = sorted(r for r in fold["test"] if labels[r] == label)
            assert rows == list(range(rows[0], rows[-1] + 1)), "a held-out block is a contiguous run"
    assert recipes.file_number("Benign/WBC-Benign-010.jpg") > recipes.file_number("Benign/WBC-Benign-9.jpg")


def load_recipes():
    spec = importlib.util.spec_from_file_location("recipes", REPO / "benchmarks" / "recipes.py")
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    return recipes


def imbalanced_features(seed=0, per_class=(12, 40, 40, 40), width=6):
    """Overlapping Gaussian classes, Benign (class 0) the smallest, in file-number order per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    features = rng.normal(size=(len(labels), width)) + 0.8 * np.eye(4, width)[labels]
    return features.astype(np.float32), labels


def test_recipes_balanced_class_weights_change_the_head_and_reach_the_crossfitted_point():
    from argparse import Namespace

    recipes = load_recipes()
    features, labels = imbalanced_features()
    folds = recipes.block_folds(labels, 5)
    fold, views = folds[0], {"single": features[:, None, :]}
    classes = ["Benign", "Early", "Pre", "Pro"]
    heads, points = {}, {}
    for weights in ("none", "balanced"):
        args = Namespace(class_weights=weights, c_grid=(1.0,), refit=True)
        heads[weights], chosen = recipes.fit_logreg(args, features[fold["train"]], labels[fold["train"]],
                                                    features[fold["val"]], labels[fold["val"]], 4)
        assert chosen["C"] == 1.0
        points[weights] = recipes.crossfit_point(views, "plain", labels, fold, classes, 1.0, False, 4,
                                                 weights == "balanced")
    benign = {w: heads[w].predict(features)[:, 0] for w in heads}
    # the rare Benign class weighs as much as each other class: every image gets more Benign probability
    assert np.all(benign["balanced"] > benign["none"])
    assert points["balanced"].threshold != points["none"].threshold


def test_recipes_refit_the_chosen_c_on_train_and_val_as_allx_train_does():
    from argparse import Namespace

    from allx.train.logistic import fit_one

    recipes = load_recipes()
    features, labels = imbalanced_features()
    fold = recipes.block_folds(labels, 5)[0]
    train, val = fold["train"], fold["val"]
    fits = {refit: recipes.fit_logreg(Namespace(class_weights="none", c_grid=(0.1, 1.0), refit=refit),
                                      features[train], labels[train], features[val], labels[val], 4)
            for refit in (False, True)}
    assert fits[True][1]["C"] == fits[False][1]["C"] and fits[True][1]["fitted_on"] == "train+val"
    both = np.concatenate([train, val])
    expected = recipes.LogisticHead(fit_one(features[both], labels[both], fits[True][1]["C"], None), 4)
    np.testing.assert_allclose(fits[True][0].predict(features), expected.predict(features), atol=1e-9)
    assert np.abs(fits[True][0].predict(features) - fits[False][0].predict(features)).max() > 1e-3


def test_recipes_choose_variant_keeps_sensitivity_and_accuracy_then_takes_the_best_specificity():
    recipes = load_recipes()

    def run(accuracy, sensitivity, specificity):
        mean = {"accuracy": accuracy, "sensitivity_at_crossfit_point": sensitivity,
                "specificity_at_crossfit_point": specificity}
        return {"rows": [{"head": "logreg", "tta": False, "mean": mean, "worst_fold": mean}]}

    runs = [run(0.980, 0.995, 0.90), run(0.976, 0.995, 0.95), run(0.970, 0.995, 0.99), run(0.980, 0.985, 0.99)]
    chosen = recipes.choose_variant(runs, ["plain", "balanced", "costs accuracy", "loses sensitivity"])
    assert chosen["chosen"] == "balanced"
    assert [c["qualifies"] for c in chosen["candidates"]] == [True, True, False, False]


def test_recipes_tap_columns_select_the_named_taps_of_the_concatenated_features():
    recipes = load_recipes()
    columns = recipes.tap_columns("efficientnet-lite0", "block2_add,block14_add")  # 24 + ... + 192 channels
    assert list(columns) == list(range(24)) + list(range(448 - 192, 448))


def test_cv_quick_writes_a_grouped_summary_per_backbone(tmp_path):
    out = tmp_path / "cv.json"
    printed = run_script("cv.py", "--backbone", "efficientnet-lite0", "--work", str(tmp_path / "work"),
                         "--out", str(out))
    entry = json.loads(out.read_text())["entries"][0]
    assert entry["backbone"] == "efficientnet-lite0" and entry["folds"] == 3 and entry["split_kind"] == "sequence"
    summary = entry["summary"]["accuracy"]
    assert summary["low"] <= summary["mean"] <= summary["high"] and len(summary["folds"]) == 3
    assert "| efficientnet-lite0 |" in printed


def test_quality_quick_writes_rejection_rates(tmp_path):
    out = tmp_path / "quality.json"
    printed = run_script("quality.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "quality" and result["kind"] == "benchmark" and result["quick"] is True
    assert {"good", "blur_sigma_1.5", "under_exposed_x0.35", "over_exposed_x1.8"} <= set(result["rejected"])
    assert result["rejected"]["blur_sigma_2"] >= 0.9 and result["limits"]["focus_min"] > 0
    assert "blurred copies rejected" in printed


def test_explain_quick_times_both_ways_side_by_side(tmp_path):
    from edge_models import tiny_models

    out = tmp_path / "explain.json"
    printed = run_script("explain.py", "--model", str(tiny_models().int8), "--out", str(out))
    result = json.loads(out.read_text())
    cost = result["cost"]
    assert result["benchmark"] == "explain" and result["takes_batches"] and cost["fields"] == 8
    assert result["method"]["kind"] == "RandomMasks" and result["method"]["fill"] == "blur"
    assert cost["copies_per_field"] == 96 and cost["looped"]["invokes_per_field"] == 97
    assert cost["batched"]["invokes_per_field"] == 13  # 96 copies, 8 per invoke, and the field's own
    assert cost["speedup_p50"] == pytest.approx(cost["looped"]["ms_p50"] / cost["batched"]["ms_p50"])
    assert result["maps"] is None and "one per invoke" in printed


@pytest.mark.slow
def test_multiworker_quick_times_one_and_two_workers(tmp_path):
    out = tmp_path / "multiworker.json"
    printed = run_script("multiworker.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["benchmark"] == "multiworker" and result["images"] == 60 and result["threads_per_worker"] == 1
    assert result["one_worker_s"] > 0 and result["two_workers_s"] >= result["two_workers_extract_s"] > 0
    assert result["speedup"] == pytest.approx(result["one_worker_s"] / result["two_workers_s"], rel=0.01)
    assert result["ceiling_speedup"] == pytest.approx(result["one_worker_s"] / result["independent_halves_s"], rel=0.01)
    assert all(ms > 0 for ms in result["cpu_ms_per_image"].values()) and len(result["per_round"]) == result["rounds"]
    threads = result["per_round"][0]["threads"]
    assert all(t["intra_op"] == t["inter_op"] == 1 for t in [threads["one_worker"], *threads["two_workers"],
                                                              *threads["independent_halves"]])
    assert len(result["load_average_before"]) == 3 and "speedup" in printed and "ceiling" in printed


def test_every_readme_results_section_renders_lines():
    """readme_results.py rewrites the README's results block from every section: each one must give lines (a
    section that returns nothing would stop the whole rewrite)."""
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sections = [getattr(module, name) for name in dir(module) if name.endswith("_section")]
    assert len(sections) >= 10
    for section in sections:
        lines = section()
        assert isinstance(lines, list) and lines and all(isinstance(line, str) for line in lines), section.__name__



def test_readme_new_patients_block_says_met_from_the_worst_fold(monkeypatch):
    """The new-patients block is rendered between its markers from the two JSONs, and the worst fold's verdict
    follows its number (0.84 -> not met, 0.91 -> met); the refit note appears only for a refit run."""
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real = module.load
    for worst, verdict in ((0.84, "**not met**"), (0.91, "**met**")):
        def load(name, worst=worst):
            doc = real(name)
            if name == "recipes_default_point.json":
                doc["rows"][0]["folds"][4]["specificity_at_crossfit_point"] = worst
                for fold in doc["rows"][0]["folds"][:4]:
                    fold["specificity_at_crossfit_point"] = 0.99
            return doc
        monkeypatch.setattr(module, "load", load)
        block = module.new_patients_block()
        assert block.startswith(module.NEW_PATIENTS_START) and block.endswith(module.NEW_PATIENTS_END)
        assert f"{worst:.3f} in fold 5" in block and f"Target >= 0.85: {verdict}" in block
    doc = real("recipes_default_point.json")
    assert module.refit_note(doc) and module.refit_note({**doc, "variant": {"refit": False}}) == []


def test_readme_int8_variants_name_every_variant_and_the_kept_one():
    """The int8 variants compared on val are each quoted with their flips, and the kept one is named; an
    absent JSON gives no lines rather than a broken paragraph."""
    spec = importlib.util.spec_from_file_location("readme_results", REPO / "benchmarks" / "readme_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = {"images": 10, "mean_abs_prob_diff": 0.01,
           "verdicts": ["all classes: 1 right->wrong, 0 wrong->right of 10; drop bound", "Benign: 1 right->wrong, "
                        "0 wrong->right of 4; drop bound"]}
    doc = {"command": "allx convert M", "date": "2026-01-01", "rule": "fewest flips",
           "rows": [{**row, "variant": "plain int8"}, {**row, "variant": "int8 + 2 float layers"}],
           "chosen": "int8 + 2 float layers"}
    text = "".join(module.int8_variants_lines(doc))
    assert "plain int8 (1 right->wrong, 0 wrong->right of 10; Benign 1 right->wrong" in text
    assert "Kept: **int8 + 2 float layers**" in text and "10 images" in text
    assert module.int8_variants_lines(None) == []

def test_explain_stain_mask_finds_the_purple_cell_and_leaves_lavender_red_cells():
    """The map check's second reference: a stained white cell is found, a lavender red cell (purple excess
    below the floor) and a speck are not, and painting the cell out leaves the field's background colour."""
    sys.path.insert(0, str(REPO))
    from allx.train.background_swap import stain_mask, without_cells
    from benchmarks.explain import mass_ratio

    yy, xx = np.mgrid[:96, :96]
    field = np.full((96, 96, 3), (235, 230, 240), np.uint8)  # light background
    cell = (yy - 30) ** 2 + (xx - 30) ** 2 < 15 ** 2
    red_cell = (yy - 70) ** 2 + (xx - 70) ** 2 < 12 ** 2
    speck = (yy - 80) ** 2 + (xx - 15) ** 2 < 3 ** 2
    field[cell] = (120, 60, 170)  # purple excess 85
    field[red_cell] = (200, 180, 215)  # lavender: excess 27.5
    field[speck] = (120, 60, 170)
    found = stain_mask(field)
    assert found[cell].mean() > 0.95 and not found[red_cell].any() and not found[speck].any()
    painted = without_cells(field, found)
    assert (painted[30, 30] == (235, 230, 240)).all() and (painted[70, 70] == field[70, 70]).all()
    fields = [{"flat": False, "share": 0.1, "inside": 0.3}, {"flat": True, "share": 0.1, "inside": 0.0}]
    ratio = mass_ratio(fields, "inside", "share")
    assert ratio["mass_ratio"] == pytest.approx(3.0) and ratio["mass_ratio_flat_as_uniform"] == pytest.approx(2.0)


def test_explain_clinical_counts_both_sides_at_the_argmax_and_at_the_shipped_point():
    sys.path.insert(0, str(REPO))
    from allx.decision import OperatingPoint
    from benchmarks.explain import clinical

    labels = ["Benign", "Early", "Pre", "Pro"]
    probabilities = np.array([[0.9, 0.1, 0, 0], [0.6, 0.4, 0, 0], [0.2, 0.8, 0, 0], [0.55, 0, 0.45, 0]])
    truths = ["Benign", "Benign", "Early", "Pre"]
    point = OperatingPoint(threshold=0.3, target_sensitivity=0.99, sensitivity=1.0, specificity=0.5,
                           n_malignant=2, n_benign=2, chosen_on="test")
    result = clinical(probabilities, truths, labels, point)
    argmax, shipped = result["argmax"], result["operating_point"]
    assert argmax["malignant_sensitivity"]["right"] == 1 and argmax["malignant_sensitivity"]["of"] == 2
    assert argmax["benign_specificity"]["right"] == 2 and argmax["benign_specificity"]["of"] == 2
    assert shipped["malignant_sensitivity"]["right"] == 2 and shipped["benign_specificity"]["right"] == 1
    low, high = shipped["benign_specificity"]["interval"]
    assert low < 0.5 < high and shipped["threshold"] == 0.3
    assert "operating_point" not in clinical(probabilities, truths, labels, None)


def test_recipes_colour_norm_features_get_their_own_cache_key_and_plain_keys_stay_as_they_were():
    from argparse import Namespace

    from allx.train.backbones import get_backbone
    from allx.train.features import cache_key

    recipes = load_recipes()
    backbone = get_backbone("efficientnet-lite0")
    keys = {}
    for norm in ("none", "per-image"):
        args = Namespace(features="multiscale", backbone=backbone.name, weights="imagenet", colour_norm=norm)
        parts = recipes.feature_key_parts(args, backbone, "fingerprint", (224, 224), "none")
        keys[norm] = cache_key(parts)
        assert ("colour_norm" in parts) == (norm != "none")
    assert keys["none"] != keys["per-image"]
