"""The out-of-distribution warning: the numpy score, its statistics file, allx-edge's marking, and calibration."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from typer.testing import CliRunner

from allx.errors import ModelError
from allx.convert.ood_stats import fit_mahalanobis, stats_bytes, threshold_for
from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.manifest_check import check_manifest
from allx.edge_runner.ood import mahalanobis_scores, make_scorer, nearest_class, read_stats

runner = CliRunner()
NOTE = "uncertain: unlike training images"


def clusters(rng, per_class=60, dims=6, classes=3):
    """Gaussian classes sharing one (anisotropic, correlated) covariance."""
    mixing = rng.normal(size=(dims, dims))
    centres = rng.normal(scale=4.0, size=(classes, dims))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), dims)) @ mixing, labels, mixing


def test_score_is_the_mahalanobis_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    data, labels, _ = clusters(rng)
    stats = fit_mahalanobis(data, labels, components=data.shape[1])  # all axes kept: the classic distance
    centres = np.stack([data[labels == c].mean(axis=0) for c in range(3)])
    residuals = data - centres[labels]
    inverse = np.linalg.inv(residuals.T @ residuals / (len(data) - 3))
    queries = rng.normal(scale=6.0, size=(20, data.shape[1]))
    expected = np.min([np.einsum("nd,de,ne->n", queries - c, inverse, queries - c) for c in centres], axis=0)
    np.testing.assert_allclose(mahalanobis_scores(queries, stats), expected, rtol=1e-3)


def test_fewer_axes_whiten_the_fit_data_and_still_flag_far_points():
    rng = np.random.default_rng(1)
    data, labels, mixing = clusters(rng, dims=12)
    stats = fit_mahalanobis(data, labels, components=5)
    assert stats.projection.shape == (12, 5) and stats.class_means.shape == (3, 5)
    projected = (data - stats.mean) @ stats.projection
    residuals = projected - stats.class_means[labels]
    np.testing.assert_allclose(residuals.T @ residuals / (len(data) - 3), np.eye(5), atol=1e-3)
    inside = mahalanobis_scores(data, stats)
    far = mahalanobis_scores(data[:10] + 25.0 * mixing[0], stats)
    assert np.median(far) > 10 * np.median(inside)


def test_components_are_capped_by_the_data():
    rng = np.random.default_rng(2)
    data, labels, _ = clusters(rng, per_class=4, dims=30)  # 12 images: at most 12 - 3 usable axes
    assert fit_mahalanobis(data, labels, components=128).projection.shape[1] == 9


@pytest.mark.parametrize("rate", [0.0, 0.04, 0.05, 0.2])
def test_threshold_flags_at_most_the_asked_fraction(rate):
    scores = np.random.default_rng(3).gamma(2.0, size=484)
    flagged = np.mean(scores > threshold_for(scores, rate))
    assert flagged <= rate and flagged > rate - 2 / len(scores)


def write_stats(path, stats):
    path.write_bytes(stats_bytes(stats))
    return path


def test_stats_file_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(4)
    data, labels, _ = clusters(rng, dims=8)
    stats = write_stats(tmp_path / "ood_stats.npz", fit_mahalanobis(data, labels, 4))
    loaded = read_stats(stats, 8)
    fitted = fit_mahalanobis(data, labels, 4)
    np.testing.assert_array_equal(mahalanobis_scores(data, loaded), mahalanobis_scores(data, fitted))
    with pytest.raises(ModelError, match="expected \\(9,\\)"):
        read_stats(stats, 9)
    with pytest.raises(ModelError, match="no such file"):
        read_stats(tmp_path / "absent.npz", 8)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="unreadable statistics file"):
        read_stats(tmp_path / "junk.npz", 8)
    np.savez(tmp_path / "partial.npz", mean=np.zeros(8))
    with pytest.raises(ModelError, match="without projection, class_means"):
        read_stats(tmp_path / "partial.npz", 8)


def test_class_scales_travel_in_the_stats_file_and_scale_the_nearest_class_distance(tmp_path):
    rng = np.random.default_rng(4)
    data, labels, _ = clusters(rng, dims=8)
    plain = fit_mahalanobis(data, labels, 4)
    scales = np.linspace(0.5, 2.0, len(plain.class_means)).astype(np.float32)
    scaled = replace(plain, class_scales=scales)
    loaded = read_stats(write_stats(tmp_path / "scaled.npz", scaled), 8)
    nearest, distances = nearest_class(data, plain)
    np.testing.assert_allclose(mahalanobis_scores(data, loaded), distances * scales[nearest], rtol=1e-5)
    assert read_stats(write_stats(tmp_path / "plain.npz", plain), 8).class_scales is None  # older files: scale 1
    for bad in (np.ones(len(scales) + 1, np.float32), -scales):
        with pytest.raises(ModelError, match="class_scales"):
            read_stats(write_stats(tmp_path / "bad.npz", replace(plain, class_scales=bad)), 8)


def test_scorer_threshold_override_and_bad_requests(tmp_path):
    section = {"method": "max_softmax", "threshold": 0.5}
    scorer, _ = make_scorer(check_manifest({"ood": section}, "model.json"), tmp_path)
    assert scorer(np.array([0.4, 0.3, 0.3]), None) == (True, pytest.approx(0.6))
    scorer, _ = make_scorer(check_manifest({"ood": section}, "model.json"), tmp_path, threshold=0.7)
    assert scorer(np.array([0.4, 0.3, 0.3]), None)[0] is False
    for bad in (-1.0, float("nan")):
        with pytest.raises(ModelError, match="expected a number >= 0"):
            make_scorer(check_manifest({"ood": section}, "model.json"), tmp_path, threshold=bad)
    with pytest.raises(ModelError, match="has an out-of-distribution calibration"):
        make_scorer(check_manifest({}, "model.json"), tmp_path, threshold=1.0)
    with pytest.raises(ModelError, match="names no embedding output"):
        make_scorer(check_manifest({"ood": {"method": "mahalanobis", "threshold": 1.0, "stats_file": "s.npz"}},
                                   "model.json"), tmp_path)


# --- allx-edge on a tiny two-output model (8-wide embedding) with fitted statistics ---

@pytest.fixture(scope="module")
def in_distribution():
    """Images like a pink smear background with darker 'cells': what the tiny model is calibrated on."""
    rng = np.random.default_rng(5)
    images = np.clip(rng.normal((230, 190, 210), 12, (60, 32, 32, 3)), 0, 255)
    for image in images:
        top, left = rng.integers(4, 20, 2)
        image[top:top + 8, left:left + 8] = rng.normal((110, 60, 150), 10, 3)
    return images.astype(np.uint8), np.repeat(np.arange(4), 15)


@pytest.fixture(scope="module")
def ood_folder(tmp_path_factory, in_distribution):
    """A folder like `allx convert --ood` writes: model, labels, model.json naming both outputs, ood_stats.npz."""
    tiny = tiny_models()
    folder = tmp_path_factory.mktemp("ood_model")
    shutil.copy(tiny.two_outputs, folder / "model.tflite")
    bare = EdgeModel.load(folder / "model.tflite", labels=list(LABELS))
    embedding = next(o["name"] for o in bare.interpreter.get_output_details() if o["name"] != bare.output["name"])
    manifest = {"format": "allx-tflite/1", "model_file": "model.tflite", "labels": list(LABELS),
                "outputs": {"probabilities": {"name": bare.output["name"]}, "embedding": {"name": embedding}}}
    (folder / "model.json").write_text(json.dumps(manifest))
    from allx.convert.ood import embeddings_of

    pixels, labels = in_distribution
    embeddings = embeddings_of(EdgeModel.load(folder), pixels)
    stats = fit_mahalanobis(embeddings[::2], labels[::2], components=6)
    threshold = threshold_for(mahalanobis_scores(embeddings[1::2], stats), 0.05)
    write_stats(folder / "ood_stats.npz", stats)
    manifest["ood"] = {"method": "mahalanobis", "threshold": threshold, "stats_file": "ood_stats.npz"}
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, in_distribution):
    """Two smear-like images (held-out draws) and two noise images."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("ood_images")
    pixels, _ = in_distribution
    Image.fromarray(pixels[1]).save(folder / "a_smear.png")
    Image.fromarray(pixels[3]).save(folder / "b_smear.png")
    rng = np.random.default_rng(6)
    for name in ("c_noise.png", "d_noise.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def classify(*args):
    result = runner.invoke(app, ["classify", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def test_edge_model_marks_noise_not_smears(ood_folder, in_distribution):
    model = EdgeModel.load(ood_folder)
    assert model.has_ood and model.ood_scorer.method == "mahalanobis"
    pixels, _ = in_distribution
    held_out = [model.classify(image) for image in pixels[1::2]]
    assert np.mean([p.ood for p in held_out]) <= 0.05
    noise = np.random.default_rng(7).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    flagged = [model.classify(image) for image in noise]
    assert all(p.ood for p in flagged)
    assert min(p.ood_score for p in flagged) > max(p.ood_score for p in held_out)


def test_classify_json_table_summary_and_override(ood_folder, image_dir):
    result = classify(image_dir, "-m", ood_folder, "--json")
    assert result.exit_code == 0
    records = {json.loads(line)["path"].split("/")[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert [records[name]["ood"] for name in sorted(records)] == [False, False, True, True]
    assert all(record["ood_score"] >= 0 for record in records.values())
    assert "2 flagged uncertain: unlike training images" in result.stderr
    table = classify(image_dir, "-m", ood_folder).stdout
    noise_rows = [line for line in table.splitlines() if "noise" in line]
    assert len(noise_rows) == 2 and all(NOTE in line for line in noise_rows)
    assert not any(NOTE in line for line in table.splitlines() if "smear" in line)
    high = max(record["ood_score"] for record in records.values()) + 1
    relaxed = classify(image_dir, "-m", ood_folder, "--ood-threshold", high)
    assert NOTE not in relaxed.stdout.split("images:")[0] and "0 flagged" in relaxed.stdout


def test_ood_threshold_errors_are_one_line(ood_folder, image_dir, tmp_path):
    result = classify(image_dir, "-m", ood_folder, "--ood-threshold", "-1")
    assert result.exit_code == 2 and "expected a number >= 0" in result.stderr
    result = classify(image_dir, "-m", tiny_models().int8, "--labels", tiny_models().labels_file, "--ood-threshold", 3)
    assert result.exit_code == 2 and "out-of-distribution calibration" in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(ood_folder, broken)
    (broken / "ood_stats.npz").unlink()
    result = classify(image_dir, "-m", broken)
    assert result.exit_code == 2 and "ood_stats.npz: no such file" in result.stderr


def test_camera_lines_and_summary_count_flagged_frames(ood_folder, tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "noise.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    rng = np.random.default_rng(8)
    for _ in range(4):
        writer.write(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    writer.release()
    result = runner.invoke(app, ["camera", "-m", str(ood_folder), "--source", str(path), "--headless"])
    assert result.exit_code == 0, result.output
    frames = [line for line in result.stdout.splitlines() if line.startswith("frame")]
    assert len(frames) == 4 and all(NOTE in line for line in frames)
    assert "4 flagged uncertain" in result.stdout
    quiet = runner.invoke(app, ["camera", "-m", str(ood_folder), "--source", str(path), "--headless",
                                "--ood-threshold", "1e12"])
    assert "0 flagged uncertain" in quiet.stdout and NOTE not in quiet.stdout.split("source ended")[0]


# --- conversion side: the two-output model and calibration through the converted int8 model ---

def allx_layout_model(size=32, classes=4):
    """The `allx train` layout in miniature: pixels -> scaling -> nested backbone -> nested "head" (Flatten first)."""
    import keras

    from allx.train.head import build_head

    keras.utils.set_random_seed(0)
    base_input = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(base_input)
    x = keras.layers.Conv2D(12, 3, activation="relu")(x)
    backbone = keras.Model(base_input, x, name="backbone")
    pixels = keras.Input((size, size, 3), name="pixels")
    feature_map = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(pixels))
    head = build_head(backbone.output_shape[1:], classes, "flatten")
    return keras.Model(pixels, head(feature_map))


@pytest.fixture(scope="module")
def converted(synthetic_dir, tmp_path_factory):
    """The tiny allx-layout model converted to int8 with and without the embedding output, and a split."""
    from allx.convert.modes import MODES
    from allx.convert.embedding import with_embedding
    from allx.convert.representative import calibration_batches, load_representative
    from allx.convert.tflite import convert_model, describe_tensors, saved_model_of
    from allx.train.split import Split

    root = tmp_path_factory.mktemp("ood_convert")
    paths = sorted(p.relative_to(synthetic_dir).as_posix() for p in synthetic_dir.rglob("*.jpg"))
    by_class = [[p for p in paths if p.startswith(c + "/")] for c in LABELS]
    split = Split(LABELS, tuple(p for ps in by_class for p in ps[:10]), tuple(p for ps in by_class for p in ps[10:]),
                  (), {})
    model = allx_layout_model()
    two = with_embedding(model)
    pixels = load_representative(synthetic_dir, split.train, (32, 32))
    tflite = {}
    for name, keras_model in (("single", model), ("two", two)):
        with saved_model_of(keras_model, (32, 32)) as saved:
            tflite[name] = convert_model(saved, MODES["int8"], "uint8", root / "log.txt", calibration_batches(pixels))
    input_spec, outputs = describe_tensors(tflite["two"])
    probabilities = next(o for o in outputs if o.shape[-1] == len(LABELS))
    embedding = next(o for o in outputs if o is not probabilities)
    return model, two, tflite, (input_spec, probabilities, embedding), split, root


def test_with_embedding_adds_the_pooled_feature_map(converted):
    import keras

    model, two, _, _, _, _ = converted
    pixels = np.random.default_rng(9).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    probabilities, embedding = (np.asarray(o) for o in two(pixels))
    np.testing.assert_allclose(probabilities, np.asarray(model(pixels)), atol=1e-6)
    feature_map = np.asarray(model.get_layer("backbone")(model.layers[1](pixels)))
    np.testing.assert_allclose(embedding, feature_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3)(inputs))))
    from allx.convert.embedding import with_embedding

    assert with_embedding(plain) is None  # no "head" on a feature map: the converter leaves the model alone


def test_embedding_output_leaves_int8_probabilities_unchanged(converted, synthetic_dir, tmp_path):
    from allx.convert.representative import load_representative

    _, _, tflite, _, split, _ = converted
    for name, data in tflite.items():
        (tmp_path / f"{name}.tflite").write_bytes(data)
    single = EdgeModel.load(tmp_path / "single.tflite", labels=list(LABELS))
    two = EdgeModel.load(tmp_path / "two.tflite", labels=list(LABELS))
    pixels = load_representative(synthetic_dir, split.val, (32, 32))
    np.testing.assert_array_equal(single.predict(pixels), two.predict(pixels))


def test_calibration_through_the_converted_model(converted, synthetic_dir):
    from allx.convert.ood import calibrate_tflite
    from allx.convert.ood_report import report_section

    _, _, tflite, tensors, split, root = converted
    calibration = calibrate_tflite(tflite["two"], tensors, LABELS, synthetic_dir, split, flag_rate=0.1)
    assert calibration.fit_images == calibration.held_out_images == 64  # every train+val image, scored out of group
    assert calibration.held_out_subset == "train+val out of group" and len(calibration.scores) == 64
    assert calibration.components <= 64 - 4 and calibration.stats.dimensions == 12
    assert calibration.held_out_flagged <= 0.1
    evidence = calibration.to_manifest("ood_stats.npz")["evidence"]
    assert evidence["on"] == "out-of-group" and evidence["grouping"] == "sequence" and evidence["folds"] == 5
    assert evidence["images"] == 64 and evidence["groups"] >= 8 and 0 <= evidence["interval"][0] <= 0.1
    assert set(calibration.generated_flagged) == {"noise", "flat", "photo", "other_medical"}
    thresholds = [value for _, value in calibration.tradeoff]
    assert thresholds == sorted(thresholds, reverse=True)  # flagging more images needs a lower threshold
    section = calibration.to_manifest("ood_stats.npz")
    assert section["method"] == "mahalanobis" and section["threshold"] == calibration.threshold
    assert "Out-of-distribution warning" in report_section(calibration)
    assert "Off: no head." in report_section(None, "off: no head")


def test_plan_model_on_when_the_structure_allows_it(converted):
    import keras

    from allx.convert.embedding import plan_model

    model = converted[0]
    two, note = plan_model(model, None)
    assert len(two.outputs) == 2 and note is None
    assert plan_model(model, False) == (model, "off (--no-ood)")
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs)))
    kept, note = plan_model(plain, None)
    assert kept is plain and note.startswith("off: the model has no nested 'head'")
    with pytest.raises(ModelError, match="got --ood, but the model has no nested 'head'"):
        plan_model(plain, True)


@pytest.mark.realdata
def test_real_smears_pass_and_another_lab_is_flagged(converted, real_data_dir, ood_data_dir):
    """Even the tiny (untrained) model's pooled features tell the other lab's lymphocytes from Taleqani smears:
    the mechanism on real pixels (the trained models' rates come from benchmarks/ood.py)."""
    from allx.images import load_image
    from allx.convert.ood import calibrate_tflite
    from allx.convert.ood_stats import stats_bytes
    from allx.train.split import Split

    _, _, tflite, tensors, _, root = converted
    rng = np.random.default_rng(0)
    by_class = [sorted(p.relative_to(real_data_dir).as_posix() for p in (real_data_dir / c).glob("*.jpg"))
                for c in LABELS]
    drawn = [rng.permutation(paths)[:80] for paths in by_class]
    split = Split(LABELS, tuple(p for ps in drawn for p in ps[:40]), tuple(p for ps in drawn for p in ps[40:60]),
                  tuple(p for ps in drawn for p in ps[60:]), {})
    calibration = calibrate_tflite(tflite["two"], tensors, LABELS, real_data_dir, split, flag_rate=0.05)
    folder = root / "real"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(tflite["two"])
    (folder / "ood_stats.npz").write_bytes(stats_bytes(calibration.stats))
    _, probabilities, embedding = tensors
    (folder / "model.json").write_text(json.dumps({
        "model_file": "model.tflite", "labels": list(LABELS),
        "outputs": {"probabilities": probabilities.to_dict(), "embedding": embedding.to_dict()},
        "ood": calibration.to_manifest("ood_stats.npz")}))
    model = EdgeModel.load(folder)
    test = [model.classify(load_image(real_data_dir / p, (32, 32))).ood for p in split.test]
    other_lab = sorted(ood_data_dir.rglob("*.jpg"))[::40]
    flagged = [model.classify(load_image(p, (32, 32))).ood for p in other_lab]
    assert np.mean(test) <= 0.15 and np.mean(flagged) >= 0.9


def test_benchmark_quick_run(tmp_path, capsys):
    """benchmarks/ood.py --quick: every method's rates, and the shipped path reproduces its Mahalanobis row."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("ood_benchmark", REPO / "benchmarks" / "ood.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    # 128 axes (the shipped default) are capped by the tiny model's embedding, in the comparison as in convert
    assert benchmark.main(["--quick", "--out", str(tmp_path), "--models-dir", str(tmp_path / "models"),
                           "--components", "4,128", "--name", "quick.json"]) == 0
    document = json.loads((tmp_path / "quick.json").read_text())
    (measured,) = document["models"]
    shipped = measured["shipped"]
    assert measured["split_kind"] == "image"  # the quick run's hand-made split says nothing of grouping
    targets = shipped["targets"]
    assert targets["test_met"] == (shipped["rates"]["test"] <= targets["test_at_most"] == 0.05)
    assert targets["other_lab_met"] == (shipped["rates"]["other_lab"] >= targets["other_lab_at_least"] == 0.9)
    assert "targets (shipped): test flagged <= 5%" in document["markdown"]
    k = shipped["ood"]["components"]
    assert set(measured["methods"]) == {"max_softmax", "energy", "mahalanobis_k4", f"mahalanobis_k{k}"}
    # The default gate's verdict is recorded (a tiny model on 76 fidelity images may go either way: one flip
    # already puts the agreement bound under 0.98); the shipped path calibrated and wrote its statistics.
    assert isinstance(shipped["check_passed"], bool)
    assert (tmp_path / "models" / "run" / "ood_stats_int8.npz").is_file()
    assert shipped["rates"] == measured["methods"][f"mahalanobis_k{k}"]["rates"]  # device marks = comparison
    assert set(shipped["rates"]) >= {"val", "test", "other_lab", "generated_noise", "generated_photo"}
    unchanged = measured["accuracy_shipped"]
    assert unchanged["max_abs_probability_difference"] == 0.0 and unchanged["top1_agreement"] == 1.0
    assert "shipped: mahalanobis via allx-edge" in capsys.readouterr().out
    assert "shipped: mahalanobis via allx-edge" in document["markdown"]


def test_allx_convert_says_whether_the_warning_is_on(synthetic_dir, tmp_path):
    """`allx convert` prints the warning's threshold when on, and why it is off (terminal, --json, report.md)."""
    from allx.cli.main import app as allx_app
    from tests.convert_models import make_run_folder

    run = make_run_folder(synthetic_dir, tmp_path / "run")
    tolerant = ["--representative-count", "20", "--max-drop", "10", "--max-class-drop", "40", "--min-agreement", "0.85"]
    on = runner.invoke(allx_app, ["convert", str(run.layout), "--out", str(tmp_path / "on"), *tolerant])
    assert on.exit_code == 0, on.output
    assert "out-of-distribution warning: mahalanobis" in on.stdout and "generated non-smear images flagged" in on.stdout
    lone = tmp_path / "lone"  # the .tflite copied alone keeps its labels and its warning (embedded statistics)
    lone.mkdir()
    copied = EdgeModel.load(shutil.copy(tmp_path / "on" / "model_int8.tflite", lone))
    assert copied.card.source == "embedded" and copied.has_ood and copied.labels == LABELS
    off = runner.invoke(allx_app, ["convert", str(run.model), "--out", str(tmp_path / "off"), "--json", *tolerant])
    assert off.exit_code == 0, off.output
    document = json.loads(off.stdout)
    assert document["ood"] is None and "no nested 'head'" in document["ood_note"]
    assert "Off: the model has no nested 'head'" in (tmp_path / "off" / "report.md").read_text()
    assert "ood" not in json.loads((tmp_path / "off" / "model.json").read_text())
