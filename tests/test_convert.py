"""`allx convert` end to end on tiny trained models: outputs, the gate, rejected models, bad input."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.cli.main import app
from allx.edge_runner.card_text import card_lines
from allx.train.model_card import LIMITS
from tests.convert_models import CLASSES, SIZE, make_run_folder

runner = CliRunner()
# With 24 check images one flipped image is 4.2 pp overall and 17 pp of a class: the tests that are not
# about the gate allow a couple of flips (the gate's arithmetic is tested in test_convert_check.py).
TOLERANT = ("--max-drop", "10", "--max-class-drop", "40", "--min-agreement", "0.85")


@pytest.fixture(scope="module")
def run_folder(synthetic_dir, tmp_path_factory):
    return make_run_folder(synthetic_dir, tmp_path_factory.mktemp("convert"))


@pytest.fixture(scope="module")
def int8_out(run_folder, tmp_path_factory):
    """One default conversion (int8, run folder found without flags), shared by the read-only tests."""
    out = tmp_path_factory.mktemp("int8_out")
    result = convert(run_folder.model, "--out", out, "--json", "--representative-count", "20", *TOLERANT)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def convert(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


def test_int8_writes_the_manifest_contract(int8_out):
    out, _ = int8_out
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["format"] == "allx-tflite/1"
    assert manifest["model_file"] == "model_int8.tflite" and (out / "model_int8.tflite").is_file()
    assert manifest["labels"] == list(CLASSES)
    assert (out / "labels.txt").read_text().split() == list(CLASSES)
    assert manifest["input"]["shape"] == [1, SIZE, SIZE, 3]
    # the uint8 input is the image bytes themselves
    assert (manifest["input"]["dtype"], manifest["input"]["scale"], manifest["input"]["zero_point"]) == ("uint8", 1.0, 0)
    assert manifest["outputs"]["probabilities"]["dtype"] == "uint8"
    assert manifest["representative_count"] == 20 and manifest["fully_quantized"] is True
    assert len(manifest["source_model_sha256"]) == 64 and manifest["data_fingerprint"]
    assert manifest["check"]["passed"] is True and manifest["thresholds"]["max_drop_pp"] == 10.0
    assert {"tensorflow", "allx"} <= set(manifest["versions"]) and manifest["created"]
    assert manifest["origin"]["split"] == "split.json beside the model"
    # The .tflite carries the same manifest (allx-edge reads it from a lone copy of the file).
    from allx.edge_runner.metadata import read_embedded

    assert read_embedded((out / "model_int8.tflite").read_bytes(), out).manifest == manifest


def test_int8_json_output_and_report(int8_out):
    out, document = int8_out
    assert document["passed"] is True
    assert document["float"]["accuracy"] >= 0.6  # the tiny model learned something: the check means something
    assert abs(document["quantized"]["accuracy"] - document["float"]["accuracy"]) <= 0.1
    assert document["agreement"] >= 0.85
    assert [row["label"] for row in document["per_class"]] == list(CLASSES)
    assert sum(row["support"] for row in document["per_class"]) == document["images"] == 24  # the val subset
    report = (out / "report.md").read_text()
    assert "int8 PASSED" in report and "| Pro | 6 |" in report and "malignant sensitivity" in report


def test_check_used_the_edge_runner_path(int8_out, run_folder):
    """The probabilities convert recorded are what allx-edge's EdgeModel gives for the same images."""
    from allx.images import load_image
    from allx.edge_runner.model import EdgeModel

    out, _ = int8_out
    model = EdgeModel.load(out)
    with open(out / "check_predictions_int8.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 24
    for row in rows[:6]:
        probabilities = model.predict(load_image(run_folder.data / row["path"], model.input_size))
        recorded = [float(row[f"p_{label}"]) for label in CLASSES]
        np.testing.assert_allclose(probabilities, recorded, atol=1e-6)
        assert CLASSES[int(np.argmax(probabilities))] == row["quantized_label"]


@pytest.mark.parametrize("precision", ["float32", "float16", "dynamic"])
def test_float_modes_pass_with_float_io(run_folder, tmp_path, precision):
    result = convert(run_folder.model, "--out", tmp_path, f"--{precision}", "--json", *TOLERANT)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["precision"] == precision and document["passed"]
    assert document["input"]["dtype"] == "float32"
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest["model_file"] == f"model_{precision}.tflite" and manifest["representative_count"] is None
    if precision == "float32":
        assert document["agreement"] == 1.0


def test_int8_io_int8(run_folder, tmp_path):
    result = convert(run_folder.model, "--out", tmp_path, "--io", "int8", "--representative-count", "12", "--json", *TOLERANT)
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["input"]["scale"], json.loads(result.stdout)["input"]["zero_point"]) == (1.0, -128)


def test_failed_check_is_rejected_and_keeps_the_passed_model(run_folder, int8_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(int8_out[0], out)
    before = {name: (out / name).read_bytes() for name in ("model_int8.tflite", "model.json", "report.md", "labels.txt")}
    result = convert(run_folder.fragile, "--out", out, "--representative-count", "20")
    assert result.exit_code == 3, result.output
    assert "failed the accuracy check" in result.stderr and "Traceback" not in result.output
    assert {name: (out / name).read_bytes() for name in before} == before
    rejected = json.loads((out / "model_int8.rejected.json").read_text())
    assert rejected["status"] == "rejected" and rejected["model_file"] == "model_int8.rejected.tflite"
    from allx.edge_runner.metadata import read_embedded

    assert read_embedded((out / "model_int8.rejected.tflite").read_bytes(), out).manifest["status"] == "rejected"
    report = (out / "model_int8.rejected.report.md").read_text()
    assert "REJECTED" in report and "limit --max-drop" in report


def test_debug_ranks_the_crushed_layer_first(run_folder, tmp_path):
    result = convert(run_folder.fragile, "--out", tmp_path, "--representative-count", "20", "--debug")
    assert result.exit_code == 3, result.output
    layers = list(csv.DictReader(open(tmp_path / "layer_errors_int8.csv")))
    # the pooled features share the 10,000 channel's scale in the concatenation: they round to zero
    assert "features" in layers[0]["tensor_name"] and float(layers[0]["noise_to_signal"]) > 0.5
    assert [float(row["noise_to_signal"]) for row in layers] == sorted((float(row["noise_to_signal"]) for row in layers),
                                                                      reverse=True)
    assert "Per-layer quantization error" in (tmp_path / "model_int8.rejected.report.md").read_text()


def test_float_layers_report_the_tradeoff(run_folder, tmp_path):
    first = convert(run_folder.fragile, "--out", tmp_path / "debug", "--representative-count", "20", "--debug")
    count = len(list(csv.DictReader(open(tmp_path / "debug" / "layer_errors_int8.csv")))) - 1  # all but one
    result = convert(run_folder.fragile, "--out", tmp_path, "--representative-count", "20", "--float-layers", count,
                     "--json", *TOLERANT)
    assert first.exit_code == 3 and result.exit_code == 0, result.output
    full, mixed = json.loads(result.stdout)["tradeoff"]
    assert mixed["accuracy"] > full["accuracy"] + 0.3 and not full["passed"] and mixed["passed"]
    assert mixed["size_bytes"] > full["size_bytes"]  # float weights cost space
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert len(manifest["float_layers"]) == count and manifest["fully_quantized"] is False
    assert manifest["input"]["dtype"] == "float32"
    assert "Selective quantization trade-off" in (tmp_path / "report.md").read_text()
    too_many = convert(run_folder.fragile, "--out", tmp_path, "--representative-count", "20", "--float-layers", count + 1)
    assert_one_line_error(too_many, f"expected at most {count}")


def test_edgetpu_readiness_without_compiler(run_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = convert(run_folder.model, "--out", tmp_path / "out", "--representative-count", "8", "--edgetpu", "--json",
                     *TOLERANT)
    assert result.exit_code == 0, result.output
    readiness = json.loads(result.stdout)["edgetpu"]
    assert readiness["ready"] is True and readiness["compiled"] is None
    assert "edgetpu_compiler is not on PATH" in readiness["note"] and "apt-get install edgetpu-compiler" in readiness["note"]
    assert readiness["op_counts"].get("CONV_2D") == 2


def fake_edgetpu_compiler(bin_dir: Path, body: str | None = None) -> None:
    """A stand-in for the external edgetpu_compiler (not installable here): called as
    `edgetpu_compiler --show_operations --out_dir OUT MODEL.tflite`, it writes OUT/MODEL_edgetpu.tflite and
    OUT/MODEL_edgetpu.log and prints its operation counts, as the real compiler does. By default the compiled
    file is a copy of its input (the real one swaps the int8 graph for an edgetpu-custom-op)."""
    import stat

    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    write = body or 'cp "$model" "$out/${name}_edgetpu.tflite"\n'
    script.write_text('#!/bin/sh\nout=$3; model=$4; name=$(basename "$model" .tflite)\n' + write +
                      'echo "Number of operations that will run on Edge TPU: 5" | tee "$out/${name}_edgetpu.log"\n'
                      'echo "Number of operations that will run on CPU: 0"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_compiled_edgetpu_model_carries_the_metadata_and_works_alone(run_folder, tmp_path, monkeypatch):
    from allx.edge_runner.cli import app as edge_app
    from allx.edge_runner.metadata import read_embedded

    fake_edgetpu_compiler(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    result = convert(run_folder.model, "--out", out, "--representative-count", "8", "--edgetpu", "--json", *TOLERANT)
    assert result.exit_code == 0, result.output
    compiled = json.loads(result.stdout)["edgetpu"]["compiled"]
    assert compiled["model_file"] == "model_int8_edgetpu.tflite" and compiled["metadata"] == "embedded"
    assert json.loads((out / "model.json").read_text())["edgetpu"]["compiled"]["metadata"] == "embedded"
    embedded = read_embedded((out / compiled["model_file"]).read_bytes(), out / compiled["model_file"])
    int8 = read_embedded((out / "model_int8.tflite").read_bytes(), out / "model_int8.tflite")
    assert embedded.manifest["model_file"] == "model_int8_edgetpu.tflite" and embedded.files == int8.files
    assert {**embedded.manifest, "model_file": "model_int8.tflite"} == int8.manifest
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / compiled["model_file"], alone)
    info = runner.invoke(edge_app, ["info", str(alone / compiled["model_file"]), "--json", "--delegate", "cpu"])
    assert info.exit_code == 0, info.output
    document = json.loads(info.stdout)
    assert document["metadata"] == "embedded" and document["labels"] == list(CLASSES)
    assert "carries the same embedded metadata" in (out / "report.md").read_text()


def test_a_compiled_file_that_cannot_take_metadata_is_kept_and_said(run_folder, tmp_path, monkeypatch):
    fake_edgetpu_compiler(tmp_path / "bin", 'printf "not a flatbuffer" > "$out/${name}_edgetpu.tflite"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    result = convert(run_folder.model, "--out", out, "--representative-count", "8", "--edgetpu", *TOLERANT)
    assert result.exit_code == 0, result.output
    assert (out / "model_int8_edgetpu.tflite").read_bytes() == b"not a flatbuffer"
    note = json.loads((out / "model.json").read_text())["edgetpu"]["compiled"]["metadata"]
    assert note.startswith("no metadata embedded in model_int8_edgetpu.tflite (kept as the compiler wrote it")
    assert "no metadata embedded in model_int8_edgetpu.tflite" in " ".join(result.stdout.split())


# ---- bad input: one line on stderr, exit 2, no traceback ----

def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_model(tmp_path):
    assert_one_line_error(convert(tmp_path / "nope.keras", "--out", tmp_path / "out"), "no such model file")


def test_corrupt_and_non_keras_model(run_folder, tmp_path):
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(run_folder.model.read_bytes()[:200])
    assert_one_line_error(convert(corrupt, "--out", tmp_path / "out"), "corrupt or not a .keras file")
    text = tmp_path / "model.h5"
    text.write_text("hello")
    assert_one_line_error(convert(text, "--out", tmp_path / "out"), "expected a .keras model file")


def test_data_classes_differ_from_labels(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder.model.parent, run)
    (run / "labels.txt").write_text("Benign\nEarly\nPro\nPre\n")
    assert_one_line_error(convert(run / "model.keras", "--out", tmp_path / "out"), "differ from the model's labels",
                          "different order")


def test_empty_representative_set(run_folder, tmp_path):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--representative-count", "0"),
                          "expected at least 1 image")
    split = json.loads((run_folder.model.parent / "split.json").read_text())
    split["val"], split["train"] = split["train"] + split["val"], []
    (tmp_path / "split.json").write_text(json.dumps(split))
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path / "out", "--split", tmp_path / "split.json"),
                          "train subset of the split is empty")


def test_too_many_representative_images(run_folder, tmp_path):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--representative-count", "41"),
                          "expected at most 40")


@pytest.mark.parametrize("option, value", [("--max-drop", "-1"), ("--max-class-drop", "101"),
                                           ("--min-agreement", "1.5"), ("--min-agreement", "nan")])
def test_thresholds_out_of_range(run_folder, tmp_path, option, value):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, option, value), option)


def test_out_dir_not_writable(run_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(convert(run_folder.model, "--out", blocker / "out"), "cannot write there")


def test_options_that_do_not_fit_the_mode(run_folder, tmp_path):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--float16", "--io", "uint8"), "--io uint8")
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--int8", "--dynamic"), "expected one precision")


def test_tensorflow_conversion_error_is_one_line(tmp_path, run_folder):
    import keras

    @keras.saving.register_keras_serializable(package="allx_tests")
    class Erf(keras.layers.Layer):
        """An op TFLite has no builtin for (needs TF Select)."""

        def call(self, inputs):
            return keras.ops.erf(inputs)

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(Erf()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    run = tmp_path / "run"
    shutil.copytree(run_folder.model.parent, run)
    model.save(run / "model.keras")
    result = convert(run / "model.keras", "--out", tmp_path / "out", "--float32")
    assert_one_line_error(result, "TFLite conversion to float32 failed", "Erf", "full log:")
    assert "Erf" in (tmp_path / "out" / "convert.log").read_text()


def test_unreadable_check_image_is_skipped_and_reported(run_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(run_folder.data, data)
    split = json.loads((run_folder.model.parent / "split.json").read_text())
    (data / split["val"][0]).write_bytes(b"truncated")
    result = convert(run_folder.model, "--out", tmp_path / "out", "--data", data, "--float32", "--json", *TOLERANT)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["images"] == 23 and len(document["skipped"]) == 1 and split["val"][0] in document["skipped"][0]
    assert "Skipped 1 unreadable image" in (tmp_path / "out" / "report.md").read_text()


def test_empty_check_subset(run_folder, tmp_path):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--float32", "--check-subset", "test"),
                          "the test subset of the split is empty")


def test_no_data_anywhere(run_folder, tmp_path):
    shutil.copy(run_folder.model, tmp_path / "model.keras")
    assert_one_line_error(convert(tmp_path / "model.keras", "--out", tmp_path / "out"), "expected --data DATA_DIR")


def test_int8_input_that_is_not_the_image_bytes_fails_loudly(run_folder, tmp_path):
    """RGB->BGR by slices + concatenation on the input (int8 CONCATENATION shares one scale with its
    inputs) gives the uint8 input the range of the mean-subtracted pixels (scale ~1.49 instead of 1):
    the image bytes would no longer be the input, so convert refuses."""
    import keras

    @keras.saving.register_keras_serializable(package="allx_tests")
    class SlicesToBgrMinusMean(keras.layers.Layer):
        def call(self, inputs):
            bgr = keras.ops.concatenate([inputs[..., 2:3], inputs[..., 1:2], inputs[..., 0:1]], axis=-1)
            return bgr * keras.ops.convert_to_tensor([1.0, 1.0, 1.0]) + keras.ops.convert_to_tensor(
                [-103.939, -116.779, -123.68])

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(SlicesToBgrMinusMean()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    run = tmp_path / "run"
    shutil.copytree(run_folder.model.parent, run)
    model.save(run / "model.keras")
    result = convert(run / "model.keras", "--out", tmp_path / "out", "--representative-count", "8")
    assert_one_line_error(result, "input quantization got dtype uint8", "expected uint8, scale 1, zero point 0")
    assert not list((tmp_path / "out").glob("*.tflite"))


def test_ood_warning_is_calibrated_for_the_train_layout(run_folder, tmp_path):
    """A model in the `allx train` layout gets the pooled-embedding output and a calibrated threshold
    (convert.ood); its int8 class probabilities are those of the model without the warning."""
    on = convert(run_folder.layout, "--out", tmp_path / "on", "--representative-count", "20", "--json", *TOLERANT)
    off = convert(run_folder.layout, "--out", tmp_path / "off", "--representative-count", "20", "--json", "--no-ood",
                  *TOLERANT)
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    manifest = json.loads((tmp_path / "on" / "model.json").read_text())
    assert manifest["ood"]["method"] == "mahalanobis" and (tmp_path / "on" / manifest["ood"]["stats_file"]).is_file()
    assert manifest["outputs"]["embedding"]["shape"] == [1, 16]
    assert "Out-of-distribution warning" in (tmp_path / "on" / "report.md").read_text()
    assert json.loads(on.stdout)["ood"]["threshold"] == manifest["ood"]["threshold"]
    # with an embedding, every shipped number is set on train+val images scored out of group
    assert manifest["ood"]["evidence"]["on"] == "out-of-group" and manifest["ood"]["held_out_images"] == 64
    rule, rates = manifest["sample_rule"], manifest["expected_rates"]
    assert rule["chosen_on"].startswith("train+val, cross-fitted over 5 group folds pseudo-samples")
    assert rule["evidence"]["on"] == "out-of-group" and rule["flagged_weight"] in (0.0, 0.5, 1.0)
    assert {row["flagged_weight"] for row in manifest["sample_rule_tradeoff"]} == {0.0, 0.5, 1.0}
    assert set(rates) == {"ood_rate", "quality_rate", "inconclusive_rate", "malignant_rate"}
    assert rates["ood_rate"]["n"] == 64 and rates["ood_rate"]["evidence"]["grouping"] == "sequence"
    assert manifest["quality"]["calibrated_on"] == "train+val" and manifest["quality"]["evidence"]["folds"] == 5
    assert manifest["check_evidence"]["accuracy"]["on"] == "shares groups with training"
    assert "## How each figure was measured" in (tmp_path / "on" / "report.md").read_text()
    assert manifest["limits"] == list(LIMITS) and "## Limits" in (tmp_path / "on" / "report.md").read_text()
    plain = json.loads((tmp_path / "off" / "model.json").read_text())
    assert "ood" not in plain and "embedding" not in plain["outputs"]
    # --no-ood: no embedding, so no out-of-group pass; what is then set on the check images says so
    assert "expected_rates" not in plain and plain["sample_rule"]["chosen_on"].startswith("val pseudo-samples")
    for name in ("operating_point", "sample_rule", "operating_point_check"):
        assert plain[name]["evidence"]["on"] == "shares groups with training", name
    card = {line.topic: line.words for line in card_lines(plain)}
    assert "measured on images that share groups with training" in card["Sample rule"]
    assert "measured on images that share groups with training" in card["Operating point"]
    probabilities = [np.loadtxt(tmp_path / name / "check_predictions_int8.csv", delimiter=",", skiprows=1,
                                usecols=(4, 5, 6, 7)) for name in ("on", "off")]
    np.testing.assert_array_equal(*probabilities)


def test_ood_options(run_folder, tmp_path):
    assert_one_line_error(convert(run_folder.model, "--out", tmp_path, "--ood"), "got --ood, but the model has no "
                          "nested 'head'")
    assert_one_line_error(convert(run_folder.layout, "--out", tmp_path, "--no-ood", "--ood-flag-rate", "0.1"),
                          "expected one of them")
    assert_one_line_error(convert(run_folder.layout, "--out", tmp_path, "--ood-flag-rate", "0.7"),
                          "expected a fraction between 0 and 0.5")


def test_two_precisions_in_one_folder_each_keep_their_own_manifest(run_folder, tmp_path):
    """float32 then int8 into one OUT_DIR (the demo does this): allx-edge reads each .tflite with its own
    manifest and OOD statistics, and the folder itself means the latest passed model."""
    from allx.edge_runner.model import EdgeModel

    out = tmp_path / "both"
    for precision in ("--float32", "--int8"):
        result = convert(run_folder.layout, "--out", out, precision, "--data", run_folder.data, *TOLERANT)
        assert result.exit_code == 0, result.output
    float_manifest = json.loads((out / "model_float32.json").read_text())
    int8_manifest = json.loads((out / "model_int8.json").read_text())
    assert float_manifest["model_file"] == "model_float32.tflite" and int8_manifest["model_file"] == "model_int8.tflite"
    assert json.loads((out / "model.json").read_text()) == int8_manifest
    assert float_manifest["ood"]["stats_file"] != int8_manifest["ood"]["stats_file"]
    float_model = EdgeModel.load(out / "model_float32.tflite")
    assert float_model.manifest.document == float_manifest and float_model.has_ood
    assert EdgeModel.load(out).manifest.document == int8_manifest


def test_operating_point_sample_rule_and_quality_limits_are_chosen_and_stored(int8_out):
    out, document = int8_out
    manifest = json.loads((out / "model.json").read_text())
    point, rule, quality = manifest["operating_point"], manifest["sample_rule"], manifest["quality"]
    assert point["chosen_on"] == "val" and point["target_sensitivity"] == 0.99 and point["sensitivity"] >= 0.99
    assert 0 <= point["threshold"] <= 1 and point["n_malignant"] + point["n_benign"] == 24
    assert rule["method"] == "mean_log_probability" and rule["samples"] == 4 and rule["fields_per_sample"] == 5
    assert rule["chosen_on"].startswith("val pseudo-samples") and rule["inconclusive"] is not None
    assert quality["images"] == 40 and quality["focus_min"] > 0 and quality["calibrated_on"] == "train"
    assert document["operating_point"] == point and document["sample_rule"] == rule
    assert "## Operating point" in (out / "report.md").read_text()


@pytest.mark.parametrize("value", ["1.5", "0", "nan"])
def test_target_sensitivity_out_of_range(run_folder, tmp_path, value):
    out = tmp_path / "out"
    assert_one_line_error(convert(run_folder.model, "--out", out, "--target-sensitivity", value),
                          "--target-sensitivity")
    assert not out.exists() or not any(out.iterdir())
