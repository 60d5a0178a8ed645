"""What is known of a data set before reading it: classes, sizes, counts, mean image."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_resnet.data import arrays, sources
from keras_resnet.data.arrays import CIFAR
from keras_resnet.data.catalog import IMAGENET, LAYOUTS, SMALL_MAX_SIZE, DatasetInfo, canonical_name, tfds_builder

IMAGENET_CLASSES = 1000
# Per-channel RGB mean of ImageNet's training images (the caffe models' mean, as RGB).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
# The shard counts TensorFlow's ImageNet tooling writes, for the standard ILSVRC-2012 sets.
STANDARD_SHARDS = {"train": 1024, "validation": 128}


def _tfrecord_count(data_dir, split):
    files = sources.tfrecord_files(data_dir, split)
    if not files:
        return 0
    if len(files) == STANDARD_SHARDS[split] and files[0].endswith(f"-of-{STANDARD_SHARDS[split]:05d}"):
        return sources.IMAGENET_COUNTS[split]
    return int(tf.data.TFRecordDataset(files).ignore_errors().reduce(np.int64(0), lambda n, _: n + 1))


def _imagenet_wnids():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().split()


def _imagenet_info(data_dir):
    kind = "tfds" if data_dir is None else sources.detect_source(data_dir)
    if kind == "tfds":
        return _tfds_info(IMAGENET, data_dir)
    if kind == "tfrecord":
        counts = {split: _tfrecord_count(data_dir, split) for split in ("train", "validation")}
        names = _imagenet_wnids()
    elif kind == "folders":
        names = sources.folder_classes(data_dir)
        counts = {}
        for split in ("train", "validation"):
            if sources.folder_split_dir(data_dir, split) is not None:
                counts[split] = len(sources.folder_files(data_dir, split)[0])
    else:
        raise ValueError(f"data_dir={data_dir!r} holds {kind} files, not ImageNet; {LAYOUTS}")
    classes = len(names) if kind == "folders" else IMAGENET_CLASSES
    return DatasetInfo(IMAGENET, kind, classes, 224, counts, names, small=False)


def _tfds_info(name, data_dir):
    info = tfds_builder(name, data_dir).info
    image_key, label_key = info.supervised_keys or ("image", "label")
    height, width = info.features[image_key].shape[:2]
    small = height is not None and width is not None and max(height, width) <= SMALL_MAX_SIZE
    label = info.features[label_key]
    counts = {split: info.splits[split].num_examples for split in info.splits.keys()}
    return DatasetInfo(name, "tfds", label.num_classes, height if small else 224, counts, list(label.names), small)


def _small_info(name, data_dir, val_split):
    """In-memory sets: counts of what the pipeline will read, after any val_split."""
    if name == "digits":
        source, classes, class_names = "sklearn", 10, [str(d) for d in range(10)]
    elif name in CIFAR and data_dir and arrays.cifar_locate(name, data_dir):
        source, classes, class_names = "cifar_python", CIFAR[name][2], arrays.cifar_python_class_names(name, data_dir)
    else:
        info = _tfds_info(name, data_dir)
        if not info.small:
            return info
        if info.num_examples and not val_split:
            return info
        source, classes, class_names = "tfds", info.num_classes, info.class_names
    splits = ("train", "validation", "test") if val_split else ("train", "test")
    loaded = {split: arrays.load_arrays(name, split, data_dir, val_split) for split in splits}
    counts = {split: len(labels) for split, (_, labels) in loaded.items()}
    return DatasetInfo(name, source, classes, loaded["test"][0].shape[1], counts, class_names, small=True)


def dataset_info(name, data_dir=None, val_split=False):
    """DatasetInfo: num_classes, image_size (32 digits/CIFAR, 224 ImageNet), num_examples per
    split, class_names (list or None), source kind and whether it is held in memory."""
    name = canonical_name(name)
    return _imagenet_info(data_dir) if name == IMAGENET else _small_info(name, data_dir, val_split)


def pixel_mean(name, data_dir=None, val_split=False):
    """float32 mean image [H, W, 3] of the training split (sections 3.4, 4.2).

    For in-memory sets (digits, CIFAR, small TFDS sets) the per-pixel mean over the
    training images (the 45k with val_split); for ImageNet-like sets the per-channel
    ImageNet mean, shaped [1, 1, 3] to broadcast over any image size.
    """
    if not dataset_info(name, data_dir).small:
        return np.asarray(IMAGENET_MEAN_RGB, dtype=np.float32).reshape(1, 1, 3)
    images, _ = arrays.load_arrays(name, "train", data_dir, val_split)
    return images.mean(axis=0, dtype=np.float64).astype(np.float32)
