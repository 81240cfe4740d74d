"""`allx train` / `allx evaluate` end to end on small generated images (tiny input size, few epochs)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.cli.main import app
from allx.images import load_image

runner = CliRunner()
TINY = dict(backbone="efficientnet-lite0", image_size=48, epochs=4, batch_size=16, head="gap", learning_rate=1e-3,
            features="last", augment="dihedral")


@pytest.fixture(scope="module")
def trained_run(synthetic_dir, tmp_path_factory):
    from allx.train.trainer import TrainConfig, train_model

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(data_dir=synthetic_dir, out_dir=out, cache_dir=out / "cache", **TINY)
    return train_model(config), config


def test_run_folder_has_every_artifact(trained_run):
    result, _ = trained_run
    for name in ("model.keras", "labels.txt", "split.json", "history.json", "curves.png", "metrics.json",
                 "confusion_matrix.png", "MODEL_CARD.md", "train_config.json"):
        assert (result.run_dir / name).is_file(), name
    assert (result.run_dir / "labels.txt").read_text().split() == ["Benign", "Early", "Pre", "Pro"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert {"accuracy", "loss", "per_class", "confusion_matrix", "malignant_sensitivity",
            "benign_specificity", "n"} <= metrics.keys()
    card = (result.run_dir / "MODEL_CARD.md").read_text()
    assert "decision support only" in card
    assert "## Limits" in card and "overstates the accuracy at a new site" in card
    assert not list(result.run_dir.glob("*.tmp*")), "no temporary files are left behind"


def test_saved_model_takes_raw_pixels_and_learned_the_classes(trained_run, synthetic_dir):
    from allx.train.model_io import load_keras_model

    result, _ = trained_run
    model = load_keras_model(result.model_path)
    assert tuple(model.input_shape) == (None, 48, 48, 3)
    split = json.loads((result.run_dir / "split.json").read_text())
    test_paths = split["test"]
    pixels = np.stack([load_image(synthetic_dir / p, (48, 48)) for p in test_paths]).astype(np.float32)
    probabilities = model.predict(pixels, verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    truth = [split["classes"].index(p.split("/")[0]) for p in test_paths]
    accuracy = float(np.mean(probabilities.argmax(1) == truth))
    assert accuracy == pytest.approx(result.metrics["accuracy"], abs=1e-6), \
        "the head on cached features must compute what the full model computes on images"
    assert accuracy > 0.5  # 4 classes: chance is 0.25


def test_features_are_cached_between_runs(trained_run, tmp_path):
    from allx.train.trainer import train_model

    result, config = trained_run
    cached = sorted(p.name for p in config.cache_dir.glob("*.npy"))
    assert len(cached) == 3  # train, val, test
    stamps = {p: p.stat().st_mtime_ns for p in config.cache_dir.glob("*.npy")}
    again = train_model(type(config)(**{**config.__dict__, "out_dir": tmp_path / "again", "epochs": 1}))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a second run must reuse the features"
    assert again.model_path.is_file()


def test_evaluate_command_reports_json(trained_run, synthetic_dir):
    result, _ = trained_run
    outcome = runner.invoke(app, ["evaluate", str(result.model_path), str(synthetic_dir),
                                  "--split", str(result.run_dir / "split.json"), "--json"])
    assert outcome.exit_code == 0, outcome.output
    metrics = json.loads(outcome.stdout)
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)
    assert metrics["n"] == result.metrics["n"]


def test_evaluate_at_an_operating_point_chosen_on_val(trained_run, synthetic_dir):
    result, _ = trained_run
    args = ["evaluate", str(result.model_path), str(synthetic_dir), "--split", str(result.run_dir / "split.json")]
    outcome = runner.invoke(app, [*args, "--json", "--target-sensitivity", "0.99"])
    assert outcome.exit_code == 0, outcome.output
    point = json.loads(outcome.stdout)["at_operating_point"]
    assert point["chosen_on"] == "val" and point["subset"] == "test" and point["sensitivity"] >= 0.99
    assert 0 <= point["subset_sensitivity"] <= 1 and 0 <= point["subset_specificity"] <= 1
    text = runner.invoke(app, [*args, "--target-sensitivity", "0.99"])
    assert "at the operating point chosen on val" in text.stdout
    bad = runner.invoke(app, [*args, "--target-sensitivity", "1.5"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --target-sensitivity: got 1.5")


def test_ctrl_c_keeps_the_last_good_checkpoint(synthetic_dir, tmp_path, monkeypatch):
    import allx.train.callbacks
    from allx.train.model_io import load_keras_model
    from allx.train.trainer import TrainConfig, TrainingInterrupted, train_model

    class InterruptAtEpoch2(allx.train.callbacks.EpochProgress):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(allx.train.callbacks, "EpochProgress", InterruptAtEpoch2)
    config = TrainConfig(data_dir=synthetic_dir, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                         **{**TINY, "epochs": 5})
    with pytest.raises(TrainingInterrupted, match="last good checkpoint") as caught:
        train_model(config)
    checkpoint = str(caught.value).rsplit(" ", 1)[-1]
    assert load_keras_model(checkpoint).output_shape == (None, 4)
    assert not (tmp_path / "run").exists(), "an interrupted run is never published as --out"


@pytest.mark.parametrize("args, message", [
    (["/no/such/dir"], "data directory not found"),
    (["{data}", "--backbone", "resnet5O"], "resnet50"),
    (["{data}", "--weights", "/no/such/weights.h5"], "/no/such/weights.h5"),
    (["{data}", "--epochs", "0"], "--epochs"),
    (["{data}", "--head", "mlp"], "--head"),
    (["{data}", "--augment", "dihedral,swirl"], "--augment: got swirl"),
    (["{data}", "--augment-copies", "-1"], "--augment-copies"),
    (["{data}", "--strategy", "tpu"], "--strategy: got 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(synthetic_dir, tmp_path, args, message):
    args = [a.replace("{data}", str(synthetic_dir)) for a in args]
    outcome = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "run"), "--image-size", "48"])
    assert outcome.exit_code == 2, outcome.output
    assert "Traceback" not in outcome.output
    assert message in outcome.output
    assert len(outcome.stderr.strip().splitlines()) == 1


def test_a_split_naming_missing_files_is_refused(synthetic_dir, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"classes": ["Benign", "Early", "Pre", "Pro"], "train": ["Benign/nope.jpg"],
                                 "val": [], "test": []}))
    outcome = runner.invoke(app, ["train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--split", str(split)])
    assert outcome.exit_code == 2
    assert "nope.jpg" in outcome.output and "Traceback" not in outcome.output


def test_fine_tuning_unfreezes_the_top_layers_and_keeps_batchnorm_frozen(synthetic_dir, tmp_path, monkeypatch):
    import keras

    import allx.train.trainer
    from allx.train.model_io import load_keras_model
    from allx.train.trainer import TrainConfig, train_model

    seen = {}
    original = allx.train.trainer.fine_tune

    def spy(config, model, base, *args):
        history = original(config, model, base, *args)
        seen["trainable"] = [layer.name for layer in base.layers if layer.trainable]
        seen["top3"] = [layer.name for layer in base.layers[-3:]]
        seen["batchnorm"] = [layer.name for layer in base.layers
                             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
        seen["frozen_top"] = [layer.name for layer in base.layers[-3:] if not layer.trainable
                              and not isinstance(layer, keras.layers.BatchNormalization)]
        return history

    monkeypatch.setattr(allx.train.trainer, "fine_tune", spy)
    config = TrainConfig(data_dir=synthetic_dir, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                         **{**TINY, "epochs": 2}, fine_tune_layers=3, fine_tune_epochs=1)
    result = train_model(config)
    assert result.history["fine_tune"]["loss"], "the fine-tuning phase ran"
    assert seen["trainable"] and set(seen["trainable"]) <= set(seen["top3"]), "only the top 3 layers train"
    assert seen["batchnorm"] == [] and seen["frozen_top"] == []
    assert load_keras_model(result.model_path).output_shape == (None, 4)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_training_views_are_cached_per_augmentation(trained_run):
    result, config = trained_run
    assert config.augment == "dihedral"
    split = json.loads((result.run_dir / "split.json").read_text())
    markers = [json.loads(p.read_text()) for p in config.cache_dir.glob("*.json")]
    augmented = [m for m in markers if m.get("views_per_image")]
    assert len(augmented) == 1, "only the training subset is augmented"
    assert augmented[0]["views_per_image"] == 8 and len(augmented[0]["paths"]) == 8 * len(split["train"])
    settings = json.loads((result.run_dir / "train_config.json").read_text())
    assert settings["augment"] == "dihedral" and settings["distribution"]["replicas"] == 1


def test_evaluate_with_tta_averages_over_the_views(trained_run, synthetic_dir):
    from allx.dihedral import dihedral_views
    from allx.train.model_io import load_keras_model

    result, _ = trained_run
    outcome = runner.invoke(app, ["evaluate", str(result.model_path), str(synthetic_dir),
                                  "--split", str(result.run_dir / "split.json"), "--json", "--tta"])
    assert outcome.exit_code == 0, outcome.output
    metrics = json.loads(outcome.stdout)
    assert metrics["tta"] is True
    split = json.loads((result.run_dir / "split.json").read_text())
    model = load_keras_model(result.model_path)
    pixels = np.stack([load_image(synthetic_dir / p, (48, 48)) for p in split["test"]]).astype(np.float32)
    averaged = np.mean([model.predict(v, verbose=0) for v in dihedral_views(pixels)], axis=0)
    truth = [split["classes"].index(p.split("/")[0]) for p in split["test"]]
    assert metrics["accuracy"] == pytest.approx(float(np.mean(averaged.argmax(1) == truth)), abs=1e-6)


def test_a_backbone_recipe_fills_in_what_was_not_given(tmp_path):
    from allx.train.trainer import DEFAULT_AUGMENT, TrainConfig, with_backbone_recipe

    seed = with_backbone_recipe(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run"))
    assert (seed.backbone, seed.head, seed.features, seed.augment) == ("resnet50", "logreg", "multiscale", "")
    mobilenet = with_backbone_recipe(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", backbone="mobilenetv2"))
    assert (mobilenet.head, mobilenet.features, mobilenet.augment) == ("flatten", "last", DEFAULT_AUGMENT)
    lite0 = with_backbone_recipe(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", backbone="efficientnet-lite0"))
    assert (lite0.head, lite0.features, lite0.augment) == ("logreg", "multiscale", "")
    given = with_backbone_recipe(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", backbone="efficientnet-lite0",
                                             head="gap", features="last", augment="none"))
    assert (given.head, given.features, given.augment) == ("gap", "last", "none"), "what is given is kept"
