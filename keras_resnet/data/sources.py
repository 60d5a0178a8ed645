"""Streamed sources: large data sets of encoded images, read as they are on disk.

Each gives a tf.data.Dataset of (payload, label hint, ..., origin), sharded by file across
input pipelines, and `unpack(payload, label hint) -> (encoded image, label)` to run
where failures are counted (skips.py): ImageNet as TFRecord shards (the format of
TensorFlow's ImageNet tooling), class-per-folder image directories, TFDS sets
(imagenet2012 through its manual-dir flow included).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_resnet.data.arrays import CIFAR, cifar_locate
from keras_resnet.data.catalog import (
    IMAGE_EXTENSIONS,
    IMAGENET,
    LAYOUTS,
    TFDS_PREFIX,
    tfds_builder,
    tfds_dataset,
    tfds_module,
    tfds_split,
)
from keras_resnet.data.skips import shard_records

IMAGENET_COUNTS = {"train": 1_281_167, "validation": 50_000}
TFRECORD_PREFIX = {"train": "train", "validation": "validation", "test": "validation"}
TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
FOLDER_NAMES = {"train": ("train",), "validation": ("validation", "val"), "test": ("test", "validation", "val")}


def tfrecord_files(data_dir, split):
    """Sorted shards `<prefix>-NNNNN-of-NNNNN` of a split (test reads validation)."""
    pattern = os.path.join(data_dir, f"{TFRECORD_PREFIX[split]}-*-of-*")
    return sorted(tf.io.gfile.glob(pattern))


def folder_split_dir(data_dir, split):
    for folder in FOLDER_NAMES[split]:
        path = os.path.join(data_dir, folder)
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


def folder_files(data_dir, split):
    """(paths, labels) of a class-per-folder split, labels by sorted class name."""
    classes = folder_classes(data_dir)
    split_dir = folder_split_dir(data_dir, split)
    if split_dir is None:
        raise ValueError(f"no {' or '.join(FOLDER_NAMES[split])} folder in {data_dir!r}; {LAYOUTS}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not tf.io.gfile.isdir(class_dir):
            continue
        for entry in sorted(tf.io.gfile.listdir(class_dir)):
            if entry.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(class_dir, entry))
                labels.append(label)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir!r}; {LAYOUTS}")
    return paths, labels


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


def _parse_tfrecord(record, label_hint):
    """(image/encoded, image/class/label - 1) of a tf.train.Example; the hint is unused."""
    del label_hint
    features = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    return features["image/encoded"], tf.cast(features["image/class/label"] - 1, tf.int32)


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
    return records, _parse_tfrecord


def folder_examples(data_dir, split, context, training, seed):
    paths, labels = shard_list(list(folder_files(data_dir, split)), context)
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
    """'tfrecord', 'folders' or 'tfds': what a large data set is read from."""
    kind = "tfds" if data_dir is None or name != IMAGENET else detect_source(data_dir)
    if kind not in ("tfrecord", "folders", "tfds"):
        raise ValueError(f"data_dir={data_dir!r} holds {kind} files, which are not {name}; {LAYOUTS}")
    return kind


def check_split_files(name, split, data_dir):
    """A ValueError now, before any reading, where the split has no files."""
    kind = source_kind(name, data_dir)
    if kind == "tfrecord" and not tfrecord_files(data_dir, split):
        raise ValueError(f"no {TFRECORD_PREFIX[split]}-*-of-* shards in {data_dir!r}; {LAYOUTS}")
    if kind == "folders":
        folder_files(data_dir, split)
    if kind == "tfds":
        tfds_dataset(tfds_builder(name, data_dir), tfds_split(name, split))


def encoded_examples(name, split, data_dir, context, *, training, seed, deterministic):
    """((payload, label hint, ..., origin) dataset, unpack) of a large data set, sharded by file.

    One epoch; in training the files come in a new order each epoch.
    `unpack(payload, label hint) -> (encoded image, label)` may fail: run it guarded.
    """
    kind = source_kind(name, data_dir)
    if kind == "tfrecord":
        return tfrecord_examples(data_dir, split, context, training, seed, deterministic)
    if kind == "folders":
        return folder_examples(data_dir, split, context, training, seed)
    return tfds_examples(name, data_dir, split, context, training, seed)
