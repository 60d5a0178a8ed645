"""Nets that behave like trained ones, for checks that an untrained net would fool.

An untrained ResNet's logits are huge (a standard deviation near 1e5 at depth 50) and its
softmax is one-hot, so comparing two runtimes' probabilities on it proves little. A trained
net's batch normalization keeps every layer's responses near unit scale: giving a net the
BN parameters and moving statistics a trained one has makes its logits and probabilities
those of a real classifier (logits of order 1, a spread-out softmax), while its kernels stay
as built.
"""

from __future__ import annotations

import keras
import numpy as np


def with_trained_statistics(model, images, seed=0):
    """Give every BatchNormalization of `model` a trained net's parameters and statistics.

    gamma ~ U(0.5, 1.5) and beta ~ N(0, 0.2) (seeded); the moving mean and variance are then
    the batch statistics of one training-mode pass over `images` (already preprocessed as the
    net expects), so each BN normalizes what it will see at inference. Returns `model`.
    """
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.gamma.assign(rng.uniform(0.5, 1.5, tuple(layer.gamma.shape)).astype("float32"))
        layer.beta.assign(rng.normal(0.0, 0.2, tuple(layer.beta.shape)).astype("float32"))
    momenta = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0  # moving statistics := this pass's batch statistics
        model(np.asarray(images, dtype="float32"), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return model


def sample_photos(size, count=16, seed=0):
    """`count` RGB crops (0..255 float32, `size` x `size`) of scikit-learn's two bundled photos
    (a temple and a flower, 427x640), at random positions and scales: real image statistics
    with no download."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top : top + side, left : left + side].astype("float32")
        crops.append(_resize(crop, size))
    return np.stack(crops)


def _resize(image, size):
    """Area-average resize of a square float image to `size` x `size` (numpy only)."""
    side = image.shape[0]
    edges = np.linspace(0, side, size + 1).astype(int)
    rows = np.add.reduceat(image, edges[:-1], axis=0) / np.diff(edges)[:, None, None]
    return np.add.reduceat(rows, edges[:-1], axis=1) / np.diff(edges)[None, :, None]
