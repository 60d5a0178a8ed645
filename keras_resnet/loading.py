"""`keras_resnet.load`: a network from any file that records it, with what its weights expect.

    loaded = keras_resnet.load("runs/r56")              # or x.keras, x.weights.h5, keras.applications .h5
    scores = loaded.model(loaded.preprocess(images))    # images: RGB in 0..255
    loaded.record.class_names, loaded.record.eval_resize, loaded.record.eval_crop

Evaluation, the exporters and users all load networks here, so every tool believes the same
record (`keras_resnet.record`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_resnet import builders, weights
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.record import Record, check_preprocessing


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A loaded network (`model`, a keras_resnet Network carrying `record`) and its record."""

    model: object
    record: Record
    path: str

    @property
    def preprocess_mode(self):
        return self.record.preprocess_mode

    @property
    def mean(self):
        return self.record.mean

    @property
    def class_names(self):
        return self.record.class_names

    @property
    def name(self):
        """The architecture's registry name ("resnet50")."""
        return self.record.architecture.name

    def preprocess(self, images):
        """`images` (RGB, 0..255, channels last) as the weights expect them."""
        return preprocess_input(np.asarray(images, dtype="float32"), self.record.preprocess_mode, self.record.mean)


def load(path, *, input_shape=None, preprocess_mode=None, mean=None):
    """The network at `path` as its record describes it: a training run dir (newest
    checkpoint), a `.keras` file, keras_resnet's `.weights.h5`, or a keras.applications
    ResNet `.h5` file. Returns a `Loaded` (model, record, path).

    input_shape:      build the network for another input size, e.g. (None, None, 3) to
                      take any size (the weights do not depend on it); default: the recorded one.
    preprocess_mode:  only for files that record no preprocessing (a `.keras` file of a model
                      not built by keras_resnet), and then required; `mean` with "pixel_mean".
                      A mode or mean that contradicts the record is a ValueError naming both.

    A `.weights.h5` written by plain `model.save_weights` records no network: build it with
    its builder, `keras_resnet.ResNet50(weights=path, ...)`.
    """
    record, read = weights.read_record(path)
    if record is None:
        raise ValueError(
            f"{path!r} is a plain Keras weights file (model.save_weights): it records no network; build it with "
            "its builder and arguments, e.g. keras_resnet.ResNet50(weights=path, stride_in=..., classes=...)"
        )
    mode, mean = check_preprocessing(record, preprocess_mode, mean, where=repr(path))
    record = record.replace(preprocess_mode=mode, mean=mean)
    if input_shape is not None:
        architecture = dataclasses.replace(record.architecture, input_shape=tuple(input_shape))
        record = record.replace(architecture=architecture)
    model = builders.from_record(record)
    weights.assign(model, read(builders.from_record), path)
    return Loaded(model, record, str(path))
