"""Where an exported model comes from: a training run dir, a `.keras` file, or a builder.

Each source yields the Keras model together with what serving needs beside its weights, read
from the network's record (`keras_resnet.record`): the preprocessing its weights expect and
its class names; and a serving name and the data set it was trained on (int8 calibration).
A preprocessing mode is taken from the caller only where nothing records one, and is then
required; one that contradicts the record is a ValueError.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_resnet import run_dir
from keras_resnet import weights as weights_lib
from keras_resnet.builders import with_data_format
from keras_resnet.loading import load
from keras_resnet.preprocessing import check_mode
from keras_resnet.record import Record, check_preprocessing


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A Keras classifier and the facts about it that the serving graph bakes in.

    `record` is the network's `keras_resnet.record.Record` with the preprocessing and class
    names served (what the exports carry as metadata); sources built by hand may omit it.
    `val_split` is the part of the training images a run held out: calibration never reads it.
    """

    model: object
    preprocess_mode: str
    mean: np.ndarray | None = None
    class_names: tuple | None = None
    name: str = "model"
    dataset: str | None = None
    data_dir: str | None = None
    record: Record | None = None
    val_split: float = 0.0

    @property
    def image_size(self):
        """(height, width) of the model's input: the serving graph's crop size."""
        _, height, width, channels = self.model.input_shape
        return height, width

    def record_text(self):
        """The record's JSON text for an export's metadata, with the preprocessing and class
        names served; "null" for a model built by hand that is no keras_resnet network."""
        record = self.record
        if record is None:
            try:
                record = Record(weights_lib.describe(self.model))
            except ValueError:
                return json.dumps(None)
        served = record.replace(preprocess_mode=self.preprocess_mode, mean=self.mean, class_names=self.class_names)
        return served.to_text()


RECORD_ASSET = os.path.join("assets.extra", "keras_resnet_record.json")


def write_record(export_dir, source):
    """Put `source`'s record into a SavedModel dir, as assets.extra/keras_resnet_record.json."""
    path = os.path.join(export_dir, RECORD_ASSET)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(source.record_text())


def read_record(export_dir):
    """The Record a SavedModel dir carries (None where it carries none)."""
    path = os.path.join(export_dir, RECORD_ASSET)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        data = json.load(f)
    return None if data is None else Record.from_json(data)


def read_labels(path):
    """Class names from a text file, one per line (line i names class i): a blank line before
    the last name or a name given twice is an error naming its line."""
    if not os.path.isfile(path):
        raise ValueError(f"labels file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    first_line = {}
    for number, name in enumerate(names, 1):
        if not name:
            raise ValueError(f"labels file {path!r} line {number} is blank: line i names class i-1, one name a line")
        if name in first_line:
            raise ValueError(f"labels file {path!r} line {number} repeats {name!r} of line {first_line[name]}")
        first_line[name] = number
    if not names:
        raise ValueError(f"labels file {path!r} names no class")
    return tuple(names)


def load_mean(path):
    """A mean image (HxWx3) or per-channel mean (3,) saved with numpy.save."""
    if not os.path.isfile(path):
        raise ValueError(f"mean file {path!r} does not exist")
    return np.load(path).astype("float32")


def _check(source):
    """Refuse a source the serving graph cannot wrap, naming what is wrong. A channels_first
    network is served as its channels_last twin (same weights): clients send HWC images."""
    if getattr(source.model, "record", None) is not None:
        model = with_data_format(source.model, "channels_last")
        record = source.record and source.record.replace(architecture=model.record.architecture)
        source = dataclasses.replace(source, model=model, record=record)
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


def _class_names(record, class_names, where):
    """The recorded class names, or the given ones where none are recorded; given names that
    differ from recorded ones are a ValueError."""
    recorded = record.class_names if record is not None else None
    if class_names is None:
        return recorded
    class_names = tuple(class_names)
    if recorded is not None and recorded != class_names:
        raise ValueError(
            f"the labels given ({len(class_names)} names, first {class_names[:3]}) contradict the class names "
            f"{where} record ({len(recorded)} names, first {recorded[:3]}): leave them out"
        )
    return class_names


def _fixed_size(record):
    """An input shape of fixed size for a record whose network takes any size: its
    evaluation crop (None where the size is already fixed)."""
    shape = record.architecture.input_shape
    if shape is not None and None not in shape[:2]:
        return None
    if record.eval_crop is None:
        raise ValueError(
            "the network takes any input size and records no evaluation crop: build it with input_shape=(H, W, 3)"
        )
    return (record.eval_crop, record.eval_crop, 3)


def _from_loaded(loaded, *, class_names, name, dataset, data_dir, where, val_split=0.0):
    return _check(
        ModelSource(
            model=loaded.model,
            preprocess_mode=loaded.record.preprocess_mode,
            mean=loaded.record.mean,
            class_names=_class_names(loaded.record, class_names, where),
            name=name,
            dataset=dataset,
            data_dir=data_dir,
            record=loaded.record,
            val_split=val_split,
        )
    )


def from_run_dir(model_dir, *, preprocess_mode=None, class_names=None, name=None):
    """The newest checkpoint of a training run, with the run's record (preprocessing, class
    names); served under the run dir's name unless `name` is given."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} is not a directory")
    training = run_dir.training_config(model_dir)
    loaded = load(model_dir, preprocess_mode=preprocess_mode)
    return _from_loaded(
        loaded,
        class_names=class_names,
        name=name or os.path.basename(os.path.normpath(os.path.abspath(model_dir))),
        dataset=training.get("dataset"),
        data_dir=training.get("data_dir"),
        val_split=training.get("val_split") or 0.0,
        where=f"the run {model_dir!r}",
    )


def from_keras_file(path, *, preprocess_mode=None, mean=None, class_names=None, name=None, dataset=None, data_dir=None):
    """A model saved with `model.save("x.keras")`, with the preprocessing its record holds;
    `preprocess_mode` (and `mean`) only for a file that records none, and then required."""
    if not os.path.isfile(path) or not path.endswith(".keras"):
        raise ValueError(f"keras_file {path!r} is not an existing .keras file")
    record, _ = weights_lib.read_record(path)
    check_preprocessing(record, preprocess_mode, mean, where=repr(path))
    loaded = load(path, preprocess_mode=preprocess_mode, mean=mean, input_shape=_fixed_size(record))
    return _from_loaded(
        loaded,
        class_names=class_names,
        name=name or os.path.basename(path)[: -len(".keras")],
        dataset=dataset,
        data_dir=data_dir,
        where=f"{path!r}",
    )


def from_builder(
    model_name,
    *,
    weights=None,
    preprocess_mode=None,
    mean=None,
    class_names=None,
    name=None,
    dataset=None,
    data_dir=None,
    **kwargs,
):
    """A registered architecture (e.g. "resnet50"), rebuilt as `weights` record it (any kind
    the builders take); preprocessing from the record, or `preprocess_mode` (then required)
    for weights that record none (a plain `model.save_weights` file) or none at all."""
    from keras_resnet.builders import get_builder

    builder = get_builder(model_name)
    if weights is not None and not os.path.exists(weights):
        raise ValueError(f"weights file {weights!r} does not exist")
    recorded = weights_lib.recorded(weights)
    if recorded is not None and "input_shape" not in kwargs:
        fixed = _fixed_size(recorded)
        kwargs = {**kwargs, **({"input_shape": fixed} if fixed else {})}
    model = builder(weights=weights, **{"data_format": "channels_last", **kwargs})
    where = f"weights {weights!r}" if weights is not None else f"an untrained {model_name}"
    mode, mean = check_preprocessing(model.record, preprocess_mode, mean, where=where)
    record = model.record.replace(preprocess_mode=mode, mean=mean)
    return _check(
        ModelSource(
            model,
            mode,
            mean,
            _class_names(record, class_names, where),
            name or model_name,
            dataset,
            data_dir,
            record,
        )
    )
