"""`allx convert --imx500` without the tool environment: the Keras 2 description, its rebuild layer by layer,
the folded preprocessing, the chip-size refusal, the options refused up front, and the gate on the tool's scores."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allx.cli.main import app
from allx.convert import imx500_env
from allx.convert.imx500 import Scored, check_fits, chip_fit, judge
from allx.convert.embedding import feature_map_of
from allx.convert.imx500_export import CHIP_BYTES, describe_model
from allx.convert.imx500_network import (INPUT, LAYER_ARGS, NORMALIZATION_LAYER, read_network, rebuild,
                                         write_network)
from allx.convert.modes import resolve_options
from allx.errors import ModelError, UsageError
from allx.train.backbones import BACKBONES, feature_base, get_backbone

SIDE = 32
runner = CliRunner()


def allx_model(backbone_name: str):
    """An `allx train`-layout model (preprocessing, backbone base, logreg head), every weight random."""
    import keras

    from allx.train.head import build_head

    backbone = get_backbone(backbone_name)
    pixels = keras.Input((SIDE, SIDE, 3), name="pixels")
    base = feature_base(backbone, "none", (SIDE, SIDE, 3), backbone.default_features)
    feature_map = base(backbone.make_preprocessing()(pixels), training=False)
    head = build_head(tuple(feature_map.shape[1:]), 4, "logreg")
    model = keras.Model(pixels, head(feature_map))
    randomize(model)
    return model


def randomize(model, seed: int = 0) -> None:
    """Random weights everywhere, scaled so that image differences reach the last layer (He-style kernels,
    BatchNorm near identity): a weight in the wrong place then shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        arrays = layer.get_weights()
        if not arrays or hasattr(layer, "layers"):
            continue
        if type(layer).__name__ == "BatchNormalization":  # gamma, beta, moving mean, moving variance
            shape = arrays[0].shape
            layer.set_weights([rng.uniform(0.8, 1.2, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape),
                               rng.uniform(0.8, 1.2, shape)])
            continue
        kernel, *rest = arrays
        fan_in = int(np.prod(kernel.shape[:-1])) if kernel.shape[-1] != 1 else int(np.prod(kernel.shape[:2]))
        layer.set_weights([rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape)] +
                          [rng.normal(0, 0.1, a.shape) for a in rest])


def inner_layers(model):
    """The model's computing layers, nested models opened, preprocessing and inputs left out."""
    return {layer.name: layer for layer in model._flatten_layers(include_self=False)
            if type(layer).__name__ in LAYER_ARGS}


FITTING = [name for name in BACKBONES if name != "resnet50"]


@pytest.fixture(scope="module", params=FITTING)
def described(request):
    model = allx_model(request.param)
    description, weights = describe_model(model)
    return model, description, weights


def test_every_fitting_backbone_is_described_and_rebuilt_layer_by_layer(described, tmp_path):
    import keras

    model, description, weights = described
    write_network(tmp_path, description, weights)  # the files the tool environment reads
    description, weights = read_network(tmp_path)
    rebuilt = rebuild(description, weights)
    originals = inner_layers(model)
    entries = description["layers"]
    assert {entry["name"] for entry in entries} == set(originals)
    for entry in entries:
        original, copy = originals[entry["name"]], rebuilt.get_layer(entry["name"])
        assert type(copy).__name__ == type(original).__name__ == entry["class"]
        config = copy.get_config()
        for key, value in entry["args"].items():
            assert config[key] == original.get_config()[key], (entry["name"], key)
        for got, expected in zip(copy.get_weights(), original.get_weights(), strict=True):
            np.testing.assert_array_equal(got, expected)
    first = rebuilt.get_layer(NORMALIZATION_LAYER)
    assert isinstance(first, keras.layers.DepthwiseConv2D) and first.input is rebuilt.input
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIDE, SIDE, 3)).astype(np.float32)
    expected = np.asarray(model(pixels))
    np.testing.assert_allclose(np.asarray(rebuilt(pixels)), expected, atol=1e-6)
    norm = description["input_normalization"]  # without the first layer: the network of a normalised image
    normalised = pixels * np.float32(norm["scale"]) + np.float32(norm["offset"])
    bare = rebuild(description, weights, normalization=False)
    np.testing.assert_allclose(np.asarray(bare(normalised)), expected, atol=1e-6)
    features = keras.Model(model.input, feature_map_of(model))(pixels)
    copied = keras.Model(rebuilt.input, rebuilt.get_layer("head_flatten").input)(pixels)
    assert np.asarray(features).std(axis=0).max() > 1e-2  # the images differ there: the comparison can fail
    np.testing.assert_allclose(np.asarray(copied), np.asarray(features), rtol=1e-4, atol=1e-4)


def test_two_preprocessing_layers_fold_into_one_affine_map():
    import keras

    from allx.train.layers import PixelNormalization

    pixels = keras.Input((8, 8, 3))
    x = PixelNormalization(mean=127.5, std=127.5)(pixels)
    x = PixelNormalization(mean=[-0.03, -0.09, -0.19], std=[0.46, 0.45, 0.45])(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(pixels, outputs)
    description, weights = describe_model(model)
    assert [entry["name"] for entry in description["layers"]] == ["conv", "flat", "dense"]
    assert description["layers"][0]["inputs"] == [INPUT]
    expected_scale = 1 / 127.5 / np.array([0.46, 0.45, 0.45])
    np.testing.assert_allclose(description["input_normalization"]["scale"], expected_scale, rtol=1e-6)
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rebuild(description, weights)(pixels)), np.asarray(model(pixels)), atol=1e-5)


def test_what_cannot_go_to_the_chip_is_named():
    import keras

    from allx.train.layers import PixelNormalization

    pixels = keras.Input((8, 8, 3))
    inside = PixelNormalization(mean=1.0, std=2.0)(keras.layers.Conv2D(3, 1, name="conv")(pixels))
    with pytest.raises(ModelError, match="inside the network, expected preprocessing only at the image input"):
        describe_model(keras.Model(pixels, keras.layers.Flatten()(inside)))
    odd = keras.layers.LayerNormalization(name="layer_norm")(pixels)
    with pytest.raises(ModelError, match="layer_norm: got LayerNormalization, expected one of"):
        describe_model(keras.Model(pixels, keras.layers.Flatten()(odd)))
    large = keras.Input((110, 110, 3))  # flattened: 36,300 values, beyond the converter's fully connected limit
    wide = keras.layers.Dense(2, name="wide_dense")(keras.layers.Flatten()(large))
    with pytest.raises(ModelError, match="wide_dense: got 36300 inputs, expected at most 32700.*--head gap"):
        describe_model(keras.Model(large, wide))
    bgr = PixelNormalization(mean=100.0, std=1.0, reverse_channels=True)(pixels)
    with pytest.raises(ModelError, match="channel reversal"):
        describe_model(keras.Model(pixels, keras.layers.Flatten()(bgr)))


def test_resnet50_is_refused_up_front_for_the_8_mb_chip():
    import keras

    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIDE, SIDE, 3))
    assert base.count_params() > CHIP_BYTES  # one byte per weight at int8, before any activation
    with pytest.raises(ModelError, match=r"expected at most 8 MB.*ResNet50 does not fit"):
        check_fits(base.count_params(), Path("model.keras"))
    check_fits(CHIP_BYTES, Path("model.keras"))  # Lite0 and MobileNetV2 (2.3-2.4 M weights) pass


@pytest.mark.parametrize("options, named", [
    ({"edgetpu": True}, "--edgetpu"), ({"io": "int8"}, "--io"), ({"debug": True}, "--debug"),
    ({"float_layers": 2}, "--float-layers"), ({"ood": True}, "--ood"), ({"accuracy_control": False},
                                                                         "--no-accuracy-control"),
])
def test_tflite_options_are_refused_with_imx500(options, named):
    with pytest.raises(UsageError, match=f"got {named} with --imx500"):
        resolve_options("imx500", **options)


def test_imx500_takes_the_int8_calibration_options():
    options = resolve_options("imx500", representative_count=50, check_subset="test")
    assert options.mode.needs_representative and not options.mode.tflite
    assert (options.representative_count, options.check_subset) == (50, "test")


def test_cli_refuses_a_second_precision_and_tflite_options_in_one_line(tmp_path):
    outcome = runner.invoke(app, ["convert", str(tmp_path / "model.keras"), "--out", str(tmp_path / "o"), "--imx500",
                                  "--edgetpu"])
    assert outcome.exit_code == 2
    assert "got --edgetpu with --imx500" in outcome.output and "Traceback" not in outcome.output
    outcome = runner.invoke(app, ["convert", str(tmp_path / "model.keras"), "--out", str(tmp_path / "o"), "--imx500",
                                  "--int8"])
    assert outcome.exit_code == 2 and "expected one precision" in outcome.output


def scored(truth, float_top, paths=None, classes=4):
    eye = np.eye(classes, dtype=np.float32) * 0.9 + 0.025
    paths = paths or tuple(f"c/{i}.jpg" for i in range(len(float_top)))
    return Scored(tuple(paths), np.asarray(truth), eye[np.asarray(float_top)], len(truth), ())


def test_the_paired_gate_judges_the_tools_scores():
    from allx.convert.modes import Thresholds

    labels = ("Benign", "Early", "Pre", "Pro")
    truth = np.repeat(np.arange(4), 30)
    fidelity = type("F", (), {"relpaths": (), "subsets": "train+val"})()
    options = resolve_options("imx500")
    source = type("S", (), {"labels": labels})()
    tool = {"seconds": {"score": 1.2}}
    same = scored(truth, truth)
    report, predictions = judge(same, same.float_probabilities.copy(), source, "val", fidelity, options, tool)
    assert report.passed and report.precision == "imx500" and report.agreement == 1.0
    broken = same.float_probabilities[:, ::-1].copy()  # every label moved: the quantized network is damaged
    report, _ = judge(same, broken, source, "val", fidelity, options, tool)
    assert not report.passed and report.quantized.accuracy == 0.0
    assert isinstance(options.thresholds, Thresholds) and report.failures


def test_chip_fit_reads_the_memory_report_wherever_it_sits():
    assert chip_fit({"Memory Usage": {"Fit In Chip": True}}) is True
    assert chip_fit({"Fit In Chip": False}) is False
    assert chip_fit(None) is None


def test_tool_environment_facts_without_installing(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLX_CACHE_DIR", str(tmp_path))
    assert imx500_env.env_path() == tmp_path / "tools" / "imx500"
    assert imx500_env.installed() is None  # nothing there: convert would install it first
    text = imx500_env.describe()
    assert "imx500-converter[tf]==3.19.2" in text and "proprietary Sony" in text and "Java 17" in text
    assert imx500_env.parse_java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert imx500_env.parse_java_major('java version "1.8.0_402"') == 8
    assert imx500_env.parse_java_major("no java here") is None


def test_java_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(imx500_env.shutil, "which", lambda name: None)
    with pytest.raises(imx500_env.MissingDependency, match="expected Java 17.*openjdk-17-jre-headless"):
        imx500_env.java_version()


def test_tools_install_names_what_it_knows(tmp_path):
    outcome = runner.invoke(app, ["tools", "install", "coral"])
    assert outcome.exit_code == 2 and "got tool 'coral', expected one of imx500" in outcome.output


def test_install_builds_the_venv_in_place_and_marks_it_whole_last(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(imx500_env, "java_version", lambda: 17)
    commands = []

    def fake_run(command, stdout=None, stderr=None, **_):
        commands.append(command)
        if command[1:3] == ["-m", "venv"]:
            (Path(command[3]) / "bin").mkdir(parents=True)
            Path(command[3], "bin", "python").write_text("")
        elif "pip" in command:
            if "/fail/" in command[0]:
                return type("Done", (), {"returncode": 1})()
            Path(command[0]).parent.joinpath("imxconv-tf").write_text("")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(imx500_env.subprocess, "run", fake_run)
    env = imx500_env.install(tmp_path / "install.log")
    assert env.path == tmp_path / "tools" / "imx500" and imx500_env.installed() == env
    assert commands[1][-2:] == list(imx500_env.REQUIREMENTS)
    failing = tmp_path / "fail"
    monkeypatch.setenv("ALLX_CACHE_DIR", str(failing))
    with pytest.raises(imx500_env.MissingDependency, match="pip install failed"):
        imx500_env.install(tmp_path / "install.log")
    assert imx500_env.installed() is None  # no marker: the next convert installs again


def test_a_network_that_does_not_fit_fails_clearly_and_keeps_its_memory_report(tmp_path):
    from allx.convert.imx500 import require_fit
    from allx.errors import ConversionError

    converted, out = tmp_path / "converted", tmp_path / "out"
    converted.mkdir()
    out.mkdir()
    report = {"Memory Report": {"Memory Usage": "9.10MB", "Total Memory Available On Chip": "8.00MB",
                                "Fit In Chip": False}}
    (converted / "net_MemoryReport.json").write_text(__import__("json").dumps(report))
    with pytest.raises(ConversionError, match=r"got 9.10MB of memory, expected at most 8.00MB"):
        require_fit(report, converted, out)
    assert (out / "net_MemoryReport.json").is_file()
    assert require_fit({"Memory Report": {"Fit In Chip": True}}, converted, out) is True


@pytest.mark.parametrize("damaged", [False, True])
def test_cli_prints_the_gate_and_fit_and_exits_3_when_rejected(damaged, tmp_path, monkeypatch):
    import allx.cli.convert as cli
    from allx.convert.pipeline import ConvertResult

    labels = ("Benign", "Early", "Pre", "Pro")
    truth = np.repeat(np.arange(4), 30)
    same = scored(truth, truth)
    quantized = same.float_probabilities[:, ::-1].copy() if damaged else same.float_probabilities.copy()
    fidelity = type("F", (), {"relpaths": (), "subsets": "train+val"})()
    report, _ = judge(same, quantized, type("S", (), {"labels": labels})(), "val", fidelity, resolve_options("imx500"),
                      {"seconds": {"score": 1.0}})
    files = {"model": tmp_path / ("packerOut.rejected.zip" if damaged else "packerOut.zip"),
             "report": tmp_path / "report.md"}
    manifest = {"imx500": {"fit_in_chip": True, "weights_int8_bytes": 2_389_412,
                           "tool_seconds": {"rebuild": 1.0, "quantize": 2.0, "score": 1.0, "convert": 3.0}},
                "operating_note": "no operating point chosen: test", "quality_note": "no image-quality limits: test"}
    monkeypatch.setattr(cli, "convert_imx500", lambda *args, **kwargs: ConvertResult(report, files, manifest))
    outcome = runner.invoke(app, ["convert", str(tmp_path / "model.keras"), "--out", str(tmp_path), "--imx500"])
    assert "Fit In Chip: True; int8 weights 2.39 MB; tool step 7 s" in outcome.output
    if damaged:
        assert outcome.exit_code == 3 and "REJECTED" in outcome.output and "packerOut.rejected.zip" in outcome.output
    else:
        assert outcome.exit_code == 0 and "PASSED" in outcome.output and "wrote packerOut.zip" in outcome.output
