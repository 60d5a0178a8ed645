"""Where an exported model comes from: a training run dir, a `.keras` file, or a builder.

Each source yields the Keras model together with what serving needs beside its weights:
the preprocessing its weights expect, its class names, a serving name and the data set it
was trained on (for int8 calibration).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_resnet import saved_run
from keras_resnet.preprocessing import check_mode


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A Keras classifier and the facts about it that the serving graph bakes in."""

    model: object
    preprocess_mode: str
    mean: np.ndarray | None = None
    class_names: tuple | None = None
    name: str = "model"
    dataset: str | None = None
    data_dir: str | None = None

    @property
    def image_size(self):
        """(height, width) of the model's input: the serving graph's crop size."""
        _, height, width, channels = self.model.input_shape
        return height, width


def read_labels(path):
    """Class names from a text file, one per line (line i names class i)."""
    if not os.path.isfile(path):
        raise ValueError(f"labels file {path!r} does not exist")
    with open(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    if not names:
        raise ValueError(f"labels file {path!r} names no class")
    return names


def load_mean(path):
    """A mean image (HxWx3) or per-channel mean (3,) saved with numpy.save."""
    if not os.path.isfile(path):
        raise ValueError(f"mean file {path!r} does not exist")
    return np.load(path).astype("float32")


def _check(source):
    """Refuse a source the serving graph cannot wrap, naming what is wrong."""
    check_mode(source.preprocess_mode, source.mean)
    shape = source.model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
        raise ValueError(
            f"model input shape {shape!r} is not (batch, height, width, 3) with a fixed size: "
            "build it with input_shape=(H, W, 3) to export it"
        )
    classes = source.model.output_shape[-1]
    if len(source.model.output_shape) != 2:
        raise ValueError(
            f"model output shape {source.model.output_shape!r} is not (batch, classes): export needs include_top=True"
        )
    if source.class_names is not None and len(source.class_names) != classes:
        raise ValueError(f"{len(source.class_names)} class names given for a model with {classes} classes")
    return source


def from_run_dir(model_dir, *, class_names=None, name=None):
    """The newest checkpoint of a training run, with the run's own preprocessing."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} is not a directory")
    model, config = saved_run.restore_model(model_dir)
    mode, mean = saved_run.preprocessing(model_dir, config)
    names = class_names if class_names is not None else config.get("class_names")
    return _check(
        ModelSource(
            model=model,
            preprocess_mode=mode,
            mean=mean,
            class_names=tuple(names) if names is not None else None,
            name=name or config["model"],
            dataset=config.get("dataset"),
            data_dir=config.get("data_dir"),
        )
    )


def from_keras_file(path, *, preprocess_mode, mean=None, class_names=None, name=None, dataset=None, data_dir=None):
    """A model saved with `model.save("x.keras")`; its preprocessing must be given."""
    import keras

    import keras_resnet.blocks  # noqa: F401  registers ZeroPadShortcut for deserialisation

    if not os.path.isfile(path) or not path.endswith(".keras"):
        raise ValueError(f"keras_file {path!r} is not an existing .keras file")
    model = keras.saving.load_model(path, compile=False)
    return _check(
        ModelSource(
            model,
            preprocess_mode,
            mean,
            class_names,
            name or os.path.basename(path)[: -len(".keras")],
            dataset,
            data_dir,
        )
    )


def from_builder(
    model_name,
    *,
    weights=None,
    preprocess_mode,
    mean=None,
    class_names=None,
    name=None,
    dataset=None,
    data_dir=None,
    **kwargs,
):
    """A registered architecture (e.g. "resnet50"), with weights from a `.weights.h5` file."""
    from keras_resnet.builders import get_builder

    builder = get_builder(model_name)
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"weights file {weights!r} does not exist")
    model = builder(**kwargs)
    if weights is not None:
        model.load_weights(weights)
    return _check(ModelSource(model, preprocess_mode, mean, class_names, name or model_name, dataset, data_dir))
