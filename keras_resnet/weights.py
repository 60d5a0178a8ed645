"""Weight sources for the builders, each read with the record of the network it holds.

    weights=None              random initialisation (He et al., section 3.4)
    weights="imagenet"        ResNet50/101/152 (v1: shortcut B, stride in the first 1x1): the
                              files keras.applications publishes, converted from the paper
                              authors' Caffe models, fetched once by `keras.utils.get_file` into
                              $KERAS_HOME/models (default ~/.keras/models) and never again
    weights="x.h5"            such a keras.applications file (legacy Keras h5) given by path
    weights="x.weights.h5"    keras_resnet's own weights file (`save`, `keras_resnet.convert`)
    weights="x.keras"         a saved keras_resnet model
    weights="<dir>"           a training run dir (read by `keras_resnet.run_dir`)

Every source says what it holds as a `keras_resnet.record.Record`: the published files by the
`published` table (caffe preprocessing, ImageNet's classes), keras_resnet's files by the record
they carry, a run dir by its config. A builder given `weights` rebuilds that network.

keras.applications' convs carry a bias, keras_resnet's do not: a conv `Wx + b` followed by BN
equals the conv `Wx` followed by the same BN with moving mean `mean - b`, so the bias is folded.

keras_resnet's `.weights.h5` is Keras' own weights file with one root attribute "keras_resnet":
the record's JSON text (`Record.to_text`). A `.weights.h5` without it (plain
`model.save_weights`) loads with Keras' own checks into the network the arguments describe.

The published files are the `IMAGENET_FILES` table, keyed by (depth, include_top): file name,
address and hash (md5) exactly as keras.applications has them. A cached file whose hash differs is an
error (it is neither used, nor deleted, nor downloaded over); `KERAS_RESNET_OFFLINE=1` forbids
downloading; `KERAS_HOME` is read at call time. Tests and mirrors may replace table entries.

    python -m keras_resnet.weights --list     # the published weights and their figures
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import zipfile

import h5py
import keras
import numpy as np

from keras_resnet import published, specs
from keras_resnet.preprocessing import imagenet_classes
from keras_resnet.record import Architecture, Record, check_preprocessing, contradictions
from keras_resnet.run_dir import atomic_write_bytes, is_url

METADATA_ATTR = "keras_resnet"
OFFLINE_ENV = "KERAS_RESNET_OFFLINE"
PUBLISHED_DEPTHS = (50, 101, 152)
# What keras.applications' ResNet v1 builds: the architecture its files hold.
KERAS_APPLICATIONS_STRIDE_IN = "1x1"
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
# Builder arguments a weights file fixes beyond the spec, and which `build_kwargs` returns.
BUILD_ARGS = ("shortcut", "stride_in", "bn_epsilon")
PATH_KINDS = "a keras.applications .h5 file, a keras_resnet .weights.h5 or .keras file, or a training run dir"


@dataclasses.dataclass(frozen=True)
class PublishedFile:
    """One file keras.applications publishes: cache file name, address, md5."""

    fname: str
    origin: str
    file_hash: str


def _published_files():
    """(depth, include_top) -> PublishedFile, from the `published` table of keras.applications' files."""
    files = {}
    for depth in PUBLISHED_DEPTHS:
        for include_top, file_hash in zip((True, False), published.KERAS_FILE_HASHES[depth]):
            fname = published.keras_file_name(depth, include_top)
            files[(depth, include_top)] = PublishedFile(fname, published.KERAS_ORIGIN + fname, file_hash)
    return files


IMAGENET_FILES = _published_files()


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
        input_shape=(224, 224, 3) if include_top else (None, None, 3),
    )


def imagenet_class_names():
    """ImageNet's 1,000 classes in output order, by their first WordNet synonym ("tench")."""
    return tuple(synonyms.split(", ")[0] for _, synonyms in imagenet_classes())


def published_record(entry, include_top=True, architecture=None):
    """The record of a published entry (`published.PublishedWeights`): caffe or torch
    preprocessing, ImageNet's classes, the publisher's evaluation view and figures."""
    return Record(
        architecture or published_architecture(entry.depth, include_top),
        preprocess_mode=entry.preprocess_mode,
        class_names=imagenet_class_names() if include_top else None,
        eval_resize=entry.eval_resize,
        eval_crop=entry.eval_crop,
        weights=entry.meta(),
    )


@dataclasses.dataclass(frozen=True)
class Source:
    """Weights checked against a request: what they were given as, the record of what they
    hold (None for a `.weights.h5` without one, which Keras loads itself), and their reader.

    `read(build)` returns {layer: {variable: value}} (None: let Keras load `path`); `build`
    makes a model from a record, for files whose values load only into their own network.
    """

    weights: object
    record: Record | None
    read: object
    path: str | None = None

    def load(self, model, build):
        """Set `model`'s weights from this source."""
        arrays = self.read(build)
        if arrays is None:
            load_plain_weights(model, self.path)
        else:
            assign(model, arrays, self.weights)
        return model


def open_weights(weights, spec, residual, given):
    """The Source of `weights` for a request of `spec` (residual or plain) with the explicit
    builder arguments `given`; a ValueError before anything is built or downloaded where the
    weights hold another network or contradict an argument."""
    include_top = given.get("include_top", True)
    if weights == "imagenet":
        depth = _published_depth(spec, residual)
        record = published_record(published.keras_applications(depth), include_top)
        _check_fits(weights, record, spec, residual, given)
        return Source(weights, record, lambda build: _read_keras_applications(fetch_imagenet(depth, include_top))[1])
    path = _existing_path(weights)
    record, read = _OPENERS[_kind(path)](path)
    if record is not None:
        _check_fits(weights, record, spec, residual, given)
    return Source(weights, record, read, path)


def read_record(weights):
    """(Record or None, reader) of the weights at a path: what `keras_resnet.load` rebuilds."""
    path = _existing_path(weights)
    kind = _kind(path)
    return _OPENERS[kind](_local_copy(path) if kind != "run_dir" and is_url(path) else path)


def _local_copy(url):
    """A local copy of the file at a `gs://`, `ram://`... URL, under its own name in a
    temporary directory removed when the process ends: h5py and Keras' zip reader open
    only local files, and the weights are read after this returns."""
    import atexit
    import shutil

    import tensorflow as tf

    directory = tempfile.mkdtemp(prefix="keras_resnet-")
    atexit.register(shutil.rmtree, directory, True)
    local = os.path.join(directory, url.rsplit("/", 1)[-1])
    tf.io.gfile.copy(url, local)
    return local


def _published_depth(spec, residual):
    """The depth of the published file for this request, or a ValueError naming what exists."""
    for depth in PUBLISHED_DEPTHS:
        if residual and spec == specs.imagenet_spec(depth):
            return depth
    name = f"{'resnet' if residual else 'plain'}{spec.depth}"
    raise ValueError(
        f"weights='imagenet' is published only for ResNet50, ResNet101 and ResNet152 (keras.applications' "
        f"files of the paper's models), not for {name} ({spec.stem}, {spec.block} "
        f"blocks {spec.blocks_per_stage}); for ResNet-18/34 convert torchvision's weights: "
        "python -m keras_resnet.convert torchvision resnet34.pth resnet34.weights.h5"
    )


def _check_fits(weights, record, spec, residual, given):
    """ValueError naming each way the weights differ from the requested network, and the fix."""
    found = record.architecture
    requested_name = f"{'resnet' if residual else 'plain'}{spec.depth}"
    if (found.spec, found.residual) != (spec, residual):
        raise ValueError(
            f"weights={weights!r} hold a {found.name} ({found.spec.block} blocks {found.spec.blocks_per_stage}, "
            f"widths {found.spec.widths}), not a {requested_name} ({spec.block} blocks "
            f"{spec.blocks_per_stage}, widths {spec.widths})"
        )
    if given.get("include_top", True) and not found.include_top:
        raise ValueError(f"weights={weights!r} hold no classifier head: pass include_top=False")
    differ = contradictions(found, given)
    if differ:
        recorded = ", ".join(f"{arg}={value!r}" for arg, value, _ in differ)
        asked = ", ".join(f"{arg}={value!r}" for arg, _, value in differ)
        hint = ""
        if any(arg == "classes" for arg, _, _ in differ):
            hint = " (for another head: include_top=False, then keras_resnet.finetune.with_new_head)"
        raise ValueError(
            f"weights={weights!r} record {recorded}, but {asked} was given: leave {'it' if len(differ) == 1 else 'them'} "
            f"out to get the network the weights were made for{hint}"
        )


def cache_dir():
    """Where get_file keeps downloads, by Keras' documented rule read now (Keras reads it once,
    at import): $KERAS_HOME, else ~/.keras; get_file's own fallback, a .keras in the temporary
    directory, where that cannot be written."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    with contextlib.suppress(OSError):
        os.makedirs(home, exist_ok=True)
    return home if os.access(home, os.W_OK) else os.path.join(tempfile.gettempdir(), ".keras")


def file_hash(path, algorithm):
    """The hex digest of the file at `path` ("md5" or "sha256"), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_imagenet(depth, include_top):
    """Path of the published file: the cached copy when its hash matches, else downloaded once.

    A missing file without network (or with KERAS_RESNET_OFFLINE set), or a cached file with
    another hash, is a FileNotFoundError saying which file to place where.
    """
    entry = IMAGENET_FILES[(depth, include_top)]
    path = os.path.join(cache_dir(), "models", entry.fname)
    if os.path.exists(path):
        algorithm = "sha256" if len(entry.file_hash) == 64 else "md5"
        actual = file_hash(path, algorithm)
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
    if not (_url_exists(path) if is_url(path) else os.path.exists(path)):
        raise ValueError(f"weights={weights!r} is neither None, 'imagenet' nor an existing path to {PATH_KINDS}")
    return path


def _url_exists(path):
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def _url_isdir(path):
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def _kind(path):
    """Which reader a path needs, from its form; ValueError for anything else."""
    if _url_isdir(path) if is_url(path) else os.path.isdir(path):
        return "run_dir"
    if path.endswith(".weights.h5"):
        return "weights_h5"
    if path.endswith((".h5", ".hdf5")):
        return "legacy_h5"
    if path.endswith(".keras"):
        return "keras"
    raise ValueError(f"weights={path!r} is not {PATH_KINDS} (by its name)")


# Each opener: path -> (Record or None, read(build) -> arrays or None).
def _open_weights_h5(path):
    """keras_resnet's own file: its record now, its values later through a model of that architecture."""
    record = read_file_record(path)
    if record is None:
        return None, lambda build: None

    def read(build):
        anywhere = dataclasses.replace(record.architecture, input_shape=(None, None, 3))
        model = build(record.replace(architecture=anywhere))
        model.load_weights(path)
        return model_arrays(model)

    return record, read


def _open_keras_applications(path):
    names, arrays = _read_keras_applications(path)
    architecture = _keras_applications_architecture(path, names, arrays)
    depth = architecture.spec.depth
    if depth in PUBLISHED_DEPTHS and architecture.classes in (None, 1000):
        record = published_record(published.keras_applications(depth), architecture.include_top, architecture)
    else:
        record = Record(architecture, preprocess_mode="caffe")
    return record, lambda build: arrays


def _open_keras(path):
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"weights={path!r} is not a readable .keras file: it is no zip archive (truncated or damaged); "
            "copy or save it again"
        )
    model = keras.saving.load_model(path, compile=False)
    record = getattr(model, "record", None) or Record(describe(model))
    return record, lambda build: model_arrays(model)


def _open_directory(path):
    """A training run dir: its record now, its newest readable checkpoint later."""
    from keras_resnet import run_dir

    record = run_dir.record_of(path)

    def read(build):
        model = build(record)
        run_dir.restore_weights(model, path)
        return model_arrays(model)

    return record, read


_OPENERS = {
    "weights_h5": _open_weights_h5,
    "legacy_h5": _open_keras_applications,
    "run_dir": _open_directory,
    "keras": _open_keras,
}


def read_metadata(path):
    """The record JSON object of a keras_resnet `.weights.h5`, or None for a file without it."""
    with open_h5(path) as f:
        text = f.attrs.get(METADATA_ATTR)
    if text is None:
        return None
    metadata = json.loads(text)
    if metadata.get("format") not in (1, 2):
        raise ValueError(f"{path!r}: metadata format {metadata.get('format')!r} is not 1 or 2")
    return metadata


def open_h5(path):
    """`path` opened by h5py for reading; a ValueError naming it, and saying why, where it is
    no readable HDF5 file (h5py's OSError names neither)."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        detail = re.search(r"\((.*)\)", str(error))
        detail = detail.group(1) if detail else str(error)
        if "truncated" in detail:
            what = "is truncated"
        elif "signature not found" in detail:
            what = "is not an HDF5 file"
        else:
            what = "cannot be read as HDF5"
        raise ValueError(f"weights={path!r} {what} (h5py: {detail}); copy or write the file again") from error


def read_file_record(path):
    """The Record of a keras_resnet `.weights.h5`, or None for a file without one."""
    metadata = read_metadata(path)
    return None if metadata is None else Record.from_json(metadata)


def load_plain_weights(model, path):
    """Load a plain Keras `.weights.h5` (no record) into `model`; a ValueError saying what
    network the file holds where it is not the one asked for (Keras' own error lists tensors)."""
    with open_h5(path) as f:
        held = _plain_file_network(f)
    asked = _network_summary(
        [tuple(layer.kernel.shape) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)],
        [tuple(layer.kernel.shape) for layer in model.layers if isinstance(layer, keras.layers.Dense)],
    )
    name = model.record.architecture.name if getattr(model, "record", None) else model.name
    if held != asked:
        raise ValueError(
            f"weights={path!r} hold a network of {held}, but {name} ({asked}) was asked for: "
            "build the network the file was saved from"
        )
    try:
        model.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"weights={path!r} hold a network of {held} whose variables differ from {name}'s (widths or layers): "
            "build the network the file was saved from"
        ) from error


def _plain_file_network(f):
    """What a plain Keras weights file holds, from its layers' kernel shapes in creation order."""
    if "layers" not in f:
        raise ValueError(f"weights={f.filename!r} is not a Keras weights file (no 'layers' group)")

    kernels = {"conv2d": [], "dense": []}
    for name in sorted(f["layers"], key=_creation_order):
        kind = _creation_order(name)[0]
        if kind in kernels and "vars" in f["layers"][name]:
            kernels[kind].append(tuple(f["layers"][name]["vars"]["0"].shape))
    return _network_summary(kernels["conv2d"], kernels["dense"])


def _creation_order(key):
    """Keras' key of a layer in a weights file, "conv2d_12", as (kind, number): "conv2d" is 0."""
    kind, _, number = key.rpartition("_")
    return (kind, int(number)) if number.isdigit() else (key, 0)


def _network_summary(convs, denses):
    """ "34 layers in basic blocks, 10 classes", from conv kernel shapes (stem
    first) and the head's: a basic block has two 3x3 convs, a bottleneck one 3x3 between two
    1x1s; shortcut projections are 1x1, so the 3x3s after the stem count the blocks."""
    threes = sum(1 for shape in convs[1:] if shape[:2] == (3, 3))
    ones = sum(1 for shape in convs if shape[:2] == (1, 1))
    bottleneck = threes > 0 and ones >= 2 * threes
    depth = 3 * threes + 2 if bottleneck else threes + 2
    head = f"{denses[-1][-1]} classes" if denses else "no classifier head"
    return f"{depth} layers in {'bottleneck' if bottleneck else 'basic'} blocks, {head}"


def model_arrays(model):
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
    with open_h5(path) as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        names = h5_list_attribute(group, "layer_names")
        if not names:
            raise ValueError(f"weights={path!r} is not a legacy Keras h5 weights file (no layer_names)")
        layers = {}
        for name in names:
            weight_names = h5_list_attribute(group[name], "weight_names")
            if weight_names:
                layers[name] = {_variable_name(w): np.asarray(group[name][w]) for w in weight_names}
    return names, port_keras_applications(layers)


def h5_list_attribute(group, name):
    """A list of names stored as an attribute of a legacy Keras h5 group, as str. Keras splits a
    list longer than HDF5's 64 KiB attribute limit into attributes name0, name1, ..."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for chunk in chunks for value in chunk]


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
        input_shape=(224, 224, 3) if include_top else (None, None, 3),
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
    head = model.get_layer("predictions") if include_top else None
    pooling = {"avg_pool": "avg", "max_pool": "max"}
    data_format = model.get_layer("conv1_conv").data_format
    return Architecture(
        specs.NetSpec(block, blocks, widths, "imagenet" if "pool1_pool" in names else "cifar"),
        residual,
        _shortcut_option(names, blocks) if residual else None,
        "3x3" if strided_3x3 else "1x1",
        float(model.get_layer("conv1_bn").epsilon),
        include_top,
        head.units if include_top else None,
        bn_momentum=float(model.get_layer("conv1_bn").momentum),
        pooling=None if include_top else next((pooling[n] for n in pooling if n in names), None),
        classifier_activation=keras.activations.serialize(head.activation) if include_top else None,
        input_shape=specs.as_height_width_channels(tuple(model.input_shape[1:]), data_format),
        data_format=data_format,
    )


def save(model, path, preprocessing_mode=None, source=None, *, mean=None):
    """Write `model`'s weights as keras_resnet's `.weights.h5`: Keras' file plus the record.

    The record is the model's own (a keras_resnet Network); `preprocessing_mode` (and `mean`)
    are needed only where it records none, and may not contradict it. `source` says where the
    weights came from, when the record does not say it already.
    """
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"path={path!r} must end in .weights.h5")
    record = getattr(model, "record", None) or Record(describe(model))
    mode, mean = check_preprocessing(record, preprocessing_mode, mean, where=f"model {model.name!r}")
    record = record.replace(preprocess_mode=mode, mean=mean)
    if source and not record.weights:
        record = record.replace(weights={"source": source})
    with tempfile.TemporaryDirectory() as tmp:
        staged = os.path.join(tmp, "staged.weights.h5")
        model.save_weights(staged)
        with h5py.File(staged, "a") as f:
            f.attrs[METADATA_ATTR] = record.to_text()
        with open(staged, "rb") as f:
            atomic_write_bytes(path, f.read())


def recorded(weights):
    """The Record of `weights` (None, "imagenet" or a path) without loading its values; None
    where nothing is recorded (a plain `model.save_weights` file)."""
    if weights is None:
        return None
    if weights == "imagenet":
        return published_record(published.keras_applications(50))
    record, _ = read_record(weights)
    return record


def build_kwargs(weights):
    """The builder arguments (shortcut, stride_in, bn_epsilon) the weights were made with.
    Builders take them from the weights themselves; this serves code that builds a network
    of that kind without loading the weights."""
    if weights is None or weights == "imagenet":
        return {}
    record = recorded(weights)
    return {} if record is None else {arg: getattr(record.architecture, arg) for arg in BUILD_ARGS}


def preprocessing(weights):
    """(mode, mean) of `preprocess_input` the weights expect; (None, None) where nothing says."""
    record = recorded(weights)
    if record is None:
        return None, None
    return record.preprocess_mode, record.mean


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_resnet.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the published weights and their figures")
    parser.add_argument("--show", metavar="PATH", help="print the record of a weights file, .keras file or run dir")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)
    from keras_resnet.scripts import user_errors

    if args.show:
        with user_errors(args.verbose):
            record = recorded(args.show)
        print("null" if record is None else json.dumps(record.to_json(), indent=2))
    if args.list or not args.show:
        print(published.table())


if __name__ == "__main__":
    main()
