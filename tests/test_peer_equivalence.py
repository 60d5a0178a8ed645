"""keras_resnet's ResNet50/101/152 compute keras.applications' function for the same weights."""

import keras
import numpy as np
import pytest
from model_helpers import randomize

import keras_resnet


def copy_folding_biases(peer, ours):
    """Copy by layer name; y = BN(Wx + b) equals BN'(Wx) with the moving mean less b."""
    biases = {}
    for layer in peer.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.Conv2D):
            ours.get_layer(layer.name).set_weights(weights[:1])
            biases[layer.name[: -len("_conv")]] = weights[1]
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = weights
            bias = biases[layer.name[: -len("_bn")]]
            ours.get_layer(layer.name).set_weights([gamma, beta, mean - bias, var])
        elif weights:
            ours.get_layer(layer.name).set_weights(weights)


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_same_outputs_as_keras_applications(depth, rel_diff):
    shape = (96, 96, 3)
    peer = getattr(keras.applications, f"ResNet{depth}")(weights=None, input_shape=shape, classifier_activation=None)
    ours = keras_resnet.get_builder(f"resnet{depth}")(input_shape=shape, classifier_activation=None)
    randomize(peer, depth)
    copy_folding_biases(peer, ours)
    x = np.random.default_rng(0).uniform(-120, 130, (2, *shape)).astype("float32")
    expected = peer.predict(x, verbose=0)
    got = ours.predict(x, verbose=0)
    assert rel_diff(got, expected) <= 1e-5
