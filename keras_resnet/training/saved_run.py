"""The layout of a training run's model dir, shared by the trainer and the exporters.

<model_dir>/config.json        {"model": registry name, "model_kwargs": {...},
                                "preprocessing": {"mode": ..., "mean_file": ...},
                                "class_names": [...] | null,
                                "record": the network's `keras_resnet.record.Record`, ...}
<model_dir>/pixel_mean.npy     the training set's mean image, for mode "pixel_mean"
<model_dir>/checkpoints/       tf.train.CheckpointManager files: Checkpoint(model=...,
                               optimizer=..., step=...)
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from keras_resnet import builders, weights
from keras_resnet.record import Record
from keras_resnet.weights import atomic_write_bytes

CONFIG_NAME = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
MEAN_FILE = "pixel_mean.npy"


def write_config(model_dir, config, pixel_mean=None):
    """Save the resolved run configuration (and the mean image) beside the checkpoints, with
    the record of the run's network when it is a registered one."""
    os.makedirs(model_dir, exist_ok=True)
    if pixel_mean is not None:
        with tempfile.TemporaryFile() as buffer:
            np.save(buffer, np.asarray(pixel_mean, dtype="float32"))
            buffer.seek(0)
            atomic_write_bytes(os.path.join(model_dir, MEAN_FILE), buffer.read())
    if config.get("model"):
        config = {**config, "record": run_record(config, pixel_mean).to_json()}
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(os.path.join(model_dir, CONFIG_NAME), text.encode())


def read_config(model_dir):
    """The run configuration of `model_dir`, or a ValueError saying what is missing."""
    path = os.path.join(model_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{model_dir!r} is not a training run dir: {CONFIG_NAME} is missing")
    with open(path) as f:
        return json.load(f)


def _mean(model_dir, config):
    spec = config.get("preprocessing") or {}
    return np.load(os.path.join(model_dir, spec["mean_file"])) if spec.get("mean_file") else None


def run_record(config, pixel_mean=None):
    """The Record of a run's network: its architecture (registry name and builder arguments),
    the run's preprocessing and class names, and its evaluation view (a centre crop of the
    training size; ImageNet-stem nets from the shorter side resized in the ratio 256:224)."""
    if config.get("record"):
        return Record.from_json(config["record"])
    if not config.get("model"):
        raise ValueError("the run trained a model from a model_fn, which no registered builder rebuilds")
    builder = builders.get_builder(config["model"])
    kwargs = dict(config.get("model_kwargs") or {})
    known = {k: kwargs[k] for k in builders.ARCHITECTURE_ARGS if kwargs.get(k) is not None}
    architecture = builders.architecture_of(builder.spec, builder.residual, **known)
    preprocessing = config.get("preprocessing") or {"mode": "caffe"}
    crop = architecture.input_shape[0]
    resize = round(crop * 256 / 224) if architecture.spec.stem == "imagenet" and crop else None
    if config.get("eval_view"):  # what the data layer's centre view did in training (keras_resnet.data.eval_view)
        resize, crop = config["eval_view"]["resize"], config["eval_view"]["crop"]
    return Record(
        architecture,
        preprocess_mode=preprocessing["mode"],
        mean=pixel_mean,
        class_names=config.get("class_names"),
        eval_resize=resize,
        eval_crop=crop,
        weights={"source": f"trained: {config.get('dataset') or 'own data'}, {config.get('train_steps')} steps"},
    )


def record_of(model_dir):
    """The Record of the run in `model_dir` (what `keras_resnet.load(model_dir)` carries)."""
    config = read_config(model_dir)
    return run_record(config, _mean(model_dir, config))


def preprocessing(model_dir, config):
    """(mode, mean) of the run, the mean image loaded for mode "pixel_mean"."""
    spec = config.get("preprocessing", {"mode": "caffe"})
    return spec["mode"], _mean(model_dir, config)


def build_model(config, model_dir=None):
    """A fresh model of the run's architecture, carrying the run's record (weights not loaded)."""
    record = record_of(model_dir) if model_dir is not None else run_record(config)
    return builders.from_record(record)


def latest_checkpoint(model_dir):
    """Path prefix of the newest checkpoint, or a ValueError naming the dir searched."""
    import tensorflow as tf

    directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    path = tf.train.latest_checkpoint(directory)
    if path is None:
        raise ValueError(f"no checkpoint in {directory!r}: train first, or pass a .keras file")
    return path


def restore_model(model_dir):
    """(model, config) with the newest checkpoint's weights; optimizer state is ignored. The
    model is a keras_resnet Network carrying the run's record."""
    import tensorflow as tf

    config = read_config(model_dir)
    path = latest_checkpoint(model_dir)
    model = build_model(config, model_dir)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model, config


def open_run(model_dir):
    """`weights.register_directory_reader`'s reader: (record, read) of a run dir."""
    model, _ = restore_model(model_dir)
    arrays = weights.model_arrays(model)
    return model.record, lambda build: arrays
