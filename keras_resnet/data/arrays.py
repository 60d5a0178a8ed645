"""In-memory sources: small data sets of fixed-size images as uint8 NHWC RGB arrays and
int32 labels: sklearn's digits, CIFAR-10/100 from the original python tarball or its
extracted batches (no download), any small TFDS image-classification set.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import tarfile
import zlib

import numpy as np
import tensorflow as tf

from keras_resnet.data.catalog import (
    LAYOUTS,
    canonical_name,
    check_split,
    tfds_builder,
    tfds_dataset,
    tfds_module,
    val_fraction,
)

DIGITS_TEST_SIZE = 360
SPLIT_SEED = 0
CIFAR_ROW = 32 * 32 * 3
CIFAR = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", 10, "labels", "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", 100, "fine_labels", "meta", "fine_label_names"),
}
CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}


@functools.cache
def _digits_all():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    grey = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    big = grey.repeat(4, axis=1).repeat(4, axis=2)
    images = np.repeat(big[..., None], 3, axis=-1)
    train, test = train_test_split(
        np.arange(len(images)), test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=SPLIT_SEED
    )
    labels = bunch.target.astype(np.int32)
    train, test = np.sort(train), np.sort(test)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def digits_arrays(split):
    """sklearn's 1,797 8x8 digits (0..16 -> 0..255), 4x nearest upsampled to 32x32 RGB.

    The split is fixed: 360 test images stratified by class with seed 0, 1,437 train.
    """
    check_split(split, ("train", "test"))
    return _digits_all()[split]


def digits(split):
    """tf.data.Dataset of (uint8 [32, 32, 3], int32 label) from sklearn's bundled digits."""
    return tf.data.Dataset.from_tensor_slices(digits_arrays(split))


def cifar_locate(name, data_dir):
    """('tar', path) or ('dir', path) of CIFAR in its original python format, or None."""
    tar_name, dir_name = CIFAR[name][:2]
    for candidate in (data_dir, os.path.join(data_dir, tar_name)):
        if candidate.endswith(".tar.gz") and tf.io.gfile.exists(candidate) and not tf.io.gfile.isdir(candidate):
            return "tar", candidate
    for candidate in (data_dir, os.path.join(data_dir, dir_name)):
        batch = os.path.join(candidate, CIFAR_FILES[name]["test"][0])  # CIFAR-100's is "test": not a test/ folder
        if tf.io.gfile.exists(batch) and not tf.io.gfile.isdir(batch):
            return "dir", candidate
    return None


def cifar_name(data_dir):
    """ "cifar10" or "cifar100": the CIFAR set whose python files are in data_dir (None if neither)."""
    return next((name for name in CIFAR if cifar_locate(name, data_dir)), None)


# What a CIFAR batch may name: NumPy's array and dtype rebuilders under their NumPy 1 and
# NumPy 2 module names, and the codec Python 3's protocol 2 writes bytes with.
CIFAR_PICKLE_GLOBALS = frozenset(
    [(module, "_reconstruct") for module in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(module, "scalar") for module in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds arrays, refuses every other global: a batch file never runs code."""

    def find_class(self, module, name):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _unpickle(read, where):
    """The dict a CIFAR python file holds, its keys as str, or a ValueError naming the file.

    The published files are Python 2 cPickle: their keys and pixels are Python 2 str, read
    as bytes (the dataset page's `encoding='bytes'`). Damaged bytes can make the unpickler
    raise any exception, so all of them mean "not a batch".
    """
    try:
        content = _CifarUnpickler(io.BytesIO(read()), encoding="bytes").load()
    except Exception as error:
        said = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{where}: not a CIFAR python batch (unpickling failed: {said})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{where}: not a CIFAR python batch (holds a {type(content).__name__}, not a dict)")
    return {key.decode(errors="replace") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_members(kind, path, names):
    """{file name: unpickled dict} of the batch files `names`; a missing, truncated or
    garbled file is a ValueError naming it."""
    found = {}
    if kind == "dir":
        for member in names:
            where = os.path.join(path, member)
            if not tf.io.gfile.exists(where):
                raise ValueError(f"{where} is missing: CIFAR's python batches are {', '.join(names)}")
            with tf.io.gfile.GFile(where, "rb") as f:
                found[member] = _unpickle(f.read, where)
        return found
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, tarfile.open(fileobj=io.BytesIO(raw.read()), mode="r:gz") as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if base in names and member.isfile():
                    found[base] = _unpickle(tar.extractfile(member).read, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path}: not a whole CIFAR python tarball ({error or type(error).__name__})") from None
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"{path!r} lacks {missing}: not a whole CIFAR python tarball")
    return found


def _cifar_batch_arrays(batch, label_key, classes, where):
    """(uint8 [n, 32, 32, 3], int32 [n]) of one unpickled batch, each fault a ValueError naming `where`."""
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{where}: no {key!r} entry (has {sorted(map(str, batch))})")
    try:
        label = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        rows = np.asarray(batch["data"], dtype=np.uint8)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"{where}: data or labels are not arrays of numbers ({error})") from None
    if rows.ndim != 2 or rows.shape[1] != CIFAR_ROW:
        raise ValueError(f"{where}: data of shape {rows.shape}, expected [n, {CIFAR_ROW}] (32x32x3 bytes per row)")
    if len(rows) != len(label):
        raise ValueError(f"{where}: {len(rows)} images but {len(label)} labels")
    bad = label[(label < 0) | (label >= classes)]
    if bad.size:
        raise ValueError(f"label {int(bad[0])} outside [0, {classes}) in {where}")
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), label.astype(np.int32)


@functools.cache
def cifar_python_arrays(name, data_dir, split):
    """CIFAR-10/100 from `cifar-10-python.tar.gz` or its extracted batches, no download.

    A missing, truncated or garbled file, a wrong row length, a missing key or a label
    outside [0, classes) is a ValueError naming the file and the fault.
    """
    check_split(split, ("train", "test"))
    located = cifar_locate(name, data_dir)
    if located is None:
        raise ValueError(f"no {name} python files in {data_dir!r}; {LAYOUTS}")
    classes, label_key = CIFAR[name][2], CIFAR[name][3]
    batches = _cifar_members(*located, CIFAR_FILES[name][split])
    images, labels = [], []
    for member in CIFAR_FILES[name][split]:
        where = os.path.join(located[1], member)
        image, label = _cifar_batch_arrays(batches[member], label_key, classes, where)
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def cifar_python_class_names(name, data_dir):
    kind, path = cifar_locate(name, data_dir)
    meta_name, names_key = CIFAR[name][4], CIFAR[name][5]
    meta = _cifar_members(kind, path, [meta_name])[meta_name]
    if names_key not in meta:
        raise ValueError(f"{os.path.join(path, meta_name)}: no {names_key!r} entry")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]


def tfds_arrays(name, data_dir, split):
    """A small TFDS set as (uint8 NHWC RGB, int32) arrays: grey images get 3 channels."""
    tfds = tfds_module()
    dataset = tfds_dataset(tfds_builder(name, data_dir), split, as_supervised=True)
    batches = list(tfds.as_numpy(dataset.batch(4096)))
    images = np.concatenate([b[0] for b in batches]).astype(np.uint8)
    labels = np.concatenate([b[1] for b in batches])
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images[..., :3], np.asarray(labels, dtype=np.int32)


def held_out(labels, fraction, seed=SPLIT_SEED):
    """Boolean mask of the examples a val_split holds out: `fraction` of them, stratified
    (each class gives its share, rounded by largest remainder so the total is
    floor(fraction * n): CIFAR's 5,000 of 50,000), chosen at random with a fixed seed: the
    same for the same labels."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(int)
    extra = int(np.floor(fraction * len(labels) + 1e-9)) - take.sum()
    if extra > 0:
        tie_break = rng.permutation(len(classes))
        order = np.lexsort((tie_break, -(quota - take)))
        take[order[:extra]] += 1
    mask = np.zeros(len(labels), bool)
    for cls, n in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        mask[rng.permutation(members)[:n]] = True
    return mask


def holdout(images, labels, split, fraction):
    """val_split: "train" keeps what held_out does not choose, "validation" the rest."""
    mask = held_out(labels, fraction)
    chosen = mask if split == "validation" else ~mask
    return images[chosen], labels[chosen]


def load_arrays(name, split, data_dir=None, val_split=False):
    """(uint8 [N, H, W, 3], int32 [N]) of a small data set's split."""
    name = canonical_name(name)
    fraction = val_fraction(val_split)
    check_split(split, ("train", "validation", "test") if fraction else ("train", "test"))
    base_split = "train" if split == "validation" else split
    if name == "digits":
        images, labels = digits_arrays(base_split)
    elif name in CIFAR and data_dir and cifar_locate(name, data_dir):
        images, labels = cifar_python_arrays(name, data_dir, base_split)
    else:
        images, labels = tfds_arrays(name, data_dir, base_split)
    return holdout(images, labels, split, fraction) if fraction and split != "test" else (images, labels)
