"""Files in the real formats, written by the data tests: images by PIL, TFRecord shards as
TensorFlow's ImageNet tooling writes them, CIFAR batches as the original python tarball."""

import io
import os
import pickle
import tarfile

import numpy as np
import tensorflow as tf
from PIL import Image


def encode(array, fmt="JPEG", mode=None, **options):
    """Image bytes of a uint8 array (HxWx3 or HxW), converted to PIL `mode` if given.

    JPEG `options` go to PIL (quality=100, subsampling=0: nearly lossless).
    """
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 95, **options} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def ramp(height, width, step_x=1.0, step_y=1.0, blue=7):
    """R = step_x * column, G = step_y * row, B constant: known pixels everywhere."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * step_x, rows * step_y, np.full(rows.shape, blue)], -1).round().astype(np.uint8)


def solid(height, width, rgb):
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (height, width, 3)).copy()


def example(encoded, label, fmt=b"JPEG", height=0, width=0):
    """A tf.train.Example as TensorFlow's ImageNet tooling writes it (label counted from 1)."""
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[fmt])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(directory, split, records, num_shards):
    """Records dealt round-robin into <split>-0000k-of-0000n files; their paths."""
    paths = [os.path.join(directory, f"{split}-{k:05d}-of-{num_shards:05d}") for k in range(num_shards)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for i, record in enumerate(records):
        writers[i % num_shards].write(record)
    for writer in writers:
        writer.close()
    return paths


def numbered_examples(count, size=(24, 32)):
    """JPEG examples whose 1-based label is their number + 1: an id to count them by."""
    return [example(encode(solid(*size, (i % 250, 40, 90))), i + 1) for i in range(count)]


def cifar_batch(images, labels, label_key=b"labels"):
    """A CIFAR python batch: rows of 3072 bytes, the red plane, then green, then blue."""
    data = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return {b"batch_label": b"test batch", label_key: list(map(int, labels)), b"data": data}


def write_cifar10_tarball(directory, train, test, names=None):
    """cifar-10-python.tar.gz: data_batch_1..5 (train in 5 parts, in order), test_batch, batches.meta."""
    names = names or [f"class{i}" for i in range(10)]
    parts = np.array_split(np.arange(len(train[1])), 5)
    members = {f"data_batch_{i + 1}": cifar_batch(train[0][part], train[1][part]) for i, part in enumerate(parts)}
    members["test_batch"] = cifar_batch(*test)
    members["batches.meta"] = {b"label_names": [n.encode() for n in names]}
    path = os.path.join(directory, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
