"""Stems, residual blocks and shortcuts as tensor -> tensor functions (paper section 3).

Layer names follow keras.applications (`conv3_block2_1_conv`, `conv3_block1_0_bn`, ...)
so weights port by name. Stride-2 convolutions pad symmetrically and then convolve
`valid`, as the paper's Caffe models and keras.applications do; TensorFlow's `same` would
pad only bottom/right at stride 2 and shift every feature map by a pixel. Every layer takes
the network's data format (channels_last or channels_first); the weights are the same in both.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from keras_resnet import specs


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """What every block of one network shares: shortcut option, stride placement, BN, layout."""

    residual: bool = True
    shortcut: str = "B"
    stride_in: str = "1x1"
    zero_init_residual: bool = False
    bn_momentum: float = specs.BN_MOMENTUM
    bn_epsilon: float = specs.BN_EPSILON
    kernel_initializer: object = "he_normal"
    kernel_regularizer: object = None
    data_format: str = "channels_last"

    @property
    def channel_axis(self):
        """The axis of a feature map (batch first) that holds the channels."""
        return channel_axis(self.data_format)


def channel_axis(data_format):
    """-1 for channels_last, 1 for channels_first (the axis BN normalizes over)."""
    return 1 if data_format == "channels_first" else -1


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(layers.Layer):
    """Option A shortcut: identity, subsampled by `stride`, extra channels zero (section 3.3),
    appended after the input's channels on the channel axis of `data_format`."""

    def __init__(self, filters, stride=1, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.data_format = data_format

    def call(self, x):
        first = self.data_format == "channels_first"
        if self.stride > 1:
            step = slice(None, None, self.stride)
            x = x[:, :, step, step] if first else x[:, step, step, :]
        extra = self.filters - x.shape[channel_axis(self.data_format)]
        if extra:
            channels = [0, extra]
            x = ops.pad(x, [[0, 0], channels, [0, 0], [0, 0]] if first else [[0, 0], [0, 0], [0, 0], channels])
        return x

    def compute_output_shape(self, input_shape):
        first = self.data_format == "channels_first"
        batch, height, width = (input_shape[0], *input_shape[2:]) if first else input_shape[:3]

        def subsample(size):
            return None if size is None else -(-size // self.stride)

        height, width = subsample(height), subsample(width)
        return (batch, self.filters, height, width) if first else (batch, height, width, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "stride": self.stride,
            "data_format": self.data_format,
        }


def conv_bn(x, filters, kernel_size, stride, name, settings, relu=True, zero_gamma=False):
    """Conv (no bias) -> BN -> optional ReLU; BN right after each conv (section 3.4)."""
    padding = "same"
    if stride > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, data_format=settings.data_format, name=f"{name}_pad")(x)
        padding = "valid"
    x = conv(x, filters, kernel_size, stride, padding, f"{name}_conv", settings)
    x = batch_norm(x, f"{name}_bn", settings, gamma_initializer="zeros" if zero_gamma else "ones")
    if relu:
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def conv(x, filters, kernel_size, stride, padding, name, settings):
    """A bias-free Conv2D with the network's initializer, regularizer and data format."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=settings.kernel_initializer,
        kernel_regularizer=settings.kernel_regularizer,
        data_format=settings.data_format,
        name=name,
    )(x)


def batch_norm(x, name, settings, gamma_initializer="ones"):
    """BatchNormalization over the channel axis of the network's data format."""
    return layers.BatchNormalization(
        axis=settings.channel_axis,
        momentum=settings.bn_momentum,
        epsilon=settings.bn_epsilon,
        gamma_initializer=gamma_initializer,
        name=name,
    )(x)


def imagenet_stem(x, settings):
    """conv1 (7x7, 64, stride 2, pad 3) and the 3x3 stride-2 max pool of Table 1."""
    x = layers.ZeroPadding2D(3, data_format=settings.data_format, name="conv1_pad")(x)
    x = conv(x, 64, 7, 2, "valid", "conv1_conv", settings)
    x = batch_norm(x, "conv1_bn", settings)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, data_format=settings.data_format, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, data_format=settings.data_format, name="pool1_pool")(x)


def cifar_stem(x, settings):
    """The first layer of section 4.2: one 3x3 conv with 16 filters, no pooling."""
    return conv_bn(x, 16, 3, 1, "conv1", settings)


def shortcut(x, filters, stride, name, settings):
    """The shortcut of section 3.3 for the chosen option, or None for a plain net."""
    if not settings.residual:
        return None
    changes_shape = stride > 1 or x.shape[settings.channel_axis] != filters
    if settings.shortcut == "C" or (settings.shortcut == "B" and changes_shape):
        return conv_bn(x, filters, 1, stride, f"{name}_0", settings, relu=False)
    if changes_shape:
        return ZeroPadShortcut(filters, stride, settings.data_format, name=f"{name}_0_pad")(x)
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
