"""What is known of a data set before reading it: classes, sizes, counts, mean image."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_resnet.data import arrays, folder_checks, imagenet, sources, tfrecords
from keras_resnet.data.arrays import CIFAR
from keras_resnet.data.catalog import (
    IMAGENET,
    LAYOUTS,
    SMALL_MAX_SIZE,
    DatasetInfo,
    canonical_name,
    tfds_builder,
    val_fraction,
)

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


def _files_info(name, data_dir, val_split):
    """ImageNet (TFRecords, TFDS, folders) or any class-folder or TFRecord set under its name."""
    kind = "tfds" if data_dir is None else sources.detect_source(data_dir)
    if kind == "tfds":
        return _tfds_info(IMAGENET, data_dir)
    if kind == "tfrecord":
        counts = {split: _tfrecord_count(data_dir, split) for split in ("train", "validation")}
        names = sources.imagenet_wnids()
    elif kind == "folders":
        names = sources.folder_classes(data_dir)
        counts = {}
        for split in ("train", "validation", "test"):
            if sources.has_split(data_dir, split, val_split):
                counts[split] = len(sources.folder_split(data_dir, split, val_split).paths)
    else:
        raise ValueError(f"data_dir={data_dir!r} holds {kind} files, not {name}; {LAYOUTS}")
    classes = len(names) if kind == "folders" else IMAGENET_CLASSES
    human = imagenet.wordnet_names(names)
    if human is None:
        return DatasetInfo(name, kind, classes, 224, counts, names, small=False)
    return DatasetInfo(name, kind, classes, 224, counts, human, small=False, class_ids=names)


def reads_files(name, data_dir):
    """Whether `name` is read from data_dir's TFRecord shards or class folders (not an
    in-memory set, nor a TFDS dir): the streamed sets any name may go by, "digits" too
    when a data_dir of folders is given."""
    if name == IMAGENET:
        return True
    if not data_dir or (name in CIFAR and arrays.cifar_locate(name, data_dir)):
        return False
    try:
        return sources.detect_source(data_dir) in ("tfrecord", "folders")
    except ValueError:
        return False


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
    splits = ("train", "validation", "test") if val_fraction(val_split) else ("train", "test")
    loaded = {split: arrays.load_arrays(name, split, data_dir, val_split) for split in splits}
    counts = {split: len(labels) for split, (_, labels) in loaded.items()}
    return DatasetInfo(name, source, classes, loaded["test"][0].shape[1], counts, class_names, small=True)


def dataset_info(name, data_dir=None, val_split=False):
    """DatasetInfo: num_classes, image_size (32 digits/CIFAR, 224 ImageNet), num_examples per
    split, class_names (list or None), source kind and whether it is held in memory."""
    name = canonical_name(name)
    return (
        _files_info(name, data_dir, val_split)
        if reads_files(name, data_dir)
        else _small_info(name, data_dir, val_split)
    )


def pixel_mean(name, data_dir=None, val_split=False):
    """float32 mean of the training split, what preprocessing mode "pixel_mean" subtracts
    (sections 3.4, 4.2).

    In-memory sets (digits, CIFAR, small TFDS sets): the per-pixel mean image [H, W, 3] of
    the training images (the kept part with val_split). ImageNet: its per-channel mean,
    [1, 1, 3]. Other streamed sets (class folders, TFRecords): the per-channel mean of their
    training images, [1, 1, 3], from one pass over them (`streamed_channel_mean`).
    """
    info = dataset_info(name, data_dir, val_split)
    if info.small:
        images, _ = arrays.load_arrays(name, "train", data_dir, val_split)
        return images.mean(axis=0, dtype=np.float64).astype(np.float32)
    if info.name == IMAGENET:
        return np.asarray(IMAGENET_MEAN_RGB, dtype=np.float32).reshape(1, 1, 3)
    return streamed_channel_mean(info.name, data_dir, val_split)[0]


def _decode_small(encoded):
    """RGB pixels of an image, JPEGs decoded at 1/4 size (their mean barely moves): float64 [3] mean."""
    from keras_resnet.data import views

    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.decode_jpeg(encoded, channels=3, ratio=4),
        lambda: views.decode_rgb(encoded),
    )
    return tf.reduce_mean(tf.cast(image, tf.float64), axis=[0, 1])


def streamed_channel_mean(name, data_dir=None, val_split=False):
    """(float32 [1, 1, 3] per-channel mean, images read) of a streamed set's training
    images, each image weighing the same; images that do not decode are left out. A
    ValueError where none decodes."""
    examples, unpack = sources.encoded_examples(
        name, "train", data_dir, None, training=False, seed=None, deterministic=False, val_split=val_split
    )
    means = examples.map(
        lambda *example: _decode_small(unpack(example[0], example[1])[0]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    ).ignore_errors()
    total, count = means.reduce(
        (tf.zeros([3], tf.float64), tf.constant(0, tf.int64)), lambda state, mean: (state[0] + mean, state[1] + 1)
    )
    count = int(count)
    if not count:
        raise ValueError(f"no readable image in {name} train ({data_dir}): none decodes, nothing to take a mean of")
    return (total.numpy() / count).astype(np.float32).reshape(1, 1, 3), count


def _class_counts(labels, class_names):
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return ", ".join(f"{name} {n}" for name, n in zip(class_names, counts))


def describe(name, data_dir=None, val_split=False, max_listed=10):
    """Lines saying what a data set holds, for the start of a run: where it is read from,
    images per split and per class, the class names, and the files skipped and why."""
    info = dataset_info(name, data_dir, val_split)
    where = f" from {data_dir}" if data_dir else ""
    lines = [f"data: {info.name}{where}, read as {info.source}; {info.num_classes} classes, " + _count_text(info)]
    if info.class_ids is not None and len(info.class_ids) <= 2 * max_listed:
        lines.append(f"  WordNet ids: {', '.join(f'{n} {i}' for n, i in zip(info.class_names, info.class_ids))}")
    if info.source == "tfrecord":
        lines += _tfrecord_lines(info, data_dir, max_listed)
    if info.source != "folders":
        if info.class_names is not None and len(info.class_names) <= 2 * max_listed:
            lines.append(f"  classes: {', '.join(map(str, info.class_names))}")
        return lines
    fraction = val_fraction(val_split)
    skipped = []
    for split in info.num_examples:
        found = sources.folder_split(data_dir, split, val_split)
        held = f" ({fraction:g} of train/ held out, stratified)" if fraction and split == "validation" else ""
        lines.append(f"  {split}{held}: {_class_counts(found.labels, info.class_names)}")
        skipped += [item for item in found.skipped if item not in skipped]
    lines.append(folder_checks.exif_line(sources.folder_split(data_dir, "train", val_split).paths))
    if "validation" not in info.num_examples:
        lines.append(
            "  no validation folder: pass val_split (--val_split 0.1) to hold out part of train/ for evaluation"
        )
    if skipped:
        lines.append(f"  skipped {len(skipped)} file(s):")
        lines += [f"    {path}: {reason}" for path, reason in skipped[:max_listed]]
        if len(skipped) > max_listed:
            lines.append(f"    ... and {len(skipped) - max_listed} more")
    return lines


def _tfrecord_lines(info, data_dir, max_listed):
    """Records per class of each split, from the bounded sample its labels are checked on."""
    lines = []
    for split, count in info.num_examples.items():
        if not count:
            continue
        sample, first = sources.tfrecord_labels(data_dir, split)
        counts = tfrecords.class_counts(sample, first, info.num_classes)
        seen = np.flatnonzero(counts)
        origin = " (labels counted from 0, as their image/class/synset say)" if first == 0 else ""
        head = f"  {split}, the first {len(sample.labels):,} records of its shards{origin}: "
        if len(seen) <= 2 * max_listed:
            lines.append(head + ", ".join(f"{info.class_names[i]} {counts[i]}" for i in seen))
        else:
            fewest, most = seen[np.argmin(counts[seen])], seen[np.argmax(counts[seen])]
            lines.append(
                head + f"{len(seen)} of {info.num_classes} classes, from {counts[fewest]} ({info.class_names[fewest]}) "
                f"to {counts[most]} ({info.class_names[most]}) records each"
            )
    return lines


def check_head_classes(name, data_dir, classes, val_split=False):
    """A ValueError before training where a head of `classes` outputs cannot hold every
    label of the data: class folders with more classes, TFRecord labels (sampled) beyond it."""
    info = dataset_info(name, data_dir, val_split)
    if info.source == "tfrecord":
        for split, count in info.num_examples.items():
            if count:
                try:
                    sources.tfrecord_labels(data_dir, split, classes)
                except ValueError as error:
                    raise ValueError(f"classes={classes} is too few for {name}: {error}") from None
    elif classes < info.num_classes:
        raise ValueError(
            f"classes={classes} is too few for {name}, which holds {info.num_classes} classes "
            f"({', '.join(map(str, (info.class_names or [])[:5]))}, ...): drop --classes, or keep only "
            f"the class folders to train in a data dir of their own"
        )


def _count_text(info):
    return ", ".join(f"{split} {n:,} images" for split, n in info.num_examples.items())
