"""`allx train --cv K`: grouped folds, cv.json + cv.png, Ctrl-C keeps finished folds; bad grouping input."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allx import layout
from allx.cli.main import app
from allx.layout import RecordKind, SplitKind
from allx.train.folds import grouped_folds
from allx.train.groups import make_groups
from allx.train.split import write_split
from allx.train.trainer import DEFAULT_AUGMENT
from tests.cv_runs import TINY

runner = CliRunner()


def test_cv_writes_cv_json_and_plot_with_each_fold_and_the_mean(cv_run, numbered_dir):
    outcome, out, _ = cv_run
    assert outcome.exit_code == 0, outcome.output
    document = json.loads((out / layout.CV).read_text())
    assert document["kind"] == RecordKind.CV.value and document["split_kind"] == SplitKind.SEQUENCE.value
    assert document["folds"] == document["folds_done"] == 3 and document["complete"] is True
    tested = sorted(p for fold in document["results"] for p in fold["test"]["paths"])
    assert tested == sorted(p.relative_to(numbered_dir).as_posix() for p in numbered_dir.glob("*/*.jpg"))
    for name in ("accuracy", "malignant_sensitivity", "benign_specificity", "recall_Benign", "recall_Pro"):
        entry = document["summary"][name]
        assert len(entry["folds"]) == 3
        assert entry["low"] <= entry["mean"] <= entry["high"], (name, entry)
    for fold in document["results"]:
        assert fold["n_val"] > 0 and fold["epochs"]["monitor"] == "val_loss", "model selection on the fold's val part"
    assert (out / layout.CV_PLOT).is_file()
    assert "cv.json" in outcome.stdout
    assert not list(out.glob("*.tmp*"))


def test_each_fold_trains_on_the_default_recipe_views_and_selects_on_its_val_part(cv_run):
    outcome, out, _ = cv_run
    assert outcome.exit_code == 0, outcome.output
    document = json.loads((out / layout.CV).read_text())
    assert document["settings"]["augment"] == DEFAULT_AUGMENT == "dihedral"
    for fold in document["results"]:
        assert fold["train_views"] == 8 * fold["n_train"], "the 8 dihedral views of every training image"
        assert fold["epochs"]["monitor"] == "val_loss" and fold["operating_point"]["chosen_on"] == "fold val"


def test_a_fold_is_allx_train_on_the_folds_split_with_the_same_options(cv_run, numbered_dir, tmp_path):
    """Same head, same views, same selection: a fold's test numbers are those of `allx train --split FOLD`."""
    _, out, cache = cv_run
    document = json.loads((out / layout.CV).read_text())
    grouping = make_groups(numbered_dir, SplitKind.SEQUENCE, block_size=2)
    fold = grouped_folds(grouping, 3, seed=42, val=0.15)[1]
    write_split(fold, tmp_path / "fold.json")
    outcome = runner.invoke(app, ["train", str(numbered_dir), "--out", str(tmp_path / "run"), "--split",
                                  str(tmp_path / "fold.json"), "--seed", "43", *TINY],
                            env={"ALLX_CACHE_DIR": str(cache)})
    assert outcome.exit_code == 0, outcome.output
    metrics = json.loads((tmp_path / "run" / layout.METRICS).read_text())
    in_cv = document["results"][1]
    assert sorted(in_cv["test"]["paths"]) == sorted(fold.test)
    assert metrics["confusion_matrix"] == in_cv["confusion_matrix"]
    assert metrics["loss"] == pytest.approx(in_cv["loss"], abs=1e-3)


def test_cv_reuses_cached_features(cv_run, numbered_dir, tmp_path):
    _, _, cache = cv_run
    before = sorted(p.name for p in cache.rglob("*.npy"))
    outcome = runner.invoke(app, ["train", str(numbered_dir), "--out", str(tmp_path / "again"), "--cv", "2",
                                  "--group-by", "sequence", "--block-size", "2", *TINY],
                            env={"ALLX_CACHE_DIR": str(cache)})
    assert outcome.exit_code == 0, outcome.output
    assert sorted(p.name for p in cache.rglob("*.npy")) == before, "the same images' features are read, not redone"


def test_ctrl_c_keeps_the_finished_folds(numbered_dir, tmp_path, monkeypatch):
    from allx.train import cv

    real_run_fold, calls = cv.run_fold, []

    def interrupted_on_the_second_fold(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_fold(*args, **kwargs)

    monkeypatch.setattr(cv, "run_fold", interrupted_on_the_second_fold)
    out = tmp_path / "run"
    outcome = runner.invoke(app, ["train", str(numbered_dir), "--out", str(out), "--cv", "3", "--group-by",
                                  "sequence", "--block-size", "2", *TINY],
                            env={"ALLX_CACHE_DIR": str(tmp_path / "cache")})
    assert outcome.exit_code == 130, outcome.output
    assert "interrupted during fold 2 of 3" in outcome.stderr and "keeps the 1 finished fold" in outcome.stderr
    document = json.loads((out / layout.CV).read_text())
    assert document["complete"] is False and document["folds_done"] == 1 and len(document["results"]) == 1


def test_bad_grouping_input_gives_one_line_exit_2_and_writes_nothing(numbered_dir, tmp_path):
    rows = [(p.relative_to(numbered_dir).as_posix(), f"{p.parent.name}-{int(p.stem.split('-')[1]) // 3}")
            for p in sorted(numbered_dir.glob("*/*.jpg"))]

    def groups_file(name, changed):
        path = tmp_path / name
        path.write_text("path,group\n" + "".join(f"{p},{g}\n" for p, g in changed))
        return str(path)

    unknown = groups_file("unknown.csv", rows + [("Benign/nope.jpg", "X"), ("Pro/gone.jpg", "Y")])
    missing = groups_file("missing.csv", rows[1:])
    empty = groups_file("empty.csv", [(p, "" if k == 5 else g) for k, (p, g) in enumerate(rows)])
    two_classes = groups_file("two.csv", [(p, "P1" if p in ("Benign/cell-1.jpg", "Early/cell-1.jpg") else g)
                                          for p, g in rows])
    few_groups = groups_file("few.csv", [(p, p.split("/")[0]) for p, _ in rows])  # one group per class
    unnumbered = tmp_path / "unnumbered"
    shutil.copytree(numbered_dir, unnumbered)
    (unnumbered / "Pre" / "cell-3.jpg").rename(unnumbered / "Pre" / "odd.jpg")
    out = tmp_path / "out"
    split_out = ["--out", str(out / "s.json")]
    cases = [
        (["data", "split", str(numbered_dir), *split_out, "--groups", unknown], "not found among the images"),
        (["data", "split", str(numbered_dir), *split_out, "--groups", missing], "have no group"),
        (["data", "split", str(numbered_dir), *split_out, "--groups", empty], "empty group"),
        (["data", "split", str(numbered_dir), *split_out, "--groups", two_classes], "span two or more classes"),
        (["data", "split", str(numbered_dir), *split_out, "--groups", str(tmp_path / "absent.csv")], "no such file"),
        (["data", "split", str(numbered_dir), *split_out, "--group-by", "sequence", "--block-size", "0"],
         "--block-size: got 0"),
        (["data", "split", str(numbered_dir), *split_out, "--group-by", "patients"], "--group-by: got 'patients'"),
        (["data", "split", str(unnumbered), *split_out, "--group-by", "sequence", "--no-neighbours"],
         "carry no number"),
        (["data", "split", str(numbered_dir), *split_out, "--group-by", "sequence", "--similarity", "1.5"],
         "--similarity: got 1.5"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "3", "--groups", unknown, *TINY],
         "not found among the images"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "3", "--groups", two_classes, *TINY],
         "span two or more classes"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "5", "--groups", few_groups, *TINY],
         "form only 4 group(s), expected at least 5"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "60", *TINY], "from 2 to 20"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "3", *TINY, "--backbone", "resnet5"],
         "unknown backbone"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "5", "--group-by", "sequence", "--block-size", "4",
          *TINY], "at least 5 groups in every class"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "3", "--group-by", "sequence", "--block-size", "0",
          *TINY], "--block-size: got 0"),
        (["train", str(numbered_dir), "--out", str(out), "--cv", "3", "--target-sensitivity", "1.5", *TINY],
         "--target-sensitivity: got 1.5"),
        (["train", str(numbered_dir), "--out", str(out), "--target-sensitivity", "1.5", *TINY],
         "--target-sensitivity: got 1.5"),
        (["train", str(numbered_dir), "--out", str(out), "--split", unknown, "--group-by", "sequence", *TINY],
         "expected one or the other"),
    ]
    for args, expected in cases:
        outcome = runner.invoke(app, args)
        assert outcome.exit_code == 2, (args, outcome.output)
        errors = [line for line in outcome.stderr.strip().splitlines() if not line.startswith("hashing images:")]
        assert len(errors) == 1 and errors[0].startswith("error:") and expected in errors[0], (args, errors)
        assert "Traceback" not in outcome.output
        assert not out.exists(), (args, "nothing may be written on bad input")


def test_fewer_groups_than_folds_is_refused(numbered_dir, tmp_path):
    rows = [(p.relative_to(numbered_dir).as_posix(), p.parent.name) for p in sorted(numbered_dir.glob("*/*.jpg"))]
    path = tmp_path / "g.csv"
    path.write_text("path,group\n" + "".join(f"{p},{g}\n" for p, g in rows))
    outcome = runner.invoke(app, ["train", str(numbered_dir), "--out", str(tmp_path / "o"), "--cv", "5",
                                  "--groups", str(path), *TINY])
    assert outcome.exit_code == 2 and "only 4 group(s), expected at least 5" in outcome.stderr, outcome.output
    assert not (tmp_path / "o").exists()


def test_inspect_split_counts_near_neighbour_pairs_that_cross_subsets(numbered_dir, tmp_path):
    root = Path(shutil.copytree(numbered_dir, tmp_path / "data"))
    shutil.copy(root / "Pro" / "cell-2.jpg", root / "Pro" / "cell-99.jpg")  # a re-capture of one field
    paths = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))
    test = {"Pro/cell-99.jpg", "Benign/cell-1.jpg", "Early/cell-1.jpg", "Pre/cell-1.jpg"}
    split = {"classes": ["Benign", "Early", "Pre", "Pro"], "train": [p for p in paths if p not in test],
             "test": sorted(test)}
    (tmp_path / "split.json").write_text(json.dumps(split))
    outcome = runner.invoke(app, ["data", "inspect", str(root), "--split", str(tmp_path / "split.json"), "--json",
                                  "--no-neighbours"])
    assert outcome.exit_code == 0, outcome.output
    leakage = json.loads(outcome.stdout)["split_leakage"]
    assert leakage["split_kind"] == SplitKind.IMAGE.value
    assert leakage["phash"]["crossing"] >= 1 and leakage["phash"]["by_subsets"].get("train-test", 0) >= 1
    assert ["Pro/cell-2.jpg", "Pro/cell-99.jpg"] in leakage["phash"]["examples"]
    table = runner.invoke(app, ["data", "inspect", str(root), "--split", str(tmp_path / "split.json"),
                                "--no-neighbours"])
    assert table.exit_code == 0 and "cross" in table.stdout


def test_lite0_recipe_folds_choose_their_point_on_cross_fitted_train_and_val(numbered_dir, tmp_path):
    """Lite0's registered recipe (multiscale, logreg): each fold's operating point is cross-fitted over its own
    groups, the rule `allx train` ships, and its C is chosen on the fold's val part."""
    from tests.cv_runs import run_tiny_cv

    out = tmp_path / "run"
    outcome = run_tiny_cv(numbered_dir, out, tmp_path / "cache", "--head", "logreg", "--features", "multiscale",
                          "--augment", "none")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads((out / layout.CV).read_text())
    assert (document["settings"]["head"], document["settings"]["features"]) == ("logreg", "multiscale")
    for fold in document["results"]:
        point = fold["operating_point"]
        assert "fold train+val, cross-fitted over 5 grouped folds, 95% confidence" == point["chosen_on"]
        assert point["n_malignant"] + point["n_benign"] == fold["n_train"] + fold["n_val"]
        assert fold["train_views"] == fold["n_train"], "no augmentation: one view per image"
        assert fold["op_sensitivity"] is not None
