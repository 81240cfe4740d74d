"""Training: a reordered class list never reuses cached labels; a run folder is published whole or not at all."""

import json
import shutil

import pytest

from allx import layout

TINY = dict(backbone="efficientnet-lite0", image_size=48, epochs=3, batch_size=16, head="gap", learning_rate=1e-3)
RUN_FILES = ("model.keras", "labels.txt", "split.json", "history.json", "metrics.json", "train_config.json",
             "MODEL_CARD.md")


@pytest.fixture(scope="module")
def first_run(synthetic_dir, tmp_path_factory):
    from allx.train.trainer import TrainConfig, train_model

    root = tmp_path_factory.mktemp("faults-train")
    config = TrainConfig(data_dir=synthetic_dir, out_dir=root / "run", cache_dir=root / "cache", **TINY)
    return train_model(config), config


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in RUN_FILES}


def test_reversed_class_order_trains_a_model_whose_labels_are_right(first_run, synthetic_dir, tmp_path):
    from allx.train.evaluate import evaluate_model
    from allx.train.trainer import train_model

    result, config = first_run
    split = json.loads((result.run_dir / layout.SPLIT).read_text())
    split["classes"] = split["classes"][::-1]
    reversed_split = tmp_path / "reversed.json"
    reversed_split.write_text(json.dumps(split))
    again = train_model(type(config)(**{**config.__dict__, "out_dir": tmp_path / "reversed",
                                        "split_path": reversed_split}))
    assert (again.run_dir / layout.LABELS).read_text().split() == split["classes"]
    evaluated = evaluate_model(again.model_path, synthetic_dir, again.run_dir / layout.SPLIT, "test")
    assert evaluated["accuracy"] == pytest.approx(again.metrics["accuracy"], abs=1e-6), \
        "the recorded metrics must describe the model as it is (labels not taken from the other run's cache)"
    assert evaluated["accuracy"] > 0.5


def test_interrupted_retrain_keeps_the_finished_run_intact(first_run, tmp_path, monkeypatch):
    import allx.train.callbacks
    from allx.train.trainer import TrainingInterrupted, train_model

    result, config = first_run
    out = tmp_path / "run"
    shutil.copytree(result.run_dir, out)
    (out / "tflite").mkdir()  # a convert output kept inside the run folder
    before = snapshot(out)

    class InterruptAtEpoch2(allx.train.callbacks.EpochProgress):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(allx.train.callbacks, "EpochProgress", InterruptAtEpoch2)
    with pytest.raises(TrainingInterrupted, match="left as it was") as caught:
        train_model(type(config)(**{**config.__dict__, "out_dir": out, "learning_rate": 5e-3, "epochs": 5}))
    assert snapshot(out) == before, "Ctrl-C must not mix the interrupted run into the finished one"
    checkpoint = str(caught.value).rsplit(" ", 1)[-1]
    assert checkpoint.endswith("model.keras") and layout.staging_prefix("run") in checkpoint


def test_a_finished_retrain_replaces_the_run_as_a_whole(first_run, tmp_path):
    from allx.train.publish import make_staging_dir, publish_run

    result, _ = first_run
    out = tmp_path / "run"
    shutil.copytree(result.run_dir, out)
    (out / "notes.txt").write_text("mine")
    staging = make_staging_dir(out)
    (staging / "model.keras").write_text("new model")
    publish_run(staging, out)
    assert (out / "model.keras").read_text() == "new model"
    assert not (out / "metrics.json").exists(), "no file of the old run survives beside the new model"
    assert (out / "notes.txt").read_text() == "mine", "files a run does not write are kept"
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "no staging or replaced folder is left behind"


def test_an_out_folder_of_other_files_is_refused(synthetic_dir, tmp_path):
    from allx.errors import DataError
    from allx.train.trainer import TrainConfig, train_model

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="expected a new folder"):
        train_model(TrainConfig(data_dir=synthetic_dir, out_dir=tmp_path / "home", **TINY))
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"


def test_disk_full_during_training_is_exit_2_and_keeps_the_old_run(first_run, tmp_path, monkeypatch):
    """ENOSPC from the writer (the campaign filled a small tmpfs) ends as one line with exit 2."""
    import errno

    from typer.testing import CliRunner

    import allx.files
    from allx.cli.main import app

    result, config = first_run
    out = tmp_path / "run"
    shutil.copytree(result.run_dir, out)
    before = snapshot(out)

    replace_with = allx.files.replace_with

    def disk_full_at_metrics(temp, target):
        if target.name == layout.METRICS:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        replace_with(temp, target)

    monkeypatch.setattr(allx.files, "replace_with", disk_full_at_metrics)
    monkeypatch.setenv("ALLX_CACHE_DIR", str(tmp_path / "cache"))
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    outcome = CliRunner().invoke(app, ["train", str(config.data_dir), "--out", str(out), *options])
    assert outcome.exit_code == 2, outcome.output
    assert "No space left on device" in outcome.output and "Traceback" not in outcome.output
    assert snapshot(out) == before
