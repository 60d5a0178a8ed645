"""Class folders with holes, written here as JPEG files: an empty class folder, a single
class, a class --val_split empties are refused before training, naming the class and the
fix; files with an EXIF orientation are counted at start (and read as stored)."""

import io
import os

import numpy as np
import pytest
from data_writers import encode, solid
from PIL import Image

import keras_resnet.data as data


def write_classes(root, counts):
    """root/train/<class>/<n>.jpg, `counts[class]` images each (0: an empty folder)."""
    for k, (name, count) in enumerate(sorted(counts.items())):
        os.makedirs(root / "train" / name)
        for n in range(count):
            (root / "train" / name / f"{n}.jpg").write_bytes(encode(solid(12, 16, (40 * k, 80, 120))))
    return str(root)


def train_fn(data_dir, val_split=0.0):
    return data.make_input_fn("pets", "train", 2, training=True, data_dir=data_dir, val_split=val_split)


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    data_dir = write_classes(tmp_path, {"cats": 3, "dogs": 3, "newts": 0})
    with pytest.raises(ValueError, match=r"class folder\(s\) 'newts' in .*train' hold no readable image: add images"):
        train_fn(data_dir)


def test_a_single_class_is_refused(tmp_path):
    data_dir = write_classes(tmp_path, {"cats": 3})
    with pytest.raises(ValueError, match=r"1 class folder \(cats\) in .*: a classifier needs 2 classes or more"):
        train_fn(data_dir)


def test_a_class_the_split_empties_is_refused_naming_it_and_the_fix(tmp_path):
    data_dir = write_classes(tmp_path, {"cats": 4, "dogs": 4, "newts": 1})
    held = data.folder_split(data_dir, "validation", 0.6)
    assert any("newts" in path for path in held.paths)  # the one newt is held out
    with pytest.raises(ValueError, match=r"--val_split 0.6 holds out every training image of class\(es\) 'newts' \(1"):
        train_fn(data_dir, 0.6)
    train_fn(data_dir, 0.25)  # a split that leaves it one image trains


def _jpeg_with_orientation(orientation):
    image = Image.fromarray(np.asarray(solid(12, 16, (10, 20, 30))))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_the_summary_counts_images_stored_rotated_and_says_they_are_read_as_stored(tmp_path):
    data_dir = write_classes(tmp_path, {"cats": 3, "dogs": 3})
    for name, orientation in (("cats/1.jpg", 6), ("dogs/2.jpg", 3), ("dogs/0.jpg", 1)):
        (tmp_path / "train" / name).write_bytes(_jpeg_with_orientation(orientation))
    lines = "\n".join(data.describe("pets", data_dir))
    assert "EXIF orientation: 2 of 6 images looked at are stored rotated or mirrored; read as stored" in lines
