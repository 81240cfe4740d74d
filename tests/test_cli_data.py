"""`allx data inspect|split` from the command line: exit codes, JSON, files written, one-line errors."""

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from allx.cli.main import app
from allx.train.split import read_split

from messy_data import CONFLICT, EXACT, make_messy_copy

runner = CliRunner()


@pytest.fixture(scope="module")
def messy_dir(synthetic_dir, tmp_path_factory):
    return make_messy_copy(synthetic_dir, tmp_path_factory.mktemp("cli") / "messy")


def test_inspect_json_is_one_document_and_conflicts_are_flagged(messy_dir):
    outcome = runner.invoke(app, ["data", "inspect", str(messy_dir), "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    for key in ("total", "per_class", "unreadable", "duplicate_groups", "near_duplicate_groups", "label_conflicts"):
        assert key in report
    assert list(EXACT) in report["duplicate_groups"]
    assert any(set(CONFLICT) <= set(c["paths"]) for c in report["label_conflicts"])
    assert "label conflict" in outcome.stderr and "Traceback" not in outcome.output


def test_inspect_table_lists_problems_by_path(messy_dir):
    outcome = runner.invoke(app, ["data", "inspect", str(messy_dir)])
    assert outcome.exit_code == 0, outcome.output
    for text in ("Benign", "Benign/notes.txt", "Pre/truncated.jpg", "LABEL CONFLICT (exact)", CONFLICT[1],
                 "near-duplicate groups (phash within 10 bits, chained)"):
        assert text in outcome.stdout, text


def test_inspect_escapes_control_characters_in_file_names(synthetic_dir, tmp_path):
    data = shutil.copytree(synthetic_dir, tmp_path / "data")
    (data / "Benign" / "x\x1b[2J\nfake: 0 problems.txt").write_text("not an image")
    outcome = runner.invoke(app, ["data", "inspect", str(data)])
    assert outcome.exit_code == 0 and "\x1b" not in outcome.output, outcome.output
    assert "Benign/x\\x1b[2J\\nfake: 0 problems.txt" in outcome.stdout


def test_split_writes_the_split_and_three_charts(messy_dir, tmp_path):
    out = tmp_path / "out" / "my_split.json"
    outcome = runner.invoke(app, ["data", "split", str(messy_dir), "--out", str(out), "--seed", "3"])
    assert outcome.exit_code == 0, outcome.output
    split = read_split(out, messy_dir)
    assert split.meta["seed"] == 3 and split.meta["fractions"]["val"] == 0.15
    for name in ("sizes", "proportions", "classes"):
        with Image.open(out.with_name(f"my_split_{name}.png")) as chart:
            assert chart.format == "PNG" and chart.width > 200
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["my_split.json", "my_split_sizes.png", "my_split_proportions.png", "my_split_classes.png"])
    assert "dropped 1 label-conflict group" in outcome.stderr
    assert "wrote" in outcome.stdout
    # no --groups, no --group-by sequence: one line says val figures will be optimistic and what to pass
    warning = [line for line in outcome.stderr.splitlines() if "no patient grouping" in line]
    assert len(warning) == 1 and "--groups" in warning[0] and "--group-by sequence" in warning[0]


def test_bad_input_gives_one_error_line_and_exit_2(synthetic_dir, tmp_path):
    one_class = tmp_path / "one"
    shutil.copytree(synthetic_dir / "Pro", one_class / "Pro")
    out = str(tmp_path / "s.json")
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder is expected")
    cases = [
        (["inspect", str(tmp_path / "missing")], "no such directory"),
        (["split", str(tmp_path / "missing"), "--out", out], "no such directory"),
        (["split", str(one_class), "--out", out], "expected at least 2"),
        (["split", str(synthetic_dir), "--out", out, "--val", "0.9"], "expected less than 1"),
        (["split", str(synthetic_dir), "--out", out, "--test", "-0.2"], "expected a number in [0, 1)"),
        (["split", str(synthetic_dir), "--out", str(tmp_path)], "is a directory"),
        (["split", str(synthetic_dir), "--out", out, "--seed", "-1"], "expected a non-negative integer"),
        (["inspect", str(synthetic_dir), "--distance", "65"], "expected 0..64 bits"),
        (["split", str(synthetic_dir), "--out", str(blocker / "s.json")], "cannot write split file"),
    ]
    for args, expected in cases:
        outcome = runner.invoke(app, ["data", *args])
        assert outcome.exit_code == 2, (args, outcome.output)
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (args, lines)
        assert "Traceback" not in outcome.output
    assert not (tmp_path / "s.json").exists()


def test_missing_out_option_is_a_usage_error(synthetic_dir):
    outcome = runner.invoke(app, ["data", "split", str(synthetic_dir)])
    assert outcome.exit_code == 2 and "--out" in outcome.output and "Traceback" not in outcome.output
