"""BN folding: the folded float32 graph computes the unfolded Keras model's function."""

import contextlib

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.export.folding import fold_batch_norms, foldable_pairs
from model_helpers import randomize


def logits_of(model, x):
    """Logits of a softmax-headed Keras model: its features times the fc layer, in float64."""
    features = np.asarray(keras.Model(model.input, model.layers[-1].input)(x, training=False), dtype="float64")
    return features @ np.asarray(model.layers[-1].kernel, dtype="float64") + np.asarray(model.layers[-1].bias, dtype="float64")


@contextlib.contextmanager
def global_policy(name):
    """Build under a global Keras dtype policy (as a mixed-precision run does), then restore."""
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


@pytest.mark.parametrize("name, batch", [("resnet20", 8), ("resnet50", 2)])
def test_folded_graph_equals_unfolded_model(name, batch, rel_diff):
    model = randomize(keras_resnet.get_builder(name)(), seed=1)
    folded = fold_batch_norms(model, logits=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(foldable_pairs(model)) == len(bns)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    size = model.input_shape[1]
    x = np.random.default_rng(2).normal(0, 50, (batch, size, size, 3)).astype("float32")
    assert rel_diff(np.asarray(folded(x)), logits_of(model, x)) <= 1e-5


def test_folding_keeps_the_softmax_head_unless_logits_asked(rel_diff):
    model = randomize(keras_resnet.get_builder("resnet20")(), seed=3)
    x = np.random.default_rng(4).normal(0, 50, (4, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(fold_batch_norms(model)(x))
    assert rel_diff(probabilities, np.asarray(model(x, training=False))) <= 1e-5


def test_mixed_precision_model_folds_to_float32():
    with global_policy("mixed_bfloat16"):
        model = keras_resnet.get_builder("resnet20")()
    folded = fold_batch_norms(model)
    assert {w.dtype for w in folded.weights} == {"float32"}
    assert {layer.dtype_policy.compute_dtype for layer in folded.layers} == {"float32"}


def test_a_sequential_model_is_refused():
    with pytest.raises(ValueError, match="functional"):
        fold_batch_norms(keras.Sequential([keras.layers.Dense(2)]))
