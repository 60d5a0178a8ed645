"""Fine-tuning a pretrained network on new data: the library behind the trainer's flags.

    from_pretrained(init_weights, model, classes=None, **model_kwargs)
        `--init_weights imagenet|<path> --classes N`: the registered architecture `model`
        ("resnet50") with `init_weights` loaded (see `keras_resnet.weights`), built with the
        arguments the weights were made with (stride_in, bn_epsilon, shortcut); with `classes`
        a new randomly initialised head, else the weights' own.
    with_new_head(model, classes, classifier_activation="softmax")
        The model's features (global average pool) with a new `classes`-way "predictions" layer;
        the backbone's layers are shared, not copied.
    freeze(model, up_to="conv4")
        `--freeze conv4`: layers of stages conv1 .. up_to stop training (weights and their BN
        statistics fixed); `stage_names(model)` lists the allowed stages.
    freeze_batchnorm(model)
        `--freeze_bn`: every BatchNormalization layer uses its moving statistics and stops
        updating them and its scale and offset, as the paper does when fine-tuning for
        detection (section 4.3 and appendix).

trainable_summary(model)
    What is frozen (stages, BatchNormalization layers) and how many parameters train, in
    words: the trainer prints it when fine-tuning.

Freezing sets `layer.trainable = False`; in Keras 3 a BatchNormalization layer that is not
trainable also runs in inference mode, even in `training=True` calls. Compile (or collect
`trainable_variables`) after freezing.
"""

from __future__ import annotations

import math
import re

import keras
from keras import layers

from keras_resnet import weights as weights_lib
from keras_resnet.builders import get_builder

_STAGE = re.compile(r"(?:conv|pool)(\d+)_")


def from_pretrained(init_weights, model, classes=None, classifier_activation="softmax", **model_kwargs):
    """The architecture `model` (a registry name) with `init_weights`; a new head when `classes` is given."""
    builder = get_builder(model)
    kwargs = {**weights_lib.build_kwargs(init_weights), **model_kwargs}
    if classes is None:
        return builder(weights=init_weights, classifier_activation=classifier_activation, **kwargs)
    backbone = builder(weights=init_weights, include_top=False, **kwargs)
    return with_new_head(backbone, classes, classifier_activation)


def with_new_head(model, classes, classifier_activation="softmax"):
    """`model`'s pooled features followed by a new Dense(classes) named "predictions"."""
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"classes={classes!r} must be an integer >= 1")
    if isinstance(model.output, dict):
        raise ValueError("model has several outputs (return_features=True): build it with include_top=False")
    names = {layer.name for layer in model.layers}
    features = model.get_layer("predictions").input if "predictions" in names else model.output
    if len(features.shape) == 4:
        features = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    outputs = layers.Dense(classes, activation=classifier_activation, name="predictions")(features)
    return keras.Model(model.input, outputs, name=model.name)


def _stage(layer_name):
    """1 for conv1_* and pool1_*, 2 for conv2_block1_*, ...; None for the head."""
    match = _STAGE.match(layer_name)
    return int(match.group(1)) if match else None


def stage_names(model):
    """The stages of `model` that `freeze` accepts: ("conv1", ..., "conv5") for ImageNet nets."""
    stages = sorted({_stage(layer.name) for layer in model.layers} - {None})
    return tuple(f"conv{stage}" for stage in stages)


def freeze(model, up_to="conv4"):
    """Stop training every layer of stages conv1 .. `up_to`; the later stages and the head train."""
    allowed = stage_names(model)
    if up_to not in allowed:
        raise ValueError(f"up_to={up_to!r} is not a stage of {model.name}; allowed: {allowed}")
    last = int(up_to[len("conv") :])
    for layer in model.layers:
        stage = _stage(layer.name)
        if stage is not None and stage <= last:
            layer.trainable = False
    return model


def freeze_batchnorm(model):
    """Fix every BatchNormalization layer: moving statistics used and kept, scale and offset kept."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return model


def _count(weights):
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def trainable_summary(model):
    """One line: the frozen stages, the frozen BatchNormalization layers of the stages that
    train, and the trainable / total parameter counts (as model.summary counts them)."""
    stages = {stage: int(stage[len("conv") :]) for stage in stage_names(model)}
    frozen = [name for name, n in stages.items() if all(not x.trainable for x in model.layers if _stage(x.name) == n)]
    frozen_bn = [
        layer
        for layer in model.layers
        if isinstance(layer, layers.BatchNormalization)
        and not layer.trainable
        and f"conv{_stage(layer.name)}" not in frozen
    ]
    trainable, total = _count(model.trainable_weights), _count(model.weights)
    said = f"stages {', '.join(frozen)} frozen" if frozen else "no stage frozen"
    if frozen_bn:
        said += f", and {len(frozen_bn)} BatchNormalization layers of the stages that train"
    return f"fine-tuning: {said}; {trainable:,} of {total:,} parameters train ({100 * trainable / max(total, 1):.1f}%)"
