"""Class folders checked before training: holes that would train a head wrong, and how
many images carry an EXIF orientation the pipeline does not apply.

A class folder without a training image (empty, or emptied by --val_split) still gets an
output that never sees a positive example; a single class trains a 1-way softmax whose
loss is 0 from the start. Both are refused, naming the class and the fix.

EXIF orientation is ignored everywhere, as TensorFlow's image decoders ignore it: training,
evaluation and every export read the pixels as stored, and so do TF Serving clients that
send the file's bytes. A phone photo stored sideways is trained on sideways and must be
served the same way. The start-up summary counts such files on a bounded sample.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf

from keras_resnet.data import sources

# Images opened (headers only) to count EXIF orientations: spread evenly over the split.
EXIF_SAMPLE = 512
EXIF_ORIENTATION = 0x0112  # 1: as stored; 2..8: mirrored and/or rotated
EXIF_HEAD_BYTES = 1 << 17
LISTED = 5


def _names(classes, counts=None):
    shown = [f"{name!r}" + (f" ({counts[i]} image(s))" if counts is not None else "") for i, name in classes[:LISTED]]
    return ", ".join(shown) + (f" and {len(classes) - LISTED} more" if len(classes) > LISTED else "")


def check_training_classes(data_dir, val_split=0.0):
    """A ValueError before training where class folders cannot train a classifier: fewer
    than 2 classes, or a class without a training image (none in its folder, or all of
    them held out by val_split)."""
    classes = sources.folder_classes(data_dir)
    train_dir = sources.folder_split_dir(data_dir, "train")
    if len(classes) < 2:
        raise ValueError(
            f"{len(classes)} class folder ({', '.join(classes)}) in {train_dir!r}: a classifier needs 2 classes "
            "or more; add a folder of images per class"
        )
    whole = np.bincount(sources.list_folder_split(data_dir, "train").labels, minlength=len(classes))
    empty = [(i, name) for i, name in enumerate(classes) if whole[i] == 0]
    if empty:
        raise ValueError(
            f"class folder(s) {_names(empty)} in {train_dir!r} hold no readable image: add images to them "
            "or remove them (each class folder is an output of the network)"
        )
    kept = np.bincount(sources.folder_split(data_dir, "train", val_split).labels, minlength=len(classes))
    emptied = [(i, name) for i, name in enumerate(classes) if kept[i] == 0]
    if emptied:
        raise ValueError(
            f"--val_split {val_split} holds out every training image of class(es) {_names(emptied, whole)}: "
            "add images to them, lower --val_split, or give a validation/ folder of its own"
        )


def _orientation(path):
    """The EXIF orientation of an image file (1 where it has none, or its header is damaged),
    from its first bytes (a JPEG's EXIF segment is at most 64 KiB, right after its start)."""
    from PIL import Image

    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(EXIF_HEAD_BYTES)
    try:
        with Image.open(io.BytesIO(head)) as image:
            return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError):  # what Pillow raises for a damaged header
        return 1


def exif_rotated(paths, limit=EXIF_SAMPLE):
    """(images whose EXIF orientation is not 1, images looked at) among up to `limit` of
    `paths`, spread evenly; only headers are read."""
    picked = paths[:: max(1, len(paths) // limit)][:limit]
    return sum(_orientation(path) != 1 for path in picked), len(picked)


def exif_line(paths):
    """The start-up line counting images stored rotated or mirrored (EXIF orientation)."""
    rotated, seen = exif_rotated(paths)
    return (
        f"  EXIF orientation: {rotated} of {seen} images looked at are stored rotated or mirrored; "
        "read as stored (orientation ignored, as TensorFlow's decoders and TF Serving clients do)"
    )
