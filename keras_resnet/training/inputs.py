"""What the loop reads: input functions for `strategy.distribute_datasets_from_function`
and the facts about the data set that size the model and the schedule."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The data of a run.

    `train_fn(input_context)` yields preprocessed (float32 images, int32 labels) batches of
    the per-replica size forever; `eval_fn` one pass over the eval split (or None).
    `preprocess_mode` and `pixel_mean` are what the images went through, recorded in
    config.json for the exporters. `in_memory`: a small set whose pipeline state is cheap
    to checkpoint.
    """

    train_fn: object
    eval_fn: object
    num_examples: int
    num_classes: int
    image_size: tuple
    class_names: tuple | None = None
    preprocess_mode: str = "pixel_mean"
    pixel_mean: np.ndarray | None = None
    in_memory: bool = True


def preprocessing(config):
    """(mode, mean or None) of the run: --preprocess_mode, else what --init_weights expect
    (caffe for the published ImageNet files, a run dir's own), else the paper's pixel mean."""
    if config.preprocess_mode is not None:
        return config.preprocess_mode, None
    if config.init_weights:
        from keras_resnet import weights as weights_lib

        mode, mean = weights_lib.preprocessing(config.init_weights)
        if mode is not None:
            return mode, mean
    return "pixel_mean", None


def eval_split(config, info):
    """The split evaluations report: the held-out part of train with --val_split, ImageNet's
    validation set, else the test set."""
    return "validation" if config.val_split or not info.small else "test"


def make_inputs(config):
    """Inputs of a TrainConfig's data set through `keras_resnet.data`."""
    from keras_resnet import data

    info = data.dataset_info(config.dataset, config.data_dir, val_split=config.val_split)
    mode, mean = preprocessing(config)
    if mode == "pixel_mean" and mean is None:
        mean = data.pixel_mean(config.dataset, config.data_dir, val_split=config.val_split)
    common = dict(
        data_dir=config.data_dir,
        preprocess_mode=mode,
        mean=mean,
        seed=config.seed,
        deterministic=config.deterministic,
        shuffle_buffer=config.shuffle_buffer,
        cache=config.cache,
        val_split=config.val_split,
        image_size=config.image_size,
    )
    train_fn = data.make_input_fn(config.dataset, "train", config.batch_size, training=True, **common)
    eval_fn = data.make_input_fn(config.dataset, eval_split(config, info), config.batch_size, training=False, **common)
    names = tuple(info.class_names) if info.class_names is not None else None
    size = config.image_size or info.image_size
    return Inputs(
        train_fn, eval_fn, info.num_examples["train"], info.num_classes, (size, size), names, mode, mean, info.small
    )


def describe_source(config):
    """Which reader the data layer picks for --data_dir (`keras_resnet.data.detect_source`), in words."""
    if config.data_dir is None:
        return f"data: {config.dataset} from the data layer's default location (TFDS data dir)"
    from keras_resnet import data

    return f"data: {config.dataset} from {config.data_dir}, read as {data.detect_source(config.data_dir)}"
