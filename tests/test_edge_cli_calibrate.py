"""`allx-edge calibrate` as a command: bad input is one line and exit 2."""

import shutil

from test_calibrate import invoke, model_dir, site_dir  # noqa: F401 (fixtures)


def test_bad_input_is_one_line_and_exit_2(model_dir, site_dir, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    few = tmp_path / "few"
    few.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(next(site_dir.glob("*.png")), few / name)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("path,label\nsite00.png,Blast\n")
    bad_columns = tmp_path / "bad_columns.csv"
    bad_columns.write_text("name,class\nsite00.png,Pro\n")
    none_named = tmp_path / "none.csv"
    none_named.write_text("path,label\nelsewhere.png,Pro\n")
    no_stats = tmp_path / "no_stats"
    shutil.copytree(model_dir, no_stats)
    (no_stats / "ood_stats_float32.npz").unlink()
    cases = [
        (("--model", model_dir, "--images", site_dir, "--out", model_dir), "expected a new folder (the original"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "full"), "is not an empty folder"),
        (("--model", tmp_path / "nope", "--images", site_dir, "--out", tmp_path / "o"), "--model: got"),
        (("--model", model_dir, "--images", tmp_path / "nope", "--out", tmp_path / "o"), "--images: got"),
        (("--model", model_dir, "--images", empty, "--out", tmp_path / "o"), "no image files in"),
        (("--model", model_dir, "--images", few, "--out", tmp_path / "o"), "got 2 readable site images"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--labels-csv", bad_label),
         "got label 'Blast', expected one of Benign"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--labels-csv", bad_columns),
         "got columns ['name', 'class']"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--labels-csv", tmp_path / "no.csv"),
         "--labels-csv: no such file"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--labels-csv", none_named),
         "names none of the 60 site images"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--flag-rate", "1.5"),
         "--flag-rate: got 1.5"),
        (("--model", model_dir, "--images", site_dir, "--out", tmp_path / "o", "--max-drop", "-1"),
         "--max-drop: got -1"),
        (("--model", no_stats, "--images", site_dir, "--out", tmp_path / "o"), "out-of-distribution statistics"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr, (message, result.stderr)
    assert not (tmp_path / "o").exists()
