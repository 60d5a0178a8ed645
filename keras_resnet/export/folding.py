"""The serving model: the Keras model rewritten into fewer, cheaper ops with the same function.

- BatchNormalization at inference is a per-channel affine map, y = (x - mean) * gamma /
  sqrt(var + eps) + beta, so a conv followed by BN is one conv with its kernel scaled by
  gamma / sqrt(var + eps) and a bias beta - mean * scale.
- The preprocessing's channel order and per-channel scale (`preprocessing.channel_affine`)
  move into the kernel of the conv that reads the input; only its offset stays in front, as
  one add (`unit` is a scale of 1/255 and no offset; `none` changes nothing). Zero padding
  commutes with both, so this is exact.
- A ZeroPadding2D between a ReLU and a valid max pool becomes the pool's own padding: the
  pool pads with -inf, which equals zero padding on non-negative values, and the padded copy
  of the tensor is never made (onnxruntime then keeps its blocked layout across the stem).
The last two spare the served graph a Slice, a broadcast Sub and a Pad per call, and spare
onnxruntime two layout conversions around the stem (figures: BENCHMARKS.md, Findings).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers


# Keras has no public API for a functional graph's edges, so the two helpers below read its
# nodes (`_inbound_nodes`, `_outbound_nodes`, `_keras_history`); the public model.get_config()
# lists each layer's inbound layers by name and could replace them.
def _consumers(layer):
    """The layers that read `layer`'s output."""
    return [node.operation for node in layer._outbound_nodes]


def _producer(layer):
    """The layer whose output is `layer`'s only input, or None for several inputs or calls."""
    if len(layer._inbound_nodes) != 1 or len(layer._inbound_nodes[0].input_tensors) != 1:
        return None
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation


def foldable_pairs(model):
    """{conv name: bn name} for every BN whose only input is a Conv2D that feeds nothing else."""
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, layers.BatchNormalization) or bn.axis not in (-1, 3):
            continue
        source = _producer(bn)
        if (
            isinstance(source, layers.Conv2D)
            and source.data_format == "channels_last"
            and len(source._inbound_nodes) == 1
            and len(source._outbound_nodes) == 1
        ):
            pairs[source.name] = bn.name
    return pairs


def input_conv(model):
    """Name of the Conv2D that alone reads the model's one input, directly or through one
    ZeroPadding2D (zeros either way), or None: where the preprocessing can fold."""
    if len(model.inputs) != 1:
        return None
    readers = _consumers(model.inputs[0]._keras_history.operation)
    if len(readers) == 1 and isinstance(readers[0], layers.ZeroPadding2D) and len(readers[0]._inbound_nodes) == 1:
        readers = _consumers(readers[0])
    if len(readers) != 1:
        return None
    conv = readers[0]
    if (
        type(conv) is not layers.Conv2D
        or conv.data_format != "channels_last"
        or conv.groups != 1
        or len(conv._inbound_nodes) != 1
    ):
        return None
    return conv.name


def _is_relu(layer):
    """Whether `layer` only outputs values >= 0: a plain ReLU."""
    if isinstance(layer, layers.Activation):
        return getattr(layer.activation, "__name__", None) == "relu"
    return isinstance(layer, layers.ReLU) and layer.negative_slope == 0 and layer.threshold >= 0


def mergeable_pools(model):
    """{ZeroPadding2D name: MaxPooling2D name} for each zero padding that reads a ReLU and
    feeds only a valid max pool: the pool can pad by itself with the same result."""
    pairs = {}
    for pad in model.layers:
        if (
            not isinstance(pad, layers.ZeroPadding2D)
            or pad.data_format != "channels_last"
            or len(pad._inbound_nodes) != 1
        ):
            continue
        readers = _consumers(pad)
        if len(readers) != 1 or not _is_relu(_producer(pad)):
            continue
        pool = readers[0]
        if type(pool) is layers.MaxPooling2D and pool.padding == "valid" and pool.data_format == "channels_last":
            pairs[pad.name] = pool.name
    return pairs


class PaddedMaxPooling2D(layers.Layer):
    """Max pooling with explicit (top, bottom), (left, right) padding in one TensorFlow op
    (-inf padding; equal to zero padding on a ReLU's output). Serving graphs only."""

    def __init__(self, pool_size, strides, padding, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = tuple(pool_size)
        self.strides = tuple(strides)
        self.padding = tuple(tuple(side) for side in padding)

    def call(self, x):
        import tensorflow as tf

        explicit = [[0, 0], list(self.padding[0]), list(self.padding[1]), [0, 0]]
        return tf.nn.max_pool2d(x, self.pool_size, self.strides, padding=explicit)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        sizes = [
            None if size is None else (size + sum(pad) - window) // stride + 1
            for size, pad, window, stride in zip((height, width), self.padding, self.pool_size, self.strides)
        ]
        return (batch, *sizes, channels)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


def folded_conv_weights(conv, bn):
    """(kernel, bias) of the one conv equal to `conv` then `bn` in inference mode, in float64."""
    kernel = np.asarray(conv.kernel, dtype="float64")
    bias = np.asarray(conv.bias, dtype="float64") if conv.use_bias else np.zeros(kernel.shape[-1])
    if bn is None:
        return kernel, bias
    mean = np.asarray(bn.moving_mean, dtype="float64")
    variance = np.asarray(bn.moving_variance, dtype="float64")
    gamma = np.asarray(bn.gamma, dtype="float64") if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, dtype="float64") if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return kernel * scale, (bias - mean) * scale + beta


def input_kernel(kernel, order, scale):
    """The kernel over raw input channels equal to `kernel` over channels c = scale[c] * raw[order[c]]."""
    raw = np.zeros_like(kernel)
    raw[:, :, np.asarray(order), :] = kernel * np.asarray(scale, dtype="float64")[None, None, :, None]
    return raw


def input_offset(order, scale, shift):
    """The offset added to raw images before the folded input conv: shift / scale, in raw
    channel order (an image or 3 values, as `shift` is)."""
    shift = np.asarray(shift, dtype="float64")
    offset = np.empty_like(shift)
    offset[..., np.asarray(order)] = shift / np.asarray(scale, dtype="float64")
    return offset.astype("float32")


def _float32_config(layer):
    """The layer's config with a float32 policy, so a mixed-precision run serves in float32."""
    config = layer.get_config()
    if "dtype" in config:
        config["dtype"] = "float32"
    return config


def _output_layer(model, logits):
    """Name of the final softmax Dense to make linear when `logits` is asked for, else None."""
    if not logits:
        return None
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", None)
    if not isinstance(last, layers.Dense) or name not in ("softmax", "linear"):
        raise ValueError(
            f"the model must end in a Dense layer with activation softmax or None to be served "
            f"as a classifier; it ends in {type(last).__name__} {last.name!r} (activation {name!r})"
        )
    return last.name if name == "softmax" else None


def serving_model(model, logits=False, input_affine=None, merge_pools=True):
    """A new float32 functional model equal to `model` at inference, in fewer ops: BN folded
    into convs, zero padding merged into max pools, and with `input_affine=(order, scale)`
    (from `channel_affine`) the preprocessing's channel order and scale folded into the input
    conv, so the new model reads raw images plus `input_offset`.

    BNs that do not directly follow a single-use Conv2D are kept (in float32). With
    `logits=True` a final softmax is dropped, so the model returns logits. `merge_pools=False`
    keeps the zero paddings before max pools: LiteRT has no max pool with explicit padding.
    The original model is not modified.
    """
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential) or not getattr(model, "inputs", None):
        raise ValueError(f"serving_model needs a functional keras.Model, got {type(model).__name__}")
    first_conv = input_conv(model) if input_affine is not None else None
    if input_affine is not None and first_conv is None:
        raise ValueError("input_affine needs a model whose input feeds one Conv2D (see input_conv); this one does not")
    pairs = foldable_pairs(model)
    pads = mergeable_pools(model) if merge_pools else {}
    skipped = set(pairs.values()) | set(pads)
    pools = {pool: pad for pad, pool in pads.items()}
    softmax_layer = _output_layer(model, logits)
    originals = {layer.name: layer for layer in model.layers}

    def clone(layer):
        config = _float32_config(layer)
        if layer.name in pools:
            padding = originals[pools[layer.name]].padding
            return PaddedMaxPooling2D(layer.pool_size, layer.strides, padding, name=layer.name, dtype="float32")
        if layer.name in pairs or layer.name == first_conv:
            config["use_bias"] = True
        if layer.name == softmax_layer:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in skipped:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = originals[layer.name]
        if layer.name in pairs or layer.name == first_conv:
            bn = originals[pairs[layer.name]] if layer.name in pairs else None
            kernel, bias = folded_conv_weights(source, bn)
            if layer.name == first_conv:
                kernel = input_kernel(kernel, *input_affine)
            layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
        elif source.weights:
            layer.set_weights([np.asarray(w, dtype="float32") for w in source.get_weights()])
    return folded
