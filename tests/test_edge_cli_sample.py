"""`allx-edge classify --sample / --samples-from-folders`: per-field lines, one verdict per sample, bad layouts."""

import csv
import json
import shutil

import numpy as np
import pytest
from edge_models import LABELS, SIZE, tiny_models
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from allx.decision import OperatingPoint
from allx.edge_runner.cli import app
from allx.edge_runner.sample import SampleRule

runner = CliRunner()


def write_model_folder(folder, quality: bool = True):
    shutil.copy(tiny_models().float32, folder / "model_float32.tflite")
    manifest = {"format": "allx-tflite/1", "model_file": "model_float32.tflite", "labels": list(LABELS),
                "operating_point": OperatingPoint(0.4, 0.99, chosen_on="val").to_dict(),
                "sample_rule": SampleRule(threshold=0.4, min_fields=2, min_agreement=0.0).to_dict()}
    if quality:
        manifest["quality"] = {"focus_min": 50.0, "shadows_max": 0.2, "highlights_max": 0.2,
                               "colour_mean": [130.0, 130.0, 130.0], "colour_std": [20.0, 20.0, 20.0],
                               "colour_max": 5.0}
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("model"))


def textured(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(60, 200, (SIZE, SIZE, 3), dtype=np.uint8))


def sample_folder(folder, good: int = 3, blurred: int = 1, broken: int = 0, seed: int = 0):
    folder.mkdir(parents=True)
    for i in range(good):
        textured(seed + i).save(folder / f"good{i}.png")
    for i in range(blurred):
        textured(seed + 50 + i).filter(ImageFilter.GaussianBlur(3)).save(folder / f"blur{i}.png")
    for i in range(broken):
        (folder / f"broken{i}.jpg").write_bytes(b"")
    return folder


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_one_sample_gives_field_lines_and_one_verdict(model_dir, tmp_path):
    fields = sample_folder(tmp_path / "s", broken=1)
    result = invoke("classify", fields, "--model", model_dir, "--sample", "P-1")
    assert result.exit_code == 1, result.output  # one field could not be read: documented exit 1
    lines = result.stdout.splitlines()
    assert any("blur0.png" in line and "set aside: blurred: focus" in line for line in lines)
    assert sum(("B-ALL suspected (" in line or "no B-ALL seen" in line) for line in lines) >= 3
    verdict = next(line for line in lines if line.startswith("sample P-1: "))
    assert "3 field(s) used, 2 set aside: blur0.png (blurred: focus" in verdict and "broken0.jpg (" in verdict
    assert "1 rejected by the quality check" in result.stdout and "1 failed" in result.stdout


def test_samples_from_folders_json_and_csv(model_dir, tmp_path):
    sample_folder(tmp_path / "slides" / "A")
    sample_folder(tmp_path / "slides" / "B", good=1, blurred=2, seed=7)
    out_csv = tmp_path / "out.csv"
    result = invoke("classify", tmp_path / "slides", "--model", model_dir, "--samples-from-folders", "--json",
                    "--csv", out_csv)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [r for r in records if r["kind"] == "sample"]
    assert [s["sample_id"] for s in samples] == ["A", "B"] and len(records) == 9
    assert samples[0]["verdict"] in ("malignant", "benign") and len(samples[0]["fields_used"]) == 3
    assert samples[1]["verdict"] == "inconclusive" and samples[1]["reason"].startswith("too many fields set aside")
    assert all(len(r["sha256"]) == 64 for r in records if r["kind"] == "prediction")
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["kind"] for r in rows].count("sample") == 2 and rows[-1]["decision"] == "inconclusive"


@pytest.mark.parametrize("layout, fragment", [
    ("loose", "expected one sub-folder of images per sample"),
    ("file", "not a folder"),
    ("empty", "got no sub-folders"),
])
def test_unknown_sample_folder_layout_is_one_line(model_dir, tmp_path, layout, fragment):
    parent = tmp_path / "p"
    parent.mkdir()
    if layout == "loose":
        sample_folder(parent / "A")
        textured(1).save(parent / "stray.png")
    target = parent / "x.png" if layout == "file" else parent
    if layout == "file":
        textured(1).save(target)
    result = invoke("classify", target, "--model", model_dir, "--samples-from-folders")
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: running without:")]
    assert result.exit_code == 2 and len(errors) == 1 and fragment in errors[0]  # one error after the features line


def test_sample_and_folders_together_is_usage_error(model_dir, tmp_path):
    result = invoke("classify", tmp_path, "--model", model_dir, "--samples-from-folders", "--sample", "X")
    assert result.exit_code == 2 and "expected one of them" in result.stderr


def test_a_model_without_quality_statistics_says_which_features_are_off(tmp_path):
    model = write_model_folder(tmp_path / "m" if (tmp_path / "m").mkdir() is None else None, quality=False)
    fields = sample_folder(tmp_path / "s", blurred=0)
    result = invoke("classify", fields, "--model", model, "--sample", "S")
    assert result.exit_code == 0, result.output
    assert "image-quality check off: model.json has no quality statistics (focus, exposure, colour)" in result.stderr


def test_plain_classify_prints_the_answer_at_the_operating_point(model_dir, tmp_path):
    fields = sample_folder(tmp_path / "s", blurred=0)
    result = invoke("classify", fields, "--model", model_dir)
    assert result.exit_code == 0
    assert sum(("B-ALL suspected (" in line or "no B-ALL seen" in line) for line in result.stdout.splitlines()) == 3


def test_plain_classify_json_carries_the_decision_codes(model_dir, tmp_path):
    fields = sample_folder(tmp_path / "s", blurred=0)
    result = invoke("classify", fields, "--model", model_dir, "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["decision"] in ("malignant", "benign") and 0 <= r["malignant_score"] <= 1 for r in records)
    assert all((r["subtype"] is None) == (r["decision"] == "benign") for r in records)
