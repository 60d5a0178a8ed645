"""Fine-tuning helpers: what Keras actually trains after freeze / freeze_batchnorm."""

import re

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import finetune, weights


def train_a_few_steps(model, seed=0, steps=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (8 * steps, 32, 32, 3)).astype("float32")
    y = rng.integers(0, model.output.shape[-1], 8 * steps)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def values(model):
    """{layer/variable: copy of the value} of every variable, trainable or not."""
    return {f"{layer.name}/{v.name}": v.numpy().copy() for layer in model.layers for v in layer.weights}


def changed(before, after):
    return {key for key in before if not np.array_equal(before[key], after[key])}


@pytest.fixture
def cifar_model():
    return finetune.with_new_head(keras_resnet.ResNet20(include_top=False), classes=4)


def test_stage_names():
    assert finetune.stage_names(keras_resnet.ResNet20()) == ("conv1", "conv2", "conv3", "conv4")
    assert finetune.stage_names(keras_resnet.ResNet18(input_shape=(32, 32, 3))) == tuple(
        f"conv{i}" for i in range(1, 6)
    )


def test_freeze_keeps_frozen_stages_bit_identical(cifar_model):
    finetune.freeze(cifar_model, up_to="conv3")
    before = values(cifar_model)
    train_a_few_steps(cifar_model)
    moved = changed(before, values(cifar_model))
    frozen = {key for key in before if key.startswith(("conv1_", "conv2_", "conv3_"))}
    assert frozen and not moved & frozen
    assert {"predictions/kernel", "conv4_block3_2_conv/kernel", "conv4_block3_2_bn/moving_mean"} <= moved


def test_freeze_batchnorm_keeps_statistics_and_trains_convs(cifar_model):
    finetune.freeze_batchnorm(cifar_model)
    before = values(cifar_model)
    train_a_few_steps(cifar_model)
    moved = changed(before, values(cifar_model))
    bn = {key for key in before if "_bn/" in key}
    assert bn and not moved & bn
    assert {"conv1_conv/kernel", "conv4_block3_2_conv/kernel", "predictions/kernel"} <= moved


def test_frozen_batchnorm_runs_in_inference_mode_when_training(cifar_model):
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    assert not np.allclose(cifar_model(x, training=True), cifar_model(x, training=False), atol=1e-4)
    finetune.freeze_batchnorm(cifar_model)
    np.testing.assert_allclose(cifar_model(x, training=True), cifar_model(x, training=False), atol=1e-6)


def test_freeze_names_the_allowed_stages(cifar_model):
    with pytest.raises(ValueError, match=r"conv5.*'conv1', 'conv2', 'conv3', 'conv4'"):
        finetune.freeze(cifar_model, up_to="conv5")


@pytest.mark.parametrize("kwargs", [{}, {"include_top": False}, {"include_top": False, "pooling": "max"}])
def test_with_new_head_shares_the_backbone(kwargs):
    model = keras_resnet.ResNet20(**kwargs)
    new = finetune.with_new_head(model, classes=3, classifier_activation=None)
    assert new.output.shape == (None, 3)
    assert new.get_layer("conv4_block3_2_conv") is model.get_layer("conv4_block3_2_conv")
    if kwargs.get("include_top", True):
        assert new.get_layer("predictions") is not model.get_layer("predictions")


@pytest.mark.parametrize("classes", [0, "10", True])
def test_with_new_head_bad_classes(classes):
    with pytest.raises(ValueError, match="classes="):
        finetune.with_new_head(keras_resnet.ResNet20(include_top=False), classes)


def test_from_pretrained_builds_what_the_weights_need(tmp_path):
    source = keras_resnet.ResNet20(bn_epsilon=1e-5, classes=10)
    path = str(tmp_path / "resnet20.weights.h5")
    weights.save(source, path, "torch")
    model = finetune.from_pretrained(path, "resnet20", classes=4)
    assert model.output.shape == (None, 4)
    assert model.get_layer("conv1_bn").epsilon == 1e-5
    for name in ("conv1_conv", "conv4_block3_2_bn"):
        for got, want in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    kept = finetune.from_pretrained(path, "resnet20")
    kept_head, source_head = kept.get_layer("predictions"), source.get_layer("predictions")
    np.testing.assert_array_equal(kept_head.kernel.numpy(), source_head.kernel.numpy())


def keras_summary_counts(model):
    """(trainable, total) parameters as Keras' model.summary() prints them."""
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    count = lambda name: int(re.search(rf"{name} params: ([\d,]+)", text).group(1).replace(",", ""))  # noqa: E731
    return count("Trainable"), count("Total")


def test_trainable_summary_names_the_frozen_stages_and_counts_what_keras_counts():
    model = keras_resnet.ResNet50(weights=None, input_shape=(64, 64, 3), classes=3)
    assert finetune.trainable_summary(model).startswith("fine-tuning: no stage frozen;")
    finetune.freeze(model, up_to="conv3")
    finetune.freeze_batchnorm(model)
    trainable, total = keras_summary_counts(model)
    line = finetune.trainable_summary(model)
    assert line.startswith("fine-tuning: stages conv1, conv2, conv3 frozen, and ")
    assert "BatchNormalization layers of the stages that train" in line
    assert f"; {trainable:,} of {total:,} parameters train" in line
