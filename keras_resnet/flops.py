"""Multiply-add counting: what Table 1's "FLOPs" row counts (one multiply-add = 2 floating-point ops)."""

from __future__ import annotations

import math

import keras


def _static(shape, layer):
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"layer {layer.name!r} has output shape {tuple(shape)} with an unknown size; "
            "build the model with a fixed input_shape or pass input_shape"
        )
    return shape


def layer_multiply_adds(layer):
    """Multiply-adds of one Conv2D or Dense layer for one example; 0 for any other layer."""
    if isinstance(layer, keras.layers.Conv2D):
        out = _static(layer.output.shape, layer)
        kh, kw, cin, cout = layer.kernel.shape  # HWIO in either data format
        spatial = out[2:] if layer.data_format == "channels_first" else out[1:-1]
        return math.prod(spatial) * kh * kw * cin * cout // layer.groups
    if isinstance(layer, keras.layers.Dense):
        kin, kout = layer.kernel.shape
        positions = math.prod(_static(layer.output.shape, layer)[1:-1])
        return positions * kin * kout
    return 0


def count_flops(model, input_shape=None):
    """Multiply-adds (not floating-point operations) of the conv and fc layers for one image.

    The paper's "FLOPs" (Table 1: 3.6 billion for ResNet-34, 11.3 billion for ResNet-152) count
    multiply-adds, and so does this: one multiply-add is two floating-point operations, so
    FLOP/s = 2 x this count x images/s (a training step is usually counted as three forward
    passes). BN, ReLU, pooling and the residual additions are left out, as in the paper.

    `input_shape` ((h, w, c), or (c, h, w) for a channels_first model: the model's input
    order) counts for that size, cloning the model's graph when its own input size differs
    or is unknown (fully-convolutional use).
    """
    if input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
        model = keras.models.clone_model(model, input_tensors=keras.Input(shape=tuple(input_shape)))
    return sum(layer_multiply_adds(layer) for layer in model.layers)
