"""Input preprocessing: what a model's weights expect of an RGB image in 0..255.

Plain arithmetic and slicing only, so the same function runs on NumPy arrays, tf.data
tensors, JAX arrays and inside an exported graph. `decode_predictions` names an ImageNet
model's outputs from the class list shipped in the package (imagenet_classes.json), offline.
"""

from __future__ import annotations

import functools
import importlib.resources
import json

import numpy as np

# The one list of preprocessing modes: every flag, record and exporter checks against it.
MODES = ("caffe", "torch", "tf", "pixel_mean", "unit", "none")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def check_mode(mode, mean=None):
    """ValueError naming the bad mode, or a pixel_mean mode without its mean."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if mode == "pixel_mean" and mean is None:
        raise ValueError("mode='pixel_mean' needs mean= (the training set's mean image, HxWx3 or 3 values)")


def preprocess_input(x, mode="caffe", mean=None):
    """Map float RGB images in 0..255 (last axis channels) to a model's input.

    caffe: RGB -> BGR, ImageNet channel mean subtracted (the paper's released models,
    keras.applications.resnet); torch: 0..1, then ImageNet mean/std (torchvision);
    tf: -1..1; pixel_mean: the training set's mean image subtracted (sections 3.4, 4.2);
    unit: x / 255, 0..1 (Keras `fit` on `x / 255`); none: x as given, for a model that
    scales its input itself (a `Rescaling` layer).
    """
    check_mode(mode, mean)
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    if mode == "caffe":
        return x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, dtype="float32")
    if mode == "torch":
        return (x / 255.0 - np.asarray(TORCH_MEAN_RGB, dtype="float32")) / np.asarray(TORCH_STD_RGB, dtype="float32")
    if mode == "tf":
        return x / 127.5 - 1.0
    return x - np.asarray(mean, dtype="float32")


def channel_affine(mode, mean=None):
    """(order, scale, shift) with preprocess_input(x)[..., c] == scale[c] * x[..., order[c]] + shift[..., c]:
    every mode is a channel reordering, a per-channel scale and an offset (a whole mean image
    for pixel_mean), so an exporter can fold the first two into the first conv's kernel."""
    check_mode(mode, mean)
    identity = np.arange(3)
    if mode == "none":
        return identity, np.ones(3, "float32"), np.zeros(3, "float32")
    if mode == "unit":
        return identity, np.full(3, 1.0 / 255.0, "float32"), np.zeros(3, "float32")
    if mode == "caffe":
        return identity[::-1], np.ones(3, "float32"), -np.asarray(CAFFE_MEAN_BGR, dtype="float32")
    if mode == "torch":
        std = np.asarray(TORCH_STD_RGB, dtype="float32")
        return identity, 1.0 / (255.0 * std), -np.asarray(TORCH_MEAN_RGB, dtype="float32") / std
    if mode == "tf":
        return identity, np.full(3, 1.0 / 127.5, "float32"), -np.ones(3, "float32")
    return identity, np.ones(3, "float32"), -np.asarray(mean, dtype="float32")


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """The 1,000 ImageNet classes in output order, each (wnid, WordNet synonyms)."""
    text = importlib.resources.files("keras_resnet").joinpath("imagenet_classes.json").read_text()
    return tuple(tuple(row) for row in json.loads(text)["classes"])


def decode_predictions(preds, top=5):
    """The `top` classes of each row of `preds` (batch, 1000), best first, as (wnid, name, score)
    like keras.applications; the name is the first WordNet synonym ("tench")."""
    preds = np.asarray(preds)
    classes = imagenet_classes()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError(f"preds of shape {preds.shape} must be (batch, {len(classes)}): ImageNet scores")
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= len(classes):
        raise ValueError(f"top={top!r} must be an integer in 1..{len(classes)}")
    decoded = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        decoded.append([(classes[i][0], classes[i][1].split(", ")[0], float(row[i])) for i in best])
    return decoded
