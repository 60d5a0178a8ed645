"""Stems, residual blocks and shortcuts as tensor -> tensor functions (paper section 3).

Layer names follow keras.applications (`conv3_block2_1_conv`, `conv3_block1_0_bn`, ...)
so weights port by name. Stride-2 convolutions pad symmetrically and then convolve
`valid`, as the paper's Caffe models and keras.applications do; TensorFlow's `same` would
pad only bottom/right at stride 2 and shift every feature map by a pixel.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """What every block of one network shares: shortcut option, stride placement, BN."""

    residual: bool = True
    shortcut: str = "B"
    stride_in: str = "1x1"
    zero_init_residual: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1.001e-5
    kernel_initializer: object = "he_normal"
    kernel_regularizer: object = None


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(layers.Layer):
    """Option A shortcut: identity, subsampled by `stride`, extra channels zero (section 3.3)."""

    def __init__(self, filters, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride

    def call(self, x):
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def subsample(size):
            return None if size is None else -(-size // self.stride)

        return (batch, subsample(height), subsample(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


def conv_bn(x, filters, kernel_size, stride, name, settings, relu=True, zero_gamma=False):
    """Conv (no bias) -> BN -> optional ReLU; BN right after each conv (section 3.4)."""
    padding = "same"
    if stride > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=settings.kernel_initializer,
        kernel_regularizer=settings.kernel_regularizer,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(
        momentum=settings.bn_momentum,
        epsilon=settings.bn_epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn",
    )(x)
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def imagenet_stem(x, settings):
    """conv1 (7x7, 64, stride 2, pad 3) and the 3x3 stride-2 max pool of Table 1."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(
        64,
        7,
        strides=2,
        use_bias=False,
        kernel_initializer=settings.kernel_initializer,
        kernel_regularizer=settings.kernel_regularizer,
        name="conv1_conv",
    )(x)
    x = layers.BatchNormalization(momentum=settings.bn_momentum, epsilon=settings.bn_epsilon, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def cifar_stem(x, settings):
    """The first layer of section 4.2: one 3x3 conv with 16 filters, no pooling."""
    return conv_bn(x, 16, 3, 1, "conv1", settings)


def shortcut(x, filters, stride, name, settings):
    """The shortcut of section 3.3 for the chosen option, or None for a plain net."""
    if not settings.residual:
        return None
    changes_shape = stride > 1 or x.shape[-1] != filters
    if settings.shortcut == "C" or (settings.shortcut == "B" and changes_shape):
        return conv_bn(x, filters, 1, stride, f"{name}_0", settings, relu=False)
    if changes_shape:
        return ZeroPadShortcut(filters, stride, name=f"{name}_0_pad")(x)
    return x


def merge(x, skip, name):
    """Add the shortcut (if any) and apply the block's output ReLU."""
    if skip is not None:
        x = layers.Add(name=f"{name}_add")([skip, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def basic_block(x, width, stride, name, settings):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets); the first one strides."""
    skip = shortcut(x, width, stride, name, settings)
    zero_gamma = settings.zero_init_residual and settings.residual
    x = conv_bn(x, width, 3, stride, f"{name}_1", settings)
    x = conv_bn(x, width, 3, 1, f"{name}_2", settings, relu=False, zero_gamma=zero_gamma)
    return merge(x, skip, name)


def bottleneck_block(x, width, stride, name, settings):
    """1x1 reduce, 3x3, 1x1 expand to 4x width (Fig. 5 right). The stride sits on the first
    1x1 as in the paper's models, or on the 3x3 with `stride_in="3x3"` (ResNet v1.5)."""
    skip = shortcut(x, 4 * width, stride, name, settings)
    zero_gamma = settings.zero_init_residual and settings.residual
    stride_1x1, stride_3x3 = (stride, 1) if settings.stride_in == "1x1" else (1, stride)
    x = conv_bn(x, width, 1, stride_1x1, f"{name}_1", settings)
    x = conv_bn(x, width, 3, stride_3x3, f"{name}_2", settings)
    x = conv_bn(x, 4 * width, 1, 1, f"{name}_3", settings, relu=False, zero_gamma=zero_gamma)
    return merge(x, skip, name)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
STEMS = {"imagenet": imagenet_stem, "cifar": cifar_stem}


def stage(x, spec, index, settings):
    """One stage (conv{index+2}_x): the first block strides by 2 except in the first stage."""
    block = BLOCKS[spec.block]
    stride = 1 if index == 0 else 2
    for i in range(spec.blocks_per_stage[index]):
        x = block(x, spec.widths[index], stride if i == 0 else 1, f"conv{index + 2}_block{i + 1}", settings)
    return x
