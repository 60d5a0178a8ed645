"""The one description of a network: what it is, and what its weights expect of an image.

A `Record` travels with the weights, the same JSON object everywhere: the config of a
`.keras` file (a keras_resnet model's `get_config`), the root attribute "keras_resnet" of
keras_resnet's `.weights.h5`, config.json's "record" in a training run dir, and the metadata
of every export (a SavedModel's assets.extra/keras_resnet.json, ONNX metadata_props):

    {"format": 2,
     "architecture": {"block", "blocks_per_stage", "widths", "stem", "residual", "shortcut",
                      "stride_in", "bn_epsilon", "bn_momentum", "include_top", "pooling",
                      "classes", "classifier_activation", "input_shape", "data_format"},
     "preprocessing": {"mode": "caffe" | "torch" | "tf" | "pixel_mean" | "unit" | "none" | null,
                       "mean": null | the mean image (HxWx3) or 3 channel means},
     "class_names": null | ["tench", ...],
     "eval_view": {"resize": shorter side before the crop (null: none), "crop": side},
     "weights": null | {"name", "source", "top1", "top5", "recipe", ...}}

`input_shape` is (height, width, channels) whatever the data format; "data_format" is Keras'
"channels_last" or "channels_first" (records written without it mean channels_last). The
weights are the same in both layouts. Format 1 (`.weights.h5` files written before the
record) is read too. This module knows no
file layout: builders, `weights` and training read and write records through it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from keras_resnet import specs
from keras_resnet.preprocessing import MODES, check_mode

FORMAT_VERSION = 2
# Builder arguments the weights fix: a different value gives different outputs.
FIXED_BY_WEIGHTS = ("shortcut", "stride_in", "bn_epsilon")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything a builder needs to make this network again (spec + builder arguments)."""

    spec: specs.NetSpec
    residual: bool
    shortcut: str | None
    stride_in: str
    bn_epsilon: float
    include_top: bool
    classes: int | None
    bn_momentum: float = specs.BN_MOMENTUM
    pooling: str | None = None
    classifier_activation: str | None = "softmax"
    input_shape: tuple | None = None
    data_format: str = "channels_last"

    @property
    def name(self):
        """`resnet50`, `plain34`, `resnet56`: the registry name of the spec."""
        return f"{'resnet' if self.residual else 'plain'}{self.spec.depth}"

    def build_args(self):
        """The builder keyword arguments that make this network (spec and residual aside)."""
        fields = dataclasses.asdict(self)
        del fields["spec"], fields["residual"]
        fields["input_shape"] = self.layout_input_shape
        if not self.include_top:
            del fields["classes"]
        return fields

    @property
    def layout_input_shape(self):
        """`input_shape` ordered as the data format orders it: the Keras Input's shape."""
        return specs.in_layout(self.input_shape, self.data_format)

    def to_json(self):
        fields = dataclasses.asdict(self)
        spec = fields.pop("spec")
        return {**spec, **fields, "input_shape": None if self.input_shape is None else list(self.input_shape)}

    @classmethod
    def from_json(cls, data):
        spec = specs.NetSpec(data["block"], tuple(data["blocks_per_stage"]), tuple(data["widths"]), data["stem"])
        rest = {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}
        rest.pop("spec", None)
        if rest.get("input_shape") is not None:
            rest["input_shape"] = tuple(rest["input_shape"])
        return cls(spec=spec, **rest)


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """A network's architecture and what its weights expect: preprocessing (mode, mean),
    class names, the evaluation view (resize, crop), and where the weights come from."""

    architecture: Architecture
    preprocess_mode: str | None = None
    mean: np.ndarray | None = None
    class_names: tuple | None = None
    eval_resize: int | None = None
    eval_crop: int | None = None
    weights: dict | None = None

    def __post_init__(self):
        if self.preprocess_mode is not None:
            check_mode(self.preprocess_mode, self.mean)
        if self.mean is not None:
            object.__setattr__(self, "mean", np.asarray(self.mean, dtype="float32"))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))

    def __eq__(self, other):
        return isinstance(other, Record) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(self.to_text())

    def replace(self, **changes):
        """A copy with `changes` (fields of Record)."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        return {
            "format": FORMAT_VERSION,
            "architecture": self.architecture.to_json(),
            "preprocessing": {
                "mode": self.preprocess_mode,
                "mean": None if self.mean is None else self.mean.tolist(),
            },
            "class_names": None if self.class_names is None else list(self.class_names),
            "eval_view": {"resize": self.eval_resize, "crop": self.eval_crop},
            "weights": self.weights,
        }

    def to_text(self):
        """The JSON text every file and export carries (keys sorted: equal records, equal text)."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data):
        """A Record from its JSON object (format 2, or the format-1 metadata of older files)."""
        version = data.get("format")
        if version == 1:
            return cls(
                Architecture.from_json(data["architecture"]),
                preprocess_mode=data["preprocessing"]["mode"],
                weights={"source": data["source"]} if data.get("source") else None,
            )
        if version != FORMAT_VERSION:
            raise ValueError(f"record format {version!r} is not one of (1, {FORMAT_VERSION})")
        preprocessing, view = data["preprocessing"], data.get("eval_view") or {}
        return cls(
            Architecture.from_json(data["architecture"]),
            preprocess_mode=preprocessing["mode"],
            mean=preprocessing.get("mean"),
            class_names=data.get("class_names"),
            eval_resize=view.get("resize"),
            eval_crop=view.get("crop"),
            weights=data.get("weights"),
        )

    @classmethod
    def from_text(cls, text):
        return cls.from_json(json.loads(text))


def same(a, b):
    """Equality, with floats (bn_epsilon) compared to within a JSON round trip."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def contradictions(recorded, given):
    """[(argument, recorded value, given value)] where an explicit builder argument differs from
    what the weights fix: shortcut, stride_in (bottleneck nets), bn_epsilon, and classes when
    both keep the head. `given` holds only the arguments the caller passed."""
    found = []
    for arg in FIXED_BY_WEIGHTS:
        if arg == "stride_in" and recorded.spec.block == "basic":
            continue
        if given.get(arg) is not None and not same(getattr(recorded, arg), given[arg]):
            found.append((arg, getattr(recorded, arg), given[arg]))
    keeps_head = given.get("include_top", True) and recorded.include_top
    if keeps_head and given.get("classes") is not None and given["classes"] != recorded.classes:
        found.append(("classes", recorded.classes, given["classes"]))
    return found


def check_preprocessing(record, preprocess_mode=None, mean=None, where="the weights"):
    """The record's (mode, mean), or the given ones where it records none (then required); a
    given mode or mean that contradicts the record is a ValueError naming both."""
    recorded = record.preprocess_mode if record is not None else None
    if recorded is None:
        if preprocess_mode is None:
            raise ValueError(
                f"{where} record no preprocessing: give the mode the weights expect (one of {', '.join(MODES)}; "
                "pixel_mean with its mean)"
            )
        check_mode(preprocess_mode, mean)
        return preprocess_mode, None if mean is None else np.asarray(mean, dtype="float32")
    if preprocess_mode is not None and preprocess_mode != recorded:
        raise ValueError(
            f"preprocess_mode={preprocess_mode!r} contradicts {where}, which record preprocessing mode {recorded!r}: "
            "leave it out"
        )
    if mean is not None and (record.mean is None or not np.array_equal(np.asarray(mean, "float32"), record.mean)):
        raise ValueError(f"a mean was given, but {where} record {'another' if record.mean is not None else 'none'}")
    return recorded, record.mean
