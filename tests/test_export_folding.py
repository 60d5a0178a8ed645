"""The serving model (BN folded, pads merged into pools, preprocessing folded into the first
conv) computes the unfolded Keras model's function."""

import contextlib

import keras
import numpy as np
import pytest
from model_helpers import randomize

import keras_resnet
from keras_resnet.export import verify
from keras_resnet.export.folding import PaddedMaxPooling2D, foldable_pairs, input_conv, mergeable_pools, serving_model
from keras_resnet.export.graph import ServingGraph
from keras_resnet.export.sources import ModelSource


def logits_of(model, x):
    """Logits of a softmax-headed Keras model: its features times the fc layer, in float64."""
    features = np.asarray(keras.Model(model.input, model.layers[-1].input)(x, training=False), dtype="float64")
    return features @ np.asarray(model.layers[-1].kernel, dtype="float64") + np.asarray(
        model.layers[-1].bias, dtype="float64"
    )


@contextlib.contextmanager
def global_policy(name):
    """Build under a global Keras dtype policy (as a mixed-precision run does), then restore."""
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("name, batch", [("resnet20", 8), pytest.param("resnet50", 2, marks=pytest.mark.slow)])
def test_folded_graph_equals_unfolded_model(name, batch, rel_diff):
    model = randomize(keras_resnet.get_builder(name)(), seed=1)
    folded = serving_model(model, logits=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(foldable_pairs(model)) == len(bns)
    assert "BatchNormalization" not in layer_types(folded)
    size = model.input_shape[1]
    x = np.random.default_rng(2).normal(0, 50, (batch, size, size, 3)).astype("float32")
    assert rel_diff(np.asarray(folded(x)), logits_of(model, x)) <= 1e-5


def test_the_stem_pad_merges_into_its_max_pool():
    model = keras_resnet.ResNet50(weights=None)
    assert mergeable_pools(model) == {"pool1_pad": "pool1_pool"}
    folded = serving_model(model)
    assert isinstance(folded.get_layer("pool1_pool"), PaddedMaxPooling2D)
    assert "pool1_pad" not in [layer.name for layer in folded.layers]


def test_without_merged_pools_the_stem_keeps_its_pad_and_plain_pool(rel_diff):
    """What LiteRT gets: no max pool with explicit padding, the same function."""
    model = randomize(keras_resnet.ResNet18(weights=None, input_shape=(64, 64, 3), classes=10), seed=3)
    folded = serving_model(model, logits=True, merge_pools=False)
    assert type(folded.get_layer("pool1_pool")) is keras.layers.MaxPooling2D
    assert isinstance(folded.get_layer("pool1_pad"), keras.layers.ZeroPadding2D)
    x = np.random.default_rng(4).normal(0, 50, (2, 64, 64, 3)).astype("float32")
    assert rel_diff(np.asarray(folded(x)), logits_of(model, x)) <= 1e-5


def pad_pool_model(relu):
    """Input -> [ReLU] -> ZeroPadding2D(1) -> MaxPooling2D(3, 2) -> flatten -> softmax."""
    inputs = keras.Input((9, 9, 2))
    x = keras.layers.Activation("relu")(inputs) if relu else keras.layers.Activation("linear")(inputs)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("relu", [True, False])
def test_a_pad_merges_into_a_pool_only_after_a_relu(relu, rel_diff):
    # On negative values -inf padding differs from zero padding: no ReLU, no merge.
    model = pad_pool_model(relu)
    assert bool(mergeable_pools(model)) == relu
    x = np.random.default_rng(3).normal(-1, 1, (4, 9, 9, 2)).astype("float32")
    assert rel_diff(np.asarray(serving_model(model)(x)), np.asarray(model(x))) <= 1e-6


@pytest.mark.parametrize(
    "name, mode",
    [
        pytest.param("resnet50", "caffe", marks=pytest.mark.slow),
        ("resnet18", "torch"),
        ("resnet20", "tf"),
        ("resnet20", "pixel_mean"),
    ],
)
def test_serving_graph_with_folded_preprocessing_equals_keras(name, mode, rel_diff):
    model = randomize(keras_resnet.get_builder(name)(), seed=4)
    size = model.input_shape[1:3]
    mean = np.random.default_rng(5).uniform(0, 255, (*size, 3)).astype("float32") if mode == "pixel_mean" else None
    source = ModelSource(model=model, preprocess_mode=mode, mean=mean, name=name)
    graph = ServingGraph(source)
    assert input_conv(model) == "conv1_conv" and graph.input_offset.shape == (*size, 3)
    images = verify.random_images(2, size, 6)
    logits, _ = verify.keras_reference(source, images)
    assert rel_diff(graph.numeric_outputs(images)["logits"].numpy(), logits) <= 1e-5


def test_an_input_read_twice_keeps_its_preprocessing(rel_diff):
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    both = keras.layers.Concatenate()([conv, keras.layers.GlobalAveragePooling2D()(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(both))
    assert input_conv(model) is None
    source = ModelSource(model=model, preprocess_mode="caffe", name="two_readers")
    graph = ServingGraph(source, top_k=1)
    assert graph.input_offset is None
    images = verify.random_images(2, (8, 8), 7)
    logits, _ = verify.keras_reference(source, images)
    assert rel_diff(graph.numeric_outputs(images)["logits"].numpy(), logits) <= 1e-5
    with pytest.raises(ValueError, match="input_affine"):
        serving_model(model, input_affine=(np.arange(3), np.ones(3)))


def test_folding_keeps_the_softmax_head_unless_logits_asked(rel_diff):
    model = randomize(keras_resnet.get_builder("resnet20")(), seed=3)
    x = np.random.default_rng(4).normal(0, 50, (4, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(serving_model(model)(x))
    assert rel_diff(probabilities, np.asarray(model(x, training=False))) <= 1e-5


def test_mixed_precision_model_folds_to_float32():
    with global_policy("mixed_bfloat16"):
        model = keras_resnet.get_builder("resnet20")()
    folded = serving_model(model)
    assert {w.dtype for w in folded.weights} == {"float32"}
    assert {layer.dtype_policy.compute_dtype for layer in folded.layers} == {"float32"}


def test_a_sequential_model_is_refused():
    with pytest.raises(ValueError, match="functional"):
        serving_model(keras.Sequential([keras.layers.Dense(2)]))
