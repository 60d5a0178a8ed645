"""What the loop reads: input functions for `strategy.distribute_datasets_from_function`
and the facts about the data set that size the model and the schedule."""

from __future__ import annotations

import dataclasses
import os

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


HELD_OUT_FILE = "held_out.txt"


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


def eval_split(val_split, info):
    """The split evaluations report: the held-out part of train with val_split, the test
    set of in-memory sets, else the validation set (class folders: validation, else test,
    else None: no evaluation)."""
    if val_split:
        return "validation"
    if info.small:
        return "test"
    if info.source == "folders":
        return next((split for split in ("validation", "test") if split in info.num_examples), None)
    return "validation"


def _cached_mean(model_dir):
    """The mean a run dir kept (pixel_mean.npy beside a config.json that names it), or None."""
    from keras_resnet.training import saved_run

    try:
        config = saved_run.read_config(model_dir)
    except ValueError:
        return None
    if not (config.get("preprocessing") or {}).get("mean_file"):
        return None
    return np.load(os.path.join(model_dir, config["preprocessing"]["mean_file"]))


def training_mean(config, dataset, info):
    """(mean, what it is in words) that mode pixel_mean subtracts: the in-memory sets' mean
    image, ImageNet's per-channel mean, else the per-channel mean of the set's own training
    images, streamed once and then kept in the run dir (pixel_mean.npy) for resumes."""
    from keras_resnet import data

    if info.small:
        mean = data.pixel_mean(dataset, config.data_dir, val_split=config.val_split)
        return mean, f"the mean image of the {info.num_examples['train']:,} training images"
    if info.name == "imagenet":
        mean = data.pixel_mean(dataset, config.data_dir)
        return mean, f"ImageNet's per-channel mean {_rgb(mean)}"
    cached = _cached_mean(config.model_dir)
    if cached is not None:
        return cached, f"the per-channel mean {_rgb(cached)} of the training images, kept in {config.model_dir}"
    mean, count = data.streamed_channel_mean(dataset, config.data_dir, val_split=config.val_split)
    return mean, f"the per-channel mean {_rgb(mean)} of the {count:,} training images (read once; kept in the run dir)"


def _rgb(mean):
    return "(" + ", ".join(f"{v:.2f}" for v in np.ravel(mean)[:3]) + ")"


def held_out_files(data_dir, val_split):
    """The files val_split holds out of class folders, relative to data_dir (else None)."""
    from keras_resnet import data

    if not val_split or not data_dir or data.detect_source(data_dir) != "folders":
        return None
    found = data.folder_split(data_dir, "validation", val_split)
    return [os.path.relpath(path, data_dir) for path in found.paths]


def check_held_out(model_dir, files):
    """The held-out files a run dir lists must be `files`: the split of training is the split
    evaluated and resumed. A ValueError where the folders changed since."""
    path = os.path.join(model_dir, HELD_OUT_FILE)
    if files is None or not os.path.isfile(path):
        return
    with open(path) as f:
        recorded = f.read().split("\n")[:-1]
    if recorded != files:
        changed = sorted(set(recorded) ^ set(files))
        raise ValueError(
            f"the files --val_split holds out are not those {path} lists ({len(changed)} differ, e.g. {changed[:3]}): "
            "the folders changed since the run began; restore them, or start a new --model_dir"
        )


def record_held_out(model_dir, files):
    """List the held-out files in the run dir (once; later runs must match it)."""
    from keras_resnet.training import saved_run

    if files is None:
        return
    check_held_out(model_dir, files)
    path = os.path.join(model_dir, HELD_OUT_FILE)
    if not os.path.isfile(path):
        os.makedirs(model_dir, exist_ok=True)
        saved_run.atomic_write_bytes(path, "".join(f + "\n" for f in files).encode())


def make_inputs(config, report=print):
    """Inputs of a TrainConfig's data set through `keras_resnet.data`; `report` gets what
    was found (images per split and class, class names, files skipped) and the mean used."""
    from keras_resnet import data
    from keras_resnet.training.config import dataset_name

    dataset = dataset_name(config)
    info = data.dataset_info(dataset, config.data_dir, val_split=config.val_split)
    if config.classes is not None and config.data_dir:
        data.check_head_classes(dataset, config.data_dir, config.classes, val_split=config.val_split)
    held_out = held_out_files(config.data_dir, config.val_split)
    check_held_out(config.model_dir, held_out)
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
    split = eval_split(config.val_split, info)
    eval_fn = data.make_input_fn(dataset, split, config.batch_size, training=False, **common) if split else None
    record_held_out(config.model_dir, held_out)
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
    )
