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
    to checkpoint. `dataset`: the data set's name (None: the config's). `eval_view`: the
    centre view's {"resize", "crop"} (`keras_resnet.data.eval_view`), for the exporters.
    `held_out`: the files --val_split holds out of class folders, listed in the run dir.
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
    dataset: str | None = None
    eval_view: dict | None = None
    held_out: tuple | None = None


def preprocessing(config):
    """(mode, mean or None) of the run: --preprocess_mode, else what --init_weights expect
    (caffe for the published ImageNet files, a run dir's own), else the mode the run dir
    records (a resume), else the paper's pixel mean."""
    from keras_resnet import run_dir

    if config.preprocess_mode is not None:
        return config.preprocess_mode, None
    if config.init_weights:
        from keras_resnet import weights as weights_lib

        mode, mean = weights_lib.preprocessing(config.init_weights)
        if mode is not None:
            return mode, mean
    if run_dir.is_run_dir(config.model_dir) and run_dir.read_config(config.model_dir)["record"]:
        return run_dir.record_of(config.model_dir).preprocess_mode, None
    return "pixel_mean", None


def training_mean(config, dataset, info):
    """(mean, what it is in words) that mode pixel_mean subtracts: the in-memory sets' mean
    image, ImageNet's per-channel mean, else the per-channel mean of the set's own training
    images, streamed once and then kept in the run dir's record for resumes."""
    from keras_resnet import data, run_dir

    if info.small:
        mean = data.pixel_mean(dataset, config.data_dir, val_split=config.val_split)
        return mean, f"the mean image of the {info.num_examples['train']:,} training images"
    if info.name == "imagenet":
        mean = data.pixel_mean(dataset, config.data_dir)
        return mean, f"ImageNet's per-channel mean {_rgb(mean)}"
    cached = run_dir.recorded_mean(config.model_dir)
    if cached is not None:
        return cached, f"the per-channel mean {_rgb(cached)} of the training images, kept in {config.model_dir}"
    mean, count = data.streamed_channel_mean(dataset, config.data_dir, val_split=config.val_split)
    return mean, f"the per-channel mean {_rgb(mean)} of the {count:,} training images (read once; kept in the run dir)"


def _rgb(mean):
    return "(" + ", ".join(f"{v:.2f}" for v in np.ravel(mean)[:3]) + ")"


def record_held_out(model_dir, files):
    """List the held-out files in the run dir (once; later runs must match it)."""
    from keras_resnet import run_dir

    if files is None:
        return
    files = list(files)
    run_dir.check_held_out(model_dir, files)
    if run_dir.held_out(model_dir) is None:
        run_dir.write_held_out(model_dir, files)


def make_inputs(config, report=print):
    """Inputs of a TrainConfig's data set through `keras_resnet.data`; `report` gets what
    was found (images per split and class, class names, files skipped) and the mean used."""
    from keras_resnet import data, run_dir
    from keras_resnet.evaluation import held_out_files, split_of
    from keras_resnet.training.config import dataset_name

    dataset = dataset_name(config)
    info = data.dataset_info(dataset, config.data_dir, val_split=config.val_split)
    if config.classes is not None and config.data_dir:
        data.check_head_classes(dataset, config.data_dir, config.classes, val_split=config.val_split)
    held_out = held_out_files(config.data_dir, config.val_split)
    run_dir.check_held_out(config.model_dir, held_out)
    lines = data.describe(dataset, config.data_dir, val_split=config.val_split)
    mode, mean = preprocessing(config)
    if mode == "pixel_mean" and mean is None:
        mean, which = training_mean(config, dataset, info)
        lines.append(f"preprocessing: pixel_mean, subtracting {which}")
    else:
        lines.append(
            f"preprocessing: {mode}" + (" (the mean --init_weights were trained with)" if mean is not None else "")
        )
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
    train_fn = data.make_input_fn(dataset, "train", config.batch_size, training=True, **common)
    split = split_of(info, config.val_split)
    eval_fn = data.make_input_fn(dataset, split, config.batch_size, training=False, **common) if split else None
    for line in lines:
        report(line)
    names = tuple(info.class_names) if info.class_names is not None else None
    size = config.image_size or info.image_size
    return Inputs(
        train_fn,
        eval_fn,
        info.num_examples["train"],
        info.num_classes,
        (size, size),
        names,
        mode,
        mean,
        info.small,
        dataset,
        data.eval_view(info, size),
        None if held_out is None else tuple(held_out),
    )
