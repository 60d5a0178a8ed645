"""Weight sources for the builders, checked against the requested network before it is built.

    weights=None              random initialisation (He et al., section 3.4)
    weights="imagenet"        ResNet50/101/152 (v1: shortcut B, stride in the first 1x1): the
                              files keras.applications publishes, converted from the paper
                              authors' Caffe models, fetched once by `keras.utils.get_file` into
                              $KERAS_HOME/models (default ~/.keras/models) and never again
    weights="x.h5"            such a keras.applications file (legacy Keras h5) given by path
    weights="x.weights.h5"    keras_resnet's own weights file (`save`, `keras_resnet.convert`)
    weights="x.keras"         a saved keras_resnet model
    weights="<dir>"           a training run dir (config.json + checkpoints/, `saved_run`)

keras.applications' convs carry a bias, keras_resnet's do not: a conv `Wx + b` followed by BN
equals the conv `Wx` followed by the same BN with moving mean `mean - b`, so the bias is folded.

Metadata of keras_resnet's `.weights.h5`: Keras' own weights file with one root attribute
"keras_resnet", a JSON object

    {"format": 1,
     "architecture": {"block", "blocks_per_stage", "widths", "stem", "residual", "shortcut",
                      "stride_in", "bn_epsilon", "include_top", "classes"},
     "preprocessing": {"mode": "caffe" | "torch" | "tf"},
     "source": "where the weights came from"}

A `.weights.h5` without it (plain `model.save_weights`) loads with Keras' own checks only.

The published files are the `IMAGENET_FILES` table, keyed by (depth, include_top): file name,
address and hash (md5) exactly as keras.applications has them. A cached file whose hash differs is an
error (it is neither used, nor deleted, nor downloaded over); `KERAS_RESNET_OFFLINE=1` forbids
downloading; `KERAS_HOME` is read at call time. Tests and mirrors may replace table entries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile

import h5py
import keras
import numpy as np
from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES
from keras.src.backend.config import keras_home
from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group
from keras.src.utils.file_utils import hash_file

from keras_resnet import saved_run, specs
from keras_resnet.builders import build, default_name
from keras_resnet.preprocessing import MODES

METADATA_ATTR = "keras_resnet"
FORMAT_VERSION = 1
OFFLINE_ENV = "KERAS_RESNET_OFFLINE"
PUBLISHED_DEPTHS = (50, 101, 152)
# What keras.applications' ResNet v1 builds: the architecture its files hold.
KERAS_APPLICATIONS_STRIDE_IN = "1x1"
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
# Builder arguments a weights file fixes beyond the spec, and which `build_kwargs` returns.
BUILD_ARGS = ("shortcut", "stride_in", "bn_epsilon")
FILE_MODES = tuple(mode for mode in MODES if mode != "pixel_mean")
PATH_KINDS = "a keras.applications .h5 file, a keras_resnet .weights.h5 or .keras file, or a training run dir"


@dataclasses.dataclass(frozen=True)
class PublishedFile:
    """One file keras.applications publishes: cache file name, address, md5."""

    fname: str
    origin: str
    file_hash: str


def _published_files():
    """(depth, include_top) -> PublishedFile, from keras.applications' own constants."""
    files = {}
    for depth in PUBLISHED_DEPTHS:
        for include_top, file_hash in zip((True, False), WEIGHTS_HASHES[f"resnet{depth}"]):
            fname = f"resnet{depth}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
            files[(depth, include_top)] = PublishedFile(fname, BASE_WEIGHTS_PATH + fname, file_hash)
    return files


IMAGENET_FILES = _published_files()


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a set of weights fits: the spec plus the builder arguments that shape the weights."""

    spec: specs.NetSpec
    residual: bool
    shortcut: str | None
    stride_in: str
    bn_epsilon: float
    include_top: bool
    classes: int | None

    @property
    def name(self):
        return default_name(self.spec, self.residual)

    def to_json(self):
        fields = dataclasses.asdict(self)
        return {**fields.pop("spec"), **fields}

    @classmethod
    def from_json(cls, data):
        spec = specs.NetSpec(data["block"], tuple(data["blocks_per_stage"]), tuple(data["widths"]), data["stem"])
        rest = {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name != "spec"}
        return cls(spec=spec, **rest)


@dataclasses.dataclass(frozen=True)
class Source:
    """Weights checked against a request: where from, what they fit, and their values by layer
    and variable name (None for a `.weights.h5` without metadata, which Keras loads itself)."""

    weights: object
    path: str
    architecture: Architecture | None
    arrays: dict | None


def published_architecture(depth, include_top):
    """The network a keras.applications ResNet v1 file of this depth holds."""
    return Architecture(
        specs.imagenet_spec(depth),
        True,
        "B",
        KERAS_APPLICATIONS_STRIDE_IN,
        KERAS_APPLICATIONS_BN_EPSILON,
        include_top,
        1000 if include_top else None,
    )


def resolve(weights, spec, *, residual, shortcut, stride_in, bn_epsilon, include_top, classes):
    """Check `weights` against the requested network, then read them; nothing is built before
    the check except the model a run dir or .keras file holds."""
    head = classes if include_top else None
    requested = Architecture(spec, residual, shortcut, stride_in, bn_epsilon, include_top, head)
    if weights == "imagenet":
        depth = _published_depth(requested)
        _check_fits(weights, requested, published_architecture(depth, include_top))
        path = fetch_imagenet(depth, include_top)
    else:
        path = _existing_path(weights)
    found, read_arrays = _OPENERS[_kind(path)](path)
    if found is not None:
        _check_fits(weights, requested, found)
    return Source(weights, path, found, read_arrays())


def load(model, source):
    """Set `model`'s weights from a resolved `Source`."""
    if source.arrays is None:
        model.load_weights(source.path)
    else:
        assign(model, source.arrays, source.weights)
    return model


def _published_depth(requested):
    """The depth of the published file for this request, or a ValueError naming what exists."""
    for depth in PUBLISHED_DEPTHS:
        if requested.residual and requested.spec == specs.imagenet_spec(depth):
            return depth
    raise ValueError(
        f"weights='imagenet' is published only for ResNet50, ResNet101 and ResNet152 (keras.applications' "
        f"files of the paper's models), not for {requested.name} ({requested.spec.stem}, {requested.spec.block} "
        f"blocks {requested.spec.blocks_per_stage}); for ResNet-18/34 convert torchvision's weights: "
        "python -m keras_resnet.convert torchvision resnet34.pth resnet34.weights.h5"
    )


def _check_fits(weights, requested, found):
    """ValueError naming each way the weights differ from the requested network, and the fix."""
    if (found.spec, found.residual) != (requested.spec, requested.residual):
        raise ValueError(
            f"weights={weights!r} hold a {found.name} ({found.spec.block} blocks {found.spec.blocks_per_stage}, "
            f"widths {found.spec.widths}), not a {requested.name} ({requested.spec.block} blocks "
            f"{requested.spec.blocks_per_stage}, widths {requested.spec.widths})"
        )
    differ = [
        arg
        for arg in BUILD_ARGS
        if not (arg == "stride_in" and found.spec.block == "basic")
        and not _same(getattr(found, arg), getattr(requested, arg))
    ]
    if differ:
        wanted = ", ".join(f"{arg}={getattr(found, arg)!r}" for arg in differ)
        given = ", ".join(f"{arg}={getattr(requested, arg)!r}" for arg in differ)
        raise ValueError(
            f"weights={weights!r} were made for {wanted}, but the model is built with {given}: pass "
            f"{wanted} (keras_resnet.weights.build_kwargs(weights) gives them)"
        )
    if requested.include_top and not found.include_top:
        raise ValueError(f"weights={weights!r} hold no classifier head: pass include_top=False")
    if requested.include_top and found.classes != requested.classes:
        raise ValueError(
            f"classes={requested.classes} with include_top=True, but the head of weights={weights!r} has "
            f"{found.classes} classes: pass classes={found.classes}, or include_top=False and add a new head "
            "with keras_resnet.finetune.with_new_head"
        )


def _same(a, b):
    """Equality, with floats (bn_epsilon) compared to within a JSON round trip."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def cache_dir():
    """Where get_file keeps downloads: $KERAS_HOME read now (Keras reads it once, at import),
    else Keras' own home (~/.keras)."""
    return os.environ.get("KERAS_HOME") or keras_home()


def fetch_imagenet(depth, include_top):
    """Path of the published file: the cached copy when its hash matches, else downloaded once.

    A missing file without network (or with KERAS_RESNET_OFFLINE set), or a cached file with
    another hash, is a FileNotFoundError saying which file to place where.
    """
    entry = IMAGENET_FILES[(depth, include_top)]
    path = os.path.join(cache_dir(), "models", entry.fname)
    if os.path.exists(path):
        algorithm = "sha256" if len(entry.file_hash) == 64 else "md5"
        actual = hash_file(path, algorithm=algorithm)
        if actual != entry.file_hash:
            raise FileNotFoundError(_placement(entry, path, f"{path} has {algorithm} {actual}, not the published one"))
    elif os.environ.get(OFFLINE_ENV):
        raise FileNotFoundError(_placement(entry, path, f"it is not in the cache and {OFFLINE_ENV} is set"))
    try:
        return keras.utils.get_file(
            entry.fname, entry.origin, file_hash=entry.file_hash, cache_subdir="models", cache_dir=cache_dir()
        )
    except Exception as error:  # get_file raises a bare Exception when the download fails
        raise FileNotFoundError(_placement(entry, path, f"the download failed ({error})")) from error


def _placement(entry, path, reason):
    return (
        f"weights='imagenet' needs {entry.fname} (hash {entry.file_hash}), but {reason}. "
        f"Download it from {entry.origin} and place it at {path}, or pass its path as weights=."
    )


def _existing_path(weights):
    """The path `weights` names, or a ValueError saying what is allowed."""
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights={weights!r} must be None, 'imagenet' or a path to {PATH_KINDS}")
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(f"weights={weights!r} is neither None, 'imagenet' nor an existing path to {PATH_KINDS}")
    return path


def _kind(path):
    """Which reader a path needs, from its form; ValueError for anything else."""
    if os.path.isdir(path):
        return "run_dir"
    if path.endswith(".weights.h5"):
        return "weights_h5"
    if path.endswith((".h5", ".hdf5")):
        return "legacy_h5"
    if path.endswith(".keras"):
        return "keras"
    raise ValueError(f"weights={path!r} is not {PATH_KINDS} (by its name)")


# Each opener: path -> (Architecture or None, function reading the arrays).
def _open_weights_h5(path):
    """keras_resnet's own file: its metadata now, its values later through a model of that architecture."""
    metadata = read_metadata(path)
    if metadata is None:
        return None, lambda: None
    architecture = Architecture.from_json(metadata["architecture"])

    def read_arrays():
        model = _build(architecture)
        model.load_weights(path)
        return _model_arrays(model)

    return architecture, read_arrays


def _open_keras_applications(path):
    names, arrays = _read_keras_applications(path)
    return _keras_applications_architecture(path, names, arrays), lambda: arrays


def _open_run_dir(path):
    model, _ = saved_run.restore_model(path)
    return describe(model), lambda: _model_arrays(model)


def _open_keras(path):
    model = keras.saving.load_model(path, compile=False)
    return describe(model), lambda: _model_arrays(model)


_OPENERS = {
    "weights_h5": _open_weights_h5,
    "legacy_h5": _open_keras_applications,
    "run_dir": _open_run_dir,
    "keras": _open_keras,
}


def read_metadata(path):
    """The metadata dict of a keras_resnet `.weights.h5`, or None for a file without it."""
    with h5py.File(path, "r") as f:
        text = f.attrs.get(METADATA_ATTR)
    if text is None:
        return None
    metadata = json.loads(text)
    if metadata.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path!r}: metadata format {metadata.get('format')!r} is not {FORMAT_VERSION}")
    return metadata


def _build(architecture):
    """A model of `architecture` with random weights, any input size."""
    return build(
        architecture.spec,
        residual=architecture.residual,
        shortcut=architecture.shortcut,
        stride_in=architecture.stride_in,
        bn_epsilon=architecture.bn_epsilon,
        include_top=architecture.include_top,
        classes=architecture.classes,
        input_shape=(None, None, 3),
    )


def _model_arrays(model):
    """{layer name: {variable name: value}} of a built model."""
    return {
        layer.name: {variable.name: variable.numpy() for variable in layer.weights}
        for layer in model.layers
        if layer.weights
    }


def assign(model, arrays, origin):
    """Set every weighted layer of `model` by layer and variable name; ValueError naming the
    first layer the weights lack or whose shapes differ. Layers only the weights have (a head
    the model drops) are ignored."""
    for layer in model.layers:
        if not layer.weights:
            continue
        values = arrays.get(layer.name)
        if values is None:
            raise ValueError(f"weights={origin!r} have no values for layer {layer.name!r}")
        for variable in layer.weights:
            value = values.get(variable.name)
            if value is None or tuple(value.shape) != tuple(variable.shape):
                found = None if value is None else tuple(value.shape)
                raise ValueError(
                    f"weights={origin!r}: {layer.name}/{variable.name} has shape {found}, "
                    f"the model needs {tuple(variable.shape)}"
                )
            variable.assign(value)


def _read_keras_applications(path):
    """(layer names, ported arrays) of a legacy Keras h5 file as keras.applications writes it."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ValueError(f"weights={path!r} is not a legacy Keras h5 weights file (no layer_names)")
        names = load_attributes_from_hdf5_group(group, "layer_names")
        layers = {}
        for name in names:
            weight_names = load_attributes_from_hdf5_group(group[name], "weight_names")
            if weight_names:
                layers[name] = {_variable_name(w): np.asarray(group[name][w]) for w in weight_names}
    return names, port_keras_applications(layers)


def _variable_name(weight_name):
    """ "conv1_conv/kernel:0" (Keras 2) or "conv1_conv/kernel" (Keras 3) -> "kernel"."""
    return weight_name.split("/")[-1].split(":")[0]


def port_keras_applications(layers):
    """keras.applications arrays -> keras_resnet's: conv biases folded into the next BN.

    BN(Wx + b) with moving mean m equals BN(Wx) with moving mean m - b.
    """
    ported = {}
    for name, values in layers.items():
        if name.endswith("_conv"):
            ported[name] = {"kernel": values["kernel"]}
        elif name.endswith("_bn"):
            bias = layers.get(name[: -len("_bn")] + "_conv", {}).get("bias", 0.0)
            ported[name] = {**values, "moving_mean": values["moving_mean"] - bias}
        else:
            ported[name] = values
    return ported


def _keras_applications_architecture(path, names, arrays):
    """The architecture a keras.applications ResNet v1 file holds, from its layer names."""
    names = set(names)
    if "conv1_conv" not in names or "post_bn" in names or "conv2_block1_3_conv" not in names:
        raise ValueError(
            f"weights={path!r} is not a keras.applications ResNet50/101/152 (v1) weights file; allowed: {PATH_KINDS}"
        )
    blocks = _blocks_per_stage(names)
    widths = tuple(arrays[f"conv{s + 2}_block1_1_conv"]["kernel"].shape[-1] for s in range(len(blocks)))
    include_top = "predictions" in names
    return Architecture(
        specs.NetSpec("bottleneck", blocks, widths, "imagenet"),
        True,
        _shortcut_option(names, blocks),
        KERAS_APPLICATIONS_STRIDE_IN,
        KERAS_APPLICATIONS_BN_EPSILON,
        include_top,
        int(arrays["predictions"]["kernel"].shape[-1]) if include_top else None,
    )


def _blocks_per_stage(names):
    """Blocks in conv2_x, conv3_x, ... counted from `conv{s}_block{i}_1_conv` layer names."""
    blocks = []
    while f"conv{len(blocks) + 2}_block1_1_conv" in names:
        stage, count = len(blocks) + 2, 1
        while f"conv{stage}_block{count + 1}_1_conv" in names:
            count += 1
        blocks.append(count)
    if not blocks:
        raise ValueError("no conv2_block1_1_conv layer: not a keras_resnet / keras.applications ResNet")
    return tuple(blocks)


def _shortcut_option(names, blocks):
    """C: a projection on every block; B: on some; A: none (zero-padding shortcuts)."""
    projections = [f"conv{s + 2}_block{i + 1}_0_conv" in names for s, count in enumerate(blocks) for i in range(count)]
    if all(projections):
        return "C"
    return "B" if any(projections) else "A"


def describe(model):
    """The Architecture of a built keras_resnet model, read from its layer names and configs."""
    names = {layer.name for layer in model.layers}
    blocks = _blocks_per_stage(names)
    block = "bottleneck" if "conv2_block1_3_conv" in names else "basic"
    widths = tuple(model.get_layer(f"conv{s + 2}_block1_1_conv").filters for s in range(len(blocks)))
    residual = any(name.endswith("_add") for name in names)
    strided_3x3 = block == "bottleneck" and len(blocks) > 1 and model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    include_top = "predictions" in names
    return Architecture(
        specs.NetSpec(block, blocks, widths, "imagenet" if "pool1_pool" in names else "cifar"),
        residual,
        _shortcut_option(names, blocks) if residual else None,
        "3x3" if strided_3x3 else "1x1",
        float(model.get_layer("conv1_bn").epsilon),
        include_top,
        model.get_layer("predictions").units if include_top else None,
    )


def save(model, path, preprocessing_mode, source=""):
    """Write `model`'s weights as keras_resnet's `.weights.h5`: Keras' file plus the metadata."""
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"path={path!r} must end in .weights.h5")
    if preprocessing_mode not in FILE_MODES:
        raise ValueError(
            f"preprocessing_mode={preprocessing_mode!r} is not one of {FILE_MODES} "
            "(a weights file carries no mean image)"
        )
    metadata = {
        "format": FORMAT_VERSION,
        "architecture": describe(model).to_json(),
        "preprocessing": {"mode": preprocessing_mode},
        "source": source,
    }
    with tempfile.TemporaryDirectory() as tmp:
        staged = os.path.join(tmp, "staged.weights.h5")
        model.save_weights(staged)
        with h5py.File(staged, "a") as f:
            f.attrs[METADATA_ATTR] = json.dumps(metadata)
        with open(staged, "rb") as f:
            saved_run.atomic_write_bytes(path, f.read())


def build_kwargs(weights):
    """The builder arguments (shortcut, stride_in, bn_epsilon) the weights were made with, so
    that `ResNet50(weights=w, **build_kwargs(w))` loads them; {} where the defaults fit."""
    if weights is None or weights == "imagenet":
        return {}
    path = _existing_path(weights)
    kind = _kind(path)
    if kind == "run_dir":
        model_kwargs = saved_run.read_config(path).get("model_kwargs", {})
        return {arg: model_kwargs[arg] for arg in BUILD_ARGS if arg in model_kwargs}
    found, _ = _OPENERS[kind](path)
    return {} if found is None else {arg: getattr(found, arg) for arg in BUILD_ARGS}


def preprocessing(weights):
    """(mode, mean) of `preprocess_input` the weights expect: caffe for the published files,
    the recorded mode for keras_resnet files and run dirs; (None, None) where nothing says."""
    if weights is None:
        return None, None
    if weights == "imagenet":
        return "caffe", None
    path = _existing_path(weights)
    kind = _kind(path)
    if kind == "legacy_h5":
        return "caffe", None
    if kind == "run_dir":
        return saved_run.preprocessing(path, saved_run.read_config(path))
    metadata = read_metadata(path) if kind == "weights_h5" else None
    return (None if metadata is None else metadata["preprocessing"]["mode"]), None
