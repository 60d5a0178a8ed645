"""Streamed sources: large data sets of encoded images, read as they are on disk.

Each gives a tf.data.Dataset of (payload, label hint, ..., origin), sharded by file across
input pipelines, and `unpack(payload, label hint) -> (encoded image, label)` to run
where failures are counted (skips.py): ImageNet as TFRecord shards (the format of
TensorFlow's ImageNet tooling), class-per-folder image directories, TFDS sets
(imagenet2012 through its manual-dir flow included).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

from keras_resnet.data import imagenet, tfrecords
from keras_resnet.data.arrays import CIFAR, cifar_locate, held_out
from keras_resnet.data.catalog import (
    IMAGE_EXTENSIONS,
    IMAGE_SIGNATURES,
    LAYOUTS,
    TFDS_PREFIX,
    check_split,
    tfds_builder,
    tfds_dataset,
    tfds_module,
    tfds_split,
    val_fraction,
)
from keras_resnet.data.skips import shard_records

IMAGENET_COUNTS = {"train": 1_281_167, "validation": 50_000}
TFRECORD_PREFIX = {"train": "train", "validation": "validation", "test": "validation"}
TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
NOT_IN_A_CLASS_FOLDER = (
    f"not in a class folder (a flat ImageNet val/ is labelled by {imagenet.KAGGLE_SOLUTION} "
    f"or {imagenet.DEVKIT_DATA}/{imagenet.DEVKIT_TRUTH} with meta.mat)"
)
FOLDER_NAMES = {"train": ("train",), "validation": ("validation", "val"), "test": ("test", "validation", "val")}


def tfrecord_files(data_dir, split):
    """Sorted shards `<prefix>-NNNNN-of-NNNNN` of a split (test reads validation)."""
    pattern = os.path.join(data_dir, f"{TFRECORD_PREFIX[split]}-*-of-*")
    return sorted(tf.io.gfile.glob(pattern))


def _split_folders(data_dir, split, names):
    """The folders of `names` a split may read: ImageNet's test/ (Kaggle's, the tarball's) is
    flat and unlabelled, so where ImageNet's val labels are found, test reads val/."""
    if split == "test" and imagenet.flat_val_labels(data_dir) is not None:
        return tuple(name for name in names if name != "test")
    return names


def folder_split_dir(data_dir, split):
    root = imagenet.images_root(data_dir)
    for folder in _split_folders(data_dir, split, FOLDER_NAMES[split]):
        path = os.path.join(root, folder)
        if tf.io.gfile.isdir(path):
            return path
    return None


def folder_classes(data_dir):
    """Sorted class folder names of the train split (else the first split found)."""
    for split in ("train", "validation", "test"):
        path = folder_split_dir(data_dir, split)
        if path is not None:
            return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path) if tf.io.gfile.isdir(os.path.join(path, n)))
    return []


def folder_dataset_name(data_dir):
    """The name a folder data set goes by: its directory's name ("flowers" for ~/data/flowers/)."""
    return os.path.basename(os.path.normpath(data_dir)) or "folders"


def image_format(head):
    """'jpeg', 'png', 'gif' or 'bmp' from a file's first bytes, or None (what decode_image reads)."""
    for prefix, kind in IMAGE_SIGNATURES:
        if head.startswith(prefix):
            return kind
    return None


def _file_head(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(8)


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The files of one class-folder split: images with their labels, and what was left out."""

    directory: str
    paths: tuple
    labels: tuple
    skipped: tuple  # (path, reason)


@functools.cache
def list_folder_split(data_dir, split):
    """A split's images (labels by sorted class name of train), every other file skipped
    with its reason: no image extension, or first bytes that are no JPEG/PNG/GIF/BMP.
    Files straight under a validation or test directory are read where ImageNet's labels
    for a flat val/ are found (`imagenet.flat_val_labels`), else skipped like those under
    train/ (not in a class folder)."""
    classes = folder_classes(data_dir)
    split_dir = folder_split_dir(data_dir, split)
    if split_dir is None:
        raise ValueError(f"no {' or '.join(FOLDER_NAMES[split])} folder in {data_dir!r}; {LAYOUTS}")
    paths, labels, skipped = [], [], []
    flat = None if split == "train" else imagenet.flat_val_labels(data_dir)
    index = {name: label for label, name in enumerate(classes)}
    for entry in sorted(tf.io.gfile.listdir(split_dir)):
        path = os.path.join(split_dir, entry.rstrip("/"))
        if tf.io.gfile.isdir(path):
            if entry.rstrip("/") not in classes:
                skipped.append((path, "a class folder that train/ lacks"))
        elif flat:
            _list_flat_image(path, flat, index, paths, labels, skipped)
        else:
            skipped.append((path, NOT_IN_A_CLASS_FOLDER))
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not tf.io.gfile.isdir(class_dir):
            continue
        for entry in sorted(tf.io.gfile.listdir(class_dir)):
            path = os.path.join(class_dir, entry.rstrip("/"))
            problem = "a folder inside a class folder" if tf.io.gfile.isdir(path) else _image_problem(path)
            if problem:
                skipped.append((path, problem))
            else:
                paths.append(path)
                labels.append(label)
    if not paths:
        reasons = f" ({len(skipped)} files skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir!r}{reasons}; {LAYOUTS}")
    return FolderSplit(split_dir, tuple(paths), tuple(labels), tuple(skipped))


def _image_problem(path):
    """Why a file is no image to read (its name, its first bytes), or None."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not an image file name ({', '.join(IMAGE_EXTENSIONS)})"
    if image_format(_file_head(path)) is None:
        return "not a JPEG, PNG, GIF or BMP (its first bytes)"
    return None


def _list_flat_image(path, flat, index, paths, labels, skipped):
    """An image of a flat val/ folder, labelled by ImageNet's validation labels (`flat`:
    ({image id: WordNet id}, their file)); else skipped with the reason."""
    truth, source = flat
    wnid = truth.get(imagenet.image_id(path))
    problem = _image_problem(path)
    if wnid is None:
        skipped.append((path, f"not labelled by {source}"))
    elif wnid not in index:
        skipped.append((path, f"class {wnid} (from {source}), which train/ lacks"))
    elif problem:
        skipped.append((path, problem))
    else:
        paths.append(path)
        labels.append(index[wnid])


def has_own_validation(data_dir):
    """Whether class folders come with a validation (or val) split of their own."""
    return folder_split_dir(data_dir, "validation") is not None


def has_split(data_dir, split, val_split=0.0):
    """Whether class folders hold `split`: train/ (and with val_split its held-out part as
    validation), validation/ or val/, test/ (which, absent, reads validation)."""
    if val_fraction(val_split):
        return split in ("train", "validation")
    own = {"train": ("train",), "validation": FOLDER_NAMES["validation"], "test": ("test",)}[split]
    own = _split_folders(data_dir, split, own)
    root = imagenet.images_root(data_dir)
    return any(tf.io.gfile.isdir(os.path.join(root, folder)) for folder in own)


def folder_split(data_dir, split, val_split=0.0):
    """The FolderSplit a split reads: with val_split (train/ alone), "train" and "validation"
    are the stratified parts of train/ that `arrays.held_out` picks (fixed seed), "test"
    is refused; without, the folders themselves."""
    fraction = val_fraction(val_split)
    if not fraction:
        return list_folder_split(data_dir, split)
    if has_own_validation(data_dir):
        raise ValueError(
            f"val_split={val_split!r}: {data_dir!r} has a validation folder of its own; drop val_split or that folder"
        )
    check_split(split, ("train", "validation"))
    whole = list_folder_split(data_dir, "train")
    mask = held_out(whole.labels, fraction)
    keep = mask if split == "validation" else ~mask
    pick = lambda column: tuple(item for item, kept in zip(column, keep) if kept)  # noqa: E731
    return FolderSplit(whole.directory, pick(whole.paths), pick(whole.labels), whole.skipped)


def folder_files(data_dir, split, val_split=0.0):
    """(paths, labels) of a class-per-folder split, labels by sorted class name."""
    found = folder_split(data_dir, split, val_split)
    return list(found.paths), list(found.labels)


def _tfds_prepared(data_dir):
    return bool(tf.io.gfile.glob(os.path.join(data_dir, "*", "*", "dataset_info.json"))) or bool(
        tf.io.gfile.glob(os.path.join(data_dir, "*", "*", "*", "dataset_info.json"))
    )


def detect_source(data_dir):
    """The source kind `data_dir` holds: 'tfrecord', 'folders', 'cifar_python' or 'tfds'.

    A missing or empty path is a ValueError listing the layouts read.
    """
    if not data_dir or not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"data_dir={data_dir!r} is not a directory; {LAYOUTS}")
    if tfrecord_files(data_dir, "train") or tfrecord_files(data_dir, "validation"):
        return "tfrecord"
    if any(cifar_locate(name, data_dir) for name in CIFAR):
        return "cifar_python"
    if folder_classes(data_dir):
        return "folders"
    manual = os.path.join(data_dir, "downloads", "manual")
    if _tfds_prepared(data_dir) or (tf.io.gfile.isdir(manual) and tf.io.gfile.listdir(manual)):
        return "tfds"
    raise ValueError(f"nothing readable in data_dir={data_dir!r}; {LAYOUTS}")


def shard_list(items, context):
    """This input pipeline's share of `items` (files): every item in exactly one share."""
    if context is None or context.num_input_pipelines == 1:
        return items
    if len(items[0]) < context.num_input_pipelines:
        raise ValueError(
            f"{len(items[0])} files cannot be shared by {context.num_input_pipelines} input pipelines: "
            "write more shards or use fewer workers"
        )
    return [column[context.input_pipeline_id :: context.num_input_pipelines] for column in items]


def _parse_tfrecord(record, label_hint, first_label=tfrecords.STANDARD_FIRST_LABEL):
    """(image/encoded, image/class/label - first_label) of a tf.train.Example; the hint is unused."""
    del label_hint
    features = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    return features["image/encoded"], tf.cast(features["image/class/label"] - first_label, tf.int32)


def imagenet_wnids():
    """ImageNet's WordNet ids in output order (sorted): the classes of TFRecord shards."""
    from keras_resnet.preprocessing import imagenet_classes

    return [wnid for wnid, _ in imagenet_classes()]


def tfrecord_labels(data_dir, split, classes=None):
    """(LabelSample, the label of class 0) of a split's shards, checked: labels against their
    synsets, and every label inside the `classes` of the head (default ImageNet's 1,000)."""
    wnids = imagenet_wnids()
    sample = tfrecords.label_sample(tuple(tfrecord_files(data_dir, split)))
    first = tfrecords.first_label(sample, wnids)
    tfrecords.check_labels(sample, first, classes or len(wnids))
    return sample, first


def _read_file(path, label):
    return tf.io.read_file(path), label


def _as_given(image, label):
    return image, label


def _files_dataset(columns, training, seed):
    """One epoch over the files, in a new order each epoch when training."""
    files = tf.data.Dataset.from_tensor_slices(tuple(columns))
    if training:
        files = files.shuffle(len(columns[0]), seed=seed, reshuffle_each_iteration=True)
    return files


def tfrecord_examples(data_dir, split, context, training, seed, deterministic):
    files = tfrecord_files(data_dir, split)
    sizes = [tf.io.gfile.stat(f).length for f in files]
    files, sizes = shard_list([files, sizes], context)
    records = _files_dataset([files, sizes], training, seed).interleave(
        shard_records,
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return records, functools.partial(_parse_tfrecord, first_label=tfrecord_labels(data_dir, split)[1])


def folder_examples(data_dir, split, context, training, seed, val_split=0.0):
    paths, labels = shard_list(list(folder_files(data_dir, split, val_split)), context)
    examples = _files_dataset([paths, np.asarray(labels, np.int32)], training, seed)
    return examples.map(lambda path, label: (path, label, path)), _read_file


def tfds_examples(name, data_dir, split, context, training, seed):
    tfds = tfds_module()
    builder = tfds_builder(name, data_dir)
    split = tfds_split(name, split)
    image_key = (builder.info.supervised_keys or ("image",))[0]
    read_config = tfds.ReadConfig(input_context=context, shuffle_seed=seed, try_autocache=False)
    examples = tfds_dataset(
        builder,
        split,
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=read_config,
        shuffle_files=training,
        as_supervised=True,
    )
    origin = tf.constant(f"{TFDS_PREFIX}{builder.name}/{split}")
    return examples.map(lambda image, label: (image, tf.cast(label, tf.int32), origin)), _as_given


def source_kind(name, data_dir):
    """'tfrecord', 'folders' or 'tfds': what a streamed data set is read from. A data_dir of
    TFRecord shards or class folders is read as such whatever the name; else TFDS."""
    if data_dir is None:
        return "tfds"
    kind = detect_source(data_dir)
    if kind == "cifar_python":
        raise ValueError(f"data_dir={data_dir!r} holds CIFAR python files, which are not {name}; {LAYOUTS}")
    return kind


def check_split_files(name, split, data_dir, val_split=0.0):
    """A ValueError now, before any reading, where the split has no files."""
    kind = source_kind(name, data_dir)
    if val_split and kind != "folders":
        raise ValueError(
            f"val_split={val_split!r} holds out part of train of class folders or in-memory sets; "
            f"{name} ({kind}) has its own validation split"
        )
    if kind == "tfrecord" and not tfrecord_files(data_dir, split):
        raise ValueError(f"no {TFRECORD_PREFIX[split]}-*-of-* shards in {data_dir!r}; {LAYOUTS}")
    if kind == "tfrecord":
        tfrecord_labels(data_dir, split)
    if kind == "folders":
        folder_files(data_dir, split, val_split)
    if kind == "tfds":
        tfds_dataset(tfds_builder(name, data_dir), tfds_split(name, split))


def encoded_examples(name, split, data_dir, context, *, training, seed, deterministic, val_split=0.0):
    """((payload, label hint, ..., origin) dataset, unpack) of a large data set, sharded by file.

    One epoch; in training the files come in a new order each epoch.
    `unpack(payload, label hint) -> (encoded image, label)` may fail: run it guarded.
    """
    kind = source_kind(name, data_dir)
    if kind == "tfrecord":
        return tfrecord_examples(data_dir, split, context, training, seed, deterministic)
    if kind == "folders":
        return folder_examples(data_dir, split, context, training, seed, val_split)
    return tfds_examples(name, data_dir, split, context, training, seed)
