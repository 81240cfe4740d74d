"""`allx demo`: the README's first command, end to end on generated data, and a failing stage named."""

import json

import pytest
from typer.testing import CliRunner

from allx.cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--epochs", "4"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    assert "SYNTHETIC, NOT MEDICAL" in result.output and "[8/8] report" in result.output
    for name in ("inspect.json", "split.json", "run/model.keras", "evaluate.json", "run/tflite/model_int8.tflite",
                 "run/tflite/model_float32.tflite", "classify.jsonl", "bench.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    check = json.loads((out / "convert.json").read_text())
    assert check["passed"] and check["input"]["scale"] == 1.0
    lines = [json.loads(line) for line in (out / "classify.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all("label" in line for line in lines)
    bench = json.loads((out / "bench.json").read_text())
    assert [r["precision"] for r in bench["results"]] == ["float32", "int8"]
    assert "http://" not in (out / "report.html").read_text()


def test_a_failing_stage_is_named_with_exit_1(tmp_path):
    data = tmp_path / "one-class" / "Benign"
    data.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(data / f"{i}.png")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--data", str(data.parent)])
    assert result.exit_code == 1
    assert "stage 'split data' failed" in result.output and "Traceback" not in result.output


def test_the_backbone_option_reaches_the_train_stage_and_a_typo_writes_nothing(tmp_path):
    from allx.demo import plan_stages

    train = next(stage for stage in plan_stages(tmp_path, tmp_path / "data", backbone="resnet50")
                 if stage.name == "train")
    command = train.commands[0]
    assert command[command.index("--backbone") + 1] == "resnet50"
    assert command[command.index("--weights") + 1] == "imagenet"  # ResNet50's from `allx weights import`, offline
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--backbone", "resnet5O"])
    assert result.exit_code == 2 and "did you mean 'resnet50'" in result.output
    assert not (tmp_path / "demo").exists()
