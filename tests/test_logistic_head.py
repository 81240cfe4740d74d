"""The "logreg" head and "multiscale" features (EfficientNet-Lite0's recipe): the fit is scikit-learn's, the
saved Keras model computes it exactly, and the model converts and runs on the device path."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.cli.main import app
from allx.errors import UsageError

runner = CliRunner()


def separable(rng, n, width=6, shift=(0.0, 0.0, 0.0, 0.0)):
    """Generated features on very different scales, with a label that depends on some of them."""
    x = rng.normal(size=(n, 1, 1, width)) * [1, 10, 100, 0.1, 1, 1][:width] + [0, 5, 50, 0, 0, 0][:width]
    y = np.where(x[:, 0, 0, 4] > 0.8, 2, (x[:, 0, 0, 0] + x[:, 0, 0, 1] / 10 > 0.5).astype(int))  # never 3
    return x.astype(np.float32), y


def test_the_head_computes_the_scikit_learn_fit_with_c_chosen_on_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from allx.train.head import build_head
    from allx.train.logistic import C_GRID, fit_logistic_head

    rng = np.random.default_rng(0)
    x, y = separable(rng, 400)
    head = build_head((1, 1, 6), 4, "logreg")
    history = fit_logistic_head(head, (x, y, np.arange(300)), (x, y, np.arange(300, 400)), 4, refit=False)
    losses = history["C_tried"]
    assert list(losses) == [str(c) for c in C_GRID]
    assert history["C"] == [float(min(losses, key=losses.get))], "the C with the lowest validation log-loss"
    c = history["C"][0]
    scaler = StandardScaler().fit(x[:300, 0, 0])
    floor = np.ptp(x[:300]) / 255  # one int8 step of these features: the narrowest spread a feature is given
    assert (scaler.scale_ < floor).sum() == 4, "the floor applies to the narrow features, not the wide"
    scaler.scale_ = np.maximum(scaler.scale_, floor)
    reference = make_pipeline(scaler, LogisticRegression(C=c, max_iter=1000))
    reference.steps[-1][1].fit(scaler.transform(x[:300, 0, 0]), y[:300])
    expected = np.zeros((100, 4))
    expected[:, reference.classes_] = reference.predict_proba(x[300:, 0, 0])
    ours = np.asarray(head(x[300:]))
    assert np.abs(ours - expected).max() < 1e-4, "standardisation and Dense layer as fitted, nothing lost"
    reference_loss = log_loss(y[300:], expected / expected.sum(axis=1, keepdims=True), labels=range(4))
    assert history["val_loss"][0] == pytest.approx(reference_loss, abs=1e-4)
    assert ours[:, 3].max() < 1e-6, "class 3 had no training image: it is never answered"


def test_the_chosen_c_is_fitted_again_on_train_and_val():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from allx.train.head import build_head
    from allx.train.logistic import fit_logistic_head, fit_one, predict

    rng = np.random.default_rng(3)
    x, y = separable(rng, 400)
    y[:300] = np.where(y[:300] == 2, 1, y[:300])  # train has no class 2, val has: only the refit sees it
    selected = fit_logistic_head(build_head((1, 1, 6), 4, "logreg"), (x, y, np.arange(300)),
                                 (x, y, np.arange(300, 400)), 4, refit=False)
    head = build_head((1, 1, 6), 4, "logreg")
    history = fit_logistic_head(head, (x, y, np.arange(300)), (x, y, np.arange(300, 400)), 4)
    assert history["C"] == selected["C"] and history["val_loss"] == selected["val_loss"], \
        "C is chosen by the train-only fit, on val images it did not see"
    assert (history["fitted_on"], selected["fitted_on"]) == (["train+val"], ["train"])
    flat = x.reshape(400, -1)
    expected = predict(fit_one(flat, y, history["C"][0], None), flat, 4)
    ours = np.asarray(head(x))
    assert np.abs(ours - expected).max() < 1e-4, "the head holds the train + val fit"
    selected_head = build_head((1, 1, 6), 4, "logreg")
    fit_logistic_head(selected_head, (x, y, np.arange(300)), (x, y, np.arange(300, 400)), 4, refit=False)
    assert np.asarray(selected_head(x))[:, 2].max() < 1e-6 < 0.01 < ours[:, 2].max(), \
        "class 2, which only val has, is learnt by the refit"
    assert history["loss"][0] == pytest.approx(log_loss(y, expected, labels=range(4)), abs=1e-4)


def test_without_validation_the_default_c_is_used():
    from allx.train.head import build_head
    from allx.train.logistic import DEFAULT_C, fit_logistic_head

    x, y = separable(np.random.default_rng(1), 120)
    history = fit_logistic_head(build_head((1, 1, 6), 4, "logreg"), (x, y, None), None, 4)
    assert history["C"] == [DEFAULT_C] and "val_loss" not in history


def test_a_flattened_feature_map_too_wide_for_the_solver_is_refused():
    from allx.train.head import build_head
    from allx.train.logistic import MAX_WIDTH, fit_logistic_head

    x = np.zeros((4, 1, 1, MAX_WIDTH + 1), dtype=np.float32)
    with pytest.raises(UsageError, match="--features multiscale"):
        fit_logistic_head(build_head(x.shape[1:], 2, "logreg"), (x, np.array([0, 1, 0, 1]), None), None, 2)


def test_multiscale_is_offered_only_where_taps_are_registered():
    from allx.train.backbones import check_features, feature_base, get_backbone

    lite0 = get_backbone("efficientnet-lite0")
    base = feature_base(lite0, "none", (32, 32, 3), "multiscale")
    assert base.output_shape == (None, 1, 1, 24 + 40 + 80 + 112 + 192)
    assert base.get_layer("multiscale") is not None and "head_conv" not in [layer.name for layer in base.layers]
    with pytest.raises(UsageError, match="no registered taps"):
        check_features(get_backbone("mobilenetv2"), "multiscale")
    resnet = feature_base(get_backbone("resnet50"), "none", (64, 64, 3), "multiscale")
    assert resnet.output_shape == (None, 1, 1, 256 + 512 + 1024)  # the ends of residual stages 2-4
    assert "conv5_block1_out" not in [layer.name for layer in resnet.layers]  # stage 5 is not computed at all
    with pytest.raises(UsageError, match="expected one of last, multiscale"):
        check_features(lite0, "middle")


@pytest.fixture(scope="module")
def lite0_run(synthetic_dir, tmp_path_factory):
    """`allx train --backbone efficientnet-lite0` with nothing else said: the registered recipe."""
    out = tmp_path_factory.mktemp("lite0") / "run"
    cache = out.parent / "cache"
    result = runner.invoke(app, ["train", str(synthetic_dir), "--out", str(out), "--backbone", "efficientnet-lite0",
                                 "--image-size", "32", "--group-by", "sequence", "--block-size", "1",
                                 "--no-neighbours"], env={"ALLX_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.output
    return out


def test_lite0_trains_its_recipe_and_the_saved_model_computes_the_fit(lite0_run, synthetic_dir):
    from allx.images import load_image
    from allx.train.metrics import classification_metrics
    from allx.train.model_io import load_keras_model

    settings = json.loads((lite0_run / "train_config.json").read_text())
    assert (settings["head"], settings["features"], settings["augment"]) == ("logreg", "multiscale", "")
    history = json.loads((lite0_run / "history.json").read_text())
    assert history["C"] and history["val_loss"], "C chosen on the validation subset"
    card = (lite0_run / "MODEL_CARD.md").read_text()
    assert "logistic regression" in card and "block14_add" in card
    model = load_keras_model(lite0_run / "model.keras")
    split = json.loads((lite0_run / "split.json").read_text())
    pixels = np.stack([load_image(synthetic_dir / p, (32, 32)) for p in split["test"]]).astype(np.float32)
    truth = np.array([split["classes"].index(p.split("/")[0]) for p in split["test"]])
    recomputed = classification_metrics(model.predict(pixels, verbose=0), truth, split["classes"])
    metrics = json.loads((lite0_run / "metrics.json").read_text())
    assert recomputed["loss"] == pytest.approx(metrics["loss"], abs=1e-4), "the saved model is the fitted head"
    assert recomputed["confusion_matrix"] == metrics["confusion_matrix"]


def test_lite0_run_records_its_cross_fitted_operating_point_for_this_model(lite0_run):
    from allx.decision import OperatingPoint
    from allx.files import sha256_file

    record = json.loads((lite0_run / "operating_point.json").read_text())
    assert record["kind"] == "operating-point" and record["model_sha256"] == sha256_file(lite0_run / "model.keras")
    point = OperatingPoint.from_dict(record["operating_point"])
    assert "cross-fitted" in point.chosen_on and "blocks of 1 file numbers" in point.chosen_on
    assert point.target_sensitivity == 0.99 and point.n_malignant + point.n_benign > 0
    split = json.loads((lite0_run / "split.json").read_text())
    assert point.n_malignant + point.n_benign == len(split["train"]) + len(split["val"]), "train+val, each once"


def test_lite0_recipe_converts_with_its_ood_embedding_and_runs_on_the_device_path(lite0_run, synthetic_dir,
                                                                                 tmp_path):
    out = tmp_path / "int8"
    result = runner.invoke(app, ["convert", str(lite0_run / "model.keras"), "--data", str(synthetic_dir), "--out",
                                 str(out), "--json", "--representative-count", "16", "--no-accuracy-control"])
    assert result.exit_code in (0, 3), result.output  # 3: the tiny model's int8 check may reject it, said so
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["ood"] and manifest["ood"]["method"], "the pooled multiscale vector is the OOD embedding"
    trained = json.loads((lite0_run / "operating_point.json").read_text())["operating_point"]
    shipped = {key: value for key, value in manifest["operating_point"].items() if key != "evidence"}
    assert shipped == trained, "the point training chose for this model is the one shipped"
    assert manifest["operating_point"]["evidence"]["on"] == "out-of-group"  # training cross-fitted it over groups
    assert "operating_point.json" in manifest["origin"]["operating_point"]
    assert set(manifest["operating_point_check"]) == {"subset", "sensitivity", "specificity", "evidence"}
    from allx.edge_runner.model import EdgeModel

    model = EdgeModel.load(out)
    image = np.asarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3)), dtype=np.uint8)
    prediction = model.classify(image)
    assert len(prediction.probabilities) == 4 and abs(sum(prediction.probabilities) - 1) < 0.05
    assert prediction.ood_score is not None, "the device computes the OOD score from the embedded statistics"


def test_an_operating_point_of_another_model_is_not_shipped(lite0_run, synthetic_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lite0_run, run)
    record = json.loads((run / "operating_point.json").read_text())
    (run / "operating_point.json").write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    out = tmp_path / "int8"
    result = runner.invoke(app, ["convert", str(run / "model.keras"), "--data", str(synthetic_dir), "--out", str(out),
                                 "--representative-count", "8", "--no-accuracy-control", "--no-ood"])
    assert result.exit_code in (0, 3), result.output
    manifest = json.loads((out / "model.json").read_text())
    assert "belongs to another model.keras" in manifest["origin"]["operating_point"]
    assert "cross-fitted" not in manifest["operating_point"]["chosen_on"], "chosen on the check subset instead"


def test_evaluate_reports_at_the_models_own_point_when_it_is_for_that_target(lite0_run, synthetic_dir):
    record = json.loads((lite0_run / "operating_point.json").read_text())["operating_point"]
    arguments = ["evaluate", str(lite0_run / "model.keras"), str(synthetic_dir), "--split",
                 str(lite0_run / "split.json"), "--json", "--target-sensitivity"]
    own = runner.invoke(app, [*arguments, "0.99"])
    assert own.exit_code == 0, own.output
    point = json.loads(own.stdout)["at_operating_point"]
    assert point["threshold"] == record["threshold"] and "cross-fitted" in point["chosen_on"]
    other = runner.invoke(app, [*arguments, "0.95"])
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["at_operating_point"]["chosen_on"] == "val", "another target: chosen on val"


@pytest.mark.parametrize("options, words", [
    (["--backbone", "mobilenetv2", "--features", "multiscale"], "no registered taps"),
    (["--backbone", "efficientnet-lite0", "--features", "deep"], "expected one of last, multiscale"),
    (["--backbone", "efficientnet-lite0", "--head", "svm"], "expected one of flatten, gap, logreg"),
])
def test_bad_recipe_options_are_one_line_exit_2_and_write_nothing(synthetic_dir, tmp_path, options, words):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(synthetic_dir), "--out", str(out), *options])
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def features_of_every_spread(pixels):
    """A fixed stand-in backbone: ReLU features of the pixels' channel means, like a ResNet's pooled taps on
    one 0..5 range, two that carry the label and six nearly dead ones (spread ~3e-6) beside them."""
    import keras

    weights = np.zeros((1, 1, 3, 8), np.float32)
    weights[0, 0, :, 0], weights[0, 0, :, 1] = (0.02, -0.02, 0.0), (0.0, 0.02, -0.02)
    weights[0, 0, :, 2:] = 1e-7
    bias = np.array([2.5, 2.5, 0, 0, 0, 0, 0, 0], np.float32)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(pixels)
    constant = keras.initializers.Constant
    return keras.layers.Conv2D(8, 1, activation="relu", kernel_initializer=constant(weights),
                               bias_initializer=constant(bias), trainable=False)(x)


def test_the_int8_head_keeps_what_was_fitted_when_feature_spreads_differ_10000_fold(tmp_path):
    """Folding the standardisation into the Dense kernel gave near-dead features weights 10,000x the others,
    and int8's per-class kernel scale rounded the informative weights to zero (ResNet50 int8: accuracy 0.18);
    without the spread's floor, the standardisation's requantisation was beyond XNNPACK's and the
    interpreter refused the model."""
    import keras

    from allx.convert.modes import get_mode
    from allx.convert.tflite import convert_model, saved_model_of
    from allx.edge_runner.model import EdgeModel
    from allx.train.head import build_head
    from allx.train.logistic import fit_logistic_head

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (400, 4, 4, 3)).astype(np.float32)
    means = pixels.mean(axis=(1, 2))
    labels = (means[:, 0] - means[:, 1] > 0).astype(int) + 2 * (means[:, 1] - means[:, 2] > 0)
    inputs = keras.Input((4, 4, 3))
    features = keras.Model(inputs, features_of_every_spread(inputs))
    x = features.predict(pixels, verbose=0)
    assert x[..., 2:].std(axis=0).max() < 1e-4 < x[..., :2].std(axis=0).min()
    head = build_head(x.shape[1:], 4, "logreg")
    fit_logistic_head(head, (x, labels, np.arange(300)), None, 4)
    model = keras.Model(inputs, head(features(inputs)))
    float_answers = model.predict(pixels[300:], verbose=0).argmax(axis=1)
    assert (float_answers == labels[300:]).mean() > 0.85, "the fit itself works"

    def representative():
        for one in pixels[:100]:
            yield [one[np.newaxis]]

    with saved_model_of(model, (4, 4)) as saved:
        content = convert_model(saved, get_mode("int8"), "uint8", tmp_path / "convert.log", representative)
    device = EdgeModel.from_bytes(content, labels=("a", "b", "c", "d"))
    int8_answers = device.predict(pixels[300:].astype(np.uint8)).argmax(axis=1)
    assert (int8_answers == float_answers).mean() >= 0.95, "int8 agrees with the float head"
