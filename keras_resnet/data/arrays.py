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

import numpy as np
import tensorflow as tf

from keras_resnet.data.catalog import LAYOUTS, canonical_name, check_split, tfds_builder, tfds_dataset, tfds_module

DIGITS_TEST_SIZE = 360
SPLIT_SEED = 0
VALIDATION_FRACTION = 10  # val_split holds out 1/10 of train: CIFAR's 5k of 50k
CIFAR = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", 10, b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", 100, b"fine_labels", "meta", b"fine_label_names"),
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
        if tf.io.gfile.exists(os.path.join(candidate, CIFAR_FILES[name]["test"][0])):
            return "dir", candidate
    return None


def _cifar_members(kind, path, names):
    """{file name: unpickled dict} of the batch files `names`."""
    found = {}
    if kind == "dir":
        for member in names:
            with tf.io.gfile.GFile(os.path.join(path, member), "rb") as f:
                found[member] = pickle.load(f, encoding="bytes")
        return found
    with tf.io.gfile.GFile(path, "rb") as raw, tarfile.open(fileobj=io.BytesIO(raw.read()), mode="r:gz") as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base in names:
                found[base] = pickle.load(tar.extractfile(member), encoding="bytes")
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"{path!r} lacks {missing}: not a CIFAR python tarball")
    return found


@functools.cache
def cifar_python_arrays(name, data_dir, split):
    """CIFAR-10/100 from `cifar-10-python.tar.gz` or its extracted batches, no download.

    Labels outside [0, classes) raise a ValueError naming the batch file.
    """
    check_split(split, ("train", "test"))
    located = cifar_locate(name, data_dir)
    if located is None:
        raise ValueError(f"no {name} python files in {data_dir!r}; {LAYOUTS}")
    classes, label_key = CIFAR[name][2], CIFAR[name][3]
    batches = _cifar_members(*located, CIFAR_FILES[name][split])
    images, labels = [], []
    for member in CIFAR_FILES[name][split]:
        batch = batches[member]
        label = np.asarray(batch[label_key], dtype=np.int64)
        bad = label[(label < 0) | (label >= classes)]
        if bad.size:
            raise ValueError(f"label {int(bad[0])} outside [0, {classes}) in {os.path.join(located[1], member)}")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(label.astype(np.int32))
    return np.concatenate(images), np.concatenate(labels)


def cifar_python_class_names(name, data_dir):
    kind, path = cifar_locate(name, data_dir)
    meta_name, names_key = CIFAR[name][4], CIFAR[name][5]
    meta = _cifar_members(kind, path, [meta_name])[meta_name]
    return [n.decode() for n in meta[names_key]]


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


def holdout(images, labels, split):
    """val_split: a fixed 1/10 of the training set held out (CIFAR: 45k train, 5k val)."""
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    cut = len(labels) - len(labels) // VALIDATION_FRACTION
    chosen = np.sort(order[:cut] if split == "train" else order[cut:])
    return images[chosen], labels[chosen]


def load_arrays(name, split, data_dir=None, val_split=False):
    """(uint8 [N, H, W, 3], int32 [N]) of a small data set's split."""
    name = canonical_name(name)
    check_split(split, ("train", "validation", "test") if val_split else ("train", "test"))
    base_split = "train" if split == "validation" else split
    if name == "digits":
        images, labels = digits_arrays(base_split)
    elif name in CIFAR and data_dir and cifar_locate(name, data_dir):
        images, labels = cifar_python_arrays(name, data_dir, base_split)
    else:
        images, labels = tfds_arrays(name, data_dir, base_split)
    return holdout(images, labels, split) if val_split and split != "test" else (images, labels)
