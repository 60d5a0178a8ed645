"""The layout of a training run's model dir, shared by the trainer and the exporters.

<model_dir>/config.json        {"model": registry name, "model_kwargs": {...},
                                "preprocessing": {"mode": ..., "mean_file": ...}, ...}
<model_dir>/pixel_mean.npy     the training set's mean image, for mode "pixel_mean"
<model_dir>/checkpoints/       tf.train.CheckpointManager files: Checkpoint(model=...,
                               optimizer=..., step=...)
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

CONFIG_NAME = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
MEAN_FILE = "pixel_mean.npy"


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file and a rename: never half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_config(model_dir, config, pixel_mean=None):
    """Save the resolved run configuration (and the mean image) beside the checkpoints."""
    os.makedirs(model_dir, exist_ok=True)
    if pixel_mean is not None:
        with tempfile.TemporaryFile() as buffer:
            np.save(buffer, np.asarray(pixel_mean, dtype="float32"))
            buffer.seek(0)
            atomic_write_bytes(os.path.join(model_dir, MEAN_FILE), buffer.read())
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(os.path.join(model_dir, CONFIG_NAME), text.encode())


def read_config(model_dir):
    """The run configuration of `model_dir`, or a ValueError saying what is missing."""
    path = os.path.join(model_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{model_dir!r} is not a training run dir: {CONFIG_NAME} is missing")
    with open(path) as f:
        return json.load(f)


def preprocessing(model_dir, config):
    """(mode, mean) of the run, the mean image loaded for mode "pixel_mean"."""
    spec = config.get("preprocessing", {"mode": "caffe"})
    mean = None
    if spec.get("mean_file"):
        mean = np.load(os.path.join(model_dir, spec["mean_file"]))
    return spec["mode"], mean


def build_model(config):
    """A fresh model of the run's architecture (weights not loaded)."""
    from keras_resnet.builders import get_builder

    return get_builder(config["model"])(**config.get("model_kwargs", {}))


def latest_checkpoint(model_dir):
    """Path prefix of the newest checkpoint, or a ValueError naming the dir searched."""
    import tensorflow as tf

    directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    path = tf.train.latest_checkpoint(directory)
    if path is None:
        raise ValueError(f"no checkpoint in {directory!r}: train first, or pass a .keras file")
    return path


def restore_model(model_dir):
    """(model, config) with the newest checkpoint's weights; optimizer state is ignored."""
    import tensorflow as tf

    config = read_config(model_dir)
    path = latest_checkpoint(model_dir)
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model, config
