"""Files in the real formats, written by the data tests: images by PIL, TFRecord shards as
TensorFlow's ImageNet tooling writes them, CIFAR batches as the original python tarball."""

import io
import os
import struct
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


def _py2_str(value):
    """SHORT_BINSTRING or BINSTRING: a Python 2 str, which Python 3 decodes as ASCII by default."""
    return (b"U" + bytes([len(value)]) if len(value) < 256 else b"T" + struct.pack("<i", len(value))) + value


def _py2_int(value):
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


PY2_SHORT_TUPLE = {0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}  # EMPTY_TUPLE, TUPLE1..TUPLE3


def _py2_tuple(items):
    body = b"".join(items)
    return body + PY2_SHORT_TUPLE[len(items)] if len(items) in PY2_SHORT_TUPLE else b"(" + body + b"t"


def _py2_uint8_array(array):
    """numpy 1.x's reduction of a uint8 array under Python 2: _reconstruct, then the state
    (version 1, shape, dtype with its version-3 state, C order, the raw bytes as a str)."""
    minus_one = _py2_int(-1)
    dtype_state = _py2_tuple([_py2_int(3), _py2_str(b"|"), b"N", b"N", b"N", minus_one, minus_one, _py2_int(0)])
    dtype = b"cnumpy\ndtype\n" + _py2_tuple([_py2_str(b"u1"), _py2_int(0), _py2_int(1)]) + b"R" + dtype_state + b"b"
    shape = _py2_tuple([_py2_int(n) for n in array.shape])
    state = _py2_tuple([_py2_int(1), shape, dtype, b"\x89", _py2_str(np.ascontiguousarray(array).tobytes())])
    empty = _py2_tuple([b"cnumpy\nndarray\n", _py2_tuple([_py2_int(0)]), _py2_str(b"b")])
    return b"cnumpy.core.multiarray\n_reconstruct\n" + empty + b"R" + state + b"b"


def _py2_body(value):
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2_body(k) + _py2_body(v) for k, v in value.items()) + b"u"
    if isinstance(value, list):
        return b"](" + b"".join(map(_py2_body, value)) + b"e"
    if isinstance(value, bytes):
        return _py2_str(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return _py2_uint8_array(value)
    if isinstance(value, (int, np.integer)):
        return _py2_int(int(value))
    raise TypeError(f"no Python 2 pickle of a {type(value).__name__} here")


def python2_pickle(value):
    """Protocol-2 bytes of `value` as Python 2's cPickle wrote the published CIFAR files
    (bytes become Python 2 str), which Python 3 reads only with encoding='bytes'."""
    return b"\x80\x02" + _py2_body(value) + b"."


def _write_python2_tarball(path, folder, members):
    """A .tar.gz of `folder`/name members, each a Python 2 pickle of its value."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = python2_pickle(content)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar10_tarball(directory, train, test, names=None):
    """cifar-10-python.tar.gz as published: data_batch_1..5 (train in 5 parts, in order),
    test_batch and batches.meta, each a Python 2 pickle."""
    names = names or [f"class{i}" for i in range(10)]
    parts = np.array_split(np.arange(len(train[1])), 5)
    members = {f"data_batch_{i + 1}": cifar_batch(train[0][part], train[1][part]) for i, part in enumerate(parts)}
    members["test_batch"] = cifar_batch(*test)
    members["batches.meta"] = {
        b"num_cases_per_batch": len(parts[0]),
        b"label_names": [n.encode() for n in names],
        b"num_vis": 3072,
    }
    return _write_python2_tarball(os.path.join(directory, "cifar-10-python.tar.gz"), "cifar-10-batches-py", members)


def write_cifar100_tarball(directory, train, test, fine_names):
    """cifar-100-python.tar.gz as published: train, test and meta, each a Python 2 pickle,
    with fine labels and a coarse label per image (here fine // 5: 20 superclasses)."""

    def batch(images, labels):
        coarse = [int(label) // 5 for label in labels]
        return {**cifar_batch(images, labels, b"fine_labels"), b"coarse_labels": coarse}

    members = {
        "train": batch(*train),
        "test": batch(*test),
        "meta": {
            b"fine_label_names": [n.encode() for n in fine_names],
            b"coarse_label_names": [f"superclass{i}".encode() for i in range(20)],
        },
    }
    return _write_python2_tarball(os.path.join(directory, "cifar-100-python.tar.gz"), "cifar-100-python", members)
