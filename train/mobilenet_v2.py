"""torchvision's MobileNetV2 in Keras, to run its ImageNet state dict (mobilenet_v2-b0353104.pth).

Differs from keras.applications.MobileNetV2 where it matters for exact weights: stride-2 3x3 convs pad
one pixel on every side then run "valid" (Keras "same" pads only bottom/right and shifts every
downsampling), BatchNorm eps 1e-5, and inputs normalised with the ImageNet mean/std of 0..1 pixels.
"""

from __future__ import annotations

from pathlib import Path

from allx.train.weight_mapping import load_torch_weights, mobilenet_rows

BN_EPSILON = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's inverted_residual_setting: (expansion, output channels, repeats, first stride).
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def block_specs():
    """(expansion, stride, input channels, output channels) of torchvision's features.1 .. features.17."""
    specs, channels = [], STEM_CHANNELS
    for expansion, out, repeats, stride in SETTINGS:
        for index in range(repeats):
            specs.append((expansion, stride if index == 0 else 1, channels, out))
            channels = out
    return specs


def build_torchvision_mobilenet_v2(input_shape, include_top: bool = False, classes: int = 1000,
                                   input_normalization=None):
    """The Keras network with random weights.

    Its input is (x/255 - mean)/std, or anything `input_normalization` = (mean, std) of a first
    PixelNormalization layer maps to that.
    """
    import keras

    from allx.train.layers import PixelNormalization, imagenet_top

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    if input_normalization is not None:
        x = PixelNormalization(*input_normalization, name="input_normalization")(x)
    x = conv_bn_relu(x, STEM_CHANNELS, 3, 2, "features_0")
    for index, spec in enumerate(block_specs(), start=1):
        x = inverted_residual(x, *spec, name=f"features_{index}")
    x = conv_bn_relu(x, HEAD_CHANNELS, 1, 1, "features_18")
    if include_top:
        x = imagenet_top(x, classes)
    return keras.Model(inputs, x, name="torchvision_mobilenet_v2")


def pad_for(x, kernel: int, stride: int, name: str):
    """torch padding=(k-1)//2: same as Keras "same" at stride 1, explicit even padding at stride 2."""
    from keras import layers

    if stride == 1 or kernel == 1:
        return x, "same"
    return layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x), "valid"


def conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    from keras import layers

    x, padding = pad_for(x, kernel, stride, name)
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x)


def inverted_residual(inputs, expansion: int, stride: int, channels_in: int, channels_out: int, name: str):
    from keras import layers

    x = inputs
    if expansion != 1:
        x = conv_bn_relu(x, channels_in * expansion, 1, 1, f"{name}_expand")
    x = conv_bn_relu(x, channels_in * expansion, 3, stride, f"{name}_dw", depthwise=True)
    x = layers.Conv2D(channels_out, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
    if stride == 1 and channels_in == channels_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def torch_mapping(include_top: bool):
    """(keras layer, torch prefix, kind) for every weighted layer of torchvision's module tree."""
    blocks = [torchvision_block(index, expansion) for index, (expansion, *_rest) in enumerate(block_specs(), start=1)]
    return mobilenet_rows(("features_0", "features.0.0", "features.0.1"), blocks,
                          ("features_18", "features.18.0", "features.18.1"), "classifier.1" if include_top else None)


def torchvision_block(index: int, expansion: int) -> tuple:
    """inverted_residual_rows' arguments for block `index`: torchvision numbers a block's modules in order,
    [expansion conv+BN], depthwise conv+BN, projection conv, projection BN."""
    conv, step = f"features.{index}.conv", 1 if expansion != 1 else 0
    return (f"features_{index}", (f"{conv}.0.0", f"{conv}.0.1") if expansion != 1 else None,
            (f"{conv}.{step}.0", f"{conv}.{step}.1"), (f"{conv}.{step + 1}", f"{conv}.{step + 2}"))


def make_torchvision_mobilenet_v2(weights_path: str | Path | None, input_shape, include_top: bool = False,
                                  classes: int = 1000, input_normalization=None):
    """Build the port and load a torchvision MobileNetV2 state dict (None: random weights)."""
    model = build_torchvision_mobilenet_v2(input_shape, include_top, classes, input_normalization)
    if weights_path is not None:
        load_torch_weights(model, weights_path, torch_mapping(include_top), "torchvision MobileNetV2")
    return model
