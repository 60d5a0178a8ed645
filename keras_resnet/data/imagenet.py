"""ImageNet as it is downloaded: Kaggle's ILSVRC tree and the original tarballs with their devkit.

Both keep train/ as one folder per WordNet id but the validation images in one flat folder,
labelled by a file beside them:
- Kaggle (`kaggle competitions download imagenet-object-localization-challenge`):
  ROOT/ILSVRC/Data/CLS-LOC/{train,val}/ and ROOT/LOC_val_solution.csv, whose rows are
  `ImageId,PredictionString` with the string "n01751748 x y x y n01751748 x y x y ..."
  (the WordNet id of each box; the first names the class).
- The original tarballs: DIR/train/<wnid>/, DIR/val/ILSVRC2012_val_00000001.JPEG ... and the
  extracted devkit DIR/ILSVRC2012_devkit_t12/data/: line i of
  ILSVRC2012_validation_ground_truth.txt is the devkit ID of val image i, and meta.mat's
  `synsets` maps devkit IDs to WordNet ids. Devkit IDs are not in sorted WordNet order
  (torchvision's `parse_devkit_archive` maps them the same way).

Labels are the index of the WordNet id among the sorted class folders of train/: with all
1,000 classes, the output order of keras.applications' ImageNet weights.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re

import tensorflow as tf

KAGGLE_TREE = os.path.join("ILSVRC", "Data", "CLS-LOC")
KAGGLE_SOLUTION = "LOC_val_solution.csv"
DEVKIT_DATA = os.path.join("ILSVRC2012_devkit_t12", "data")
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
# How far above a CLS-LOC folder LOC_val_solution.csv may lie (CLS-LOC -> Data -> ILSVRC -> root).
SOLUTION_LEVELS_UP = 3
WNID = re.compile(r"^n\d{8}$")


def images_root(data_dir):
    """The folder holding train/ and val/: Kaggle's ILSVRC/Data/CLS-LOC under a Kaggle
    download's root, else data_dir itself."""
    kaggle = os.path.join(data_dir, KAGGLE_TREE)
    return kaggle if tf.io.gfile.isdir(os.path.join(kaggle, "train")) else data_dir


def _parents(path, levels):
    path = os.path.normpath(path)
    for _ in range(levels + 1):
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def solution_csv(data_dir):
    """Kaggle's LOC_val_solution.csv at data_dir or up to three folders above it, or None."""
    for folder in _parents(data_dir, SOLUTION_LEVELS_UP):
        path = os.path.join(folder, KAGGLE_SOLUTION)
        if tf.io.gfile.exists(path):
            return path
    return None


def read_solution_csv(path):
    """{image id: WordNet id} of LOC_val_solution.csv (the first box's id names the class)."""
    with tf.io.gfile.GFile(path, "r") as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    if not rows or [cell.strip() for cell in rows[0][:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(f"{path}: expected the header 'ImageId,PredictionString', found {rows[:1]}")
    labels = {}
    for number, row in enumerate(rows[1:], start=2):
        wnid = row[1].split()[0] if len(row) > 1 and row[1].split() else ""
        if not WNID.match(wnid):
            raise ValueError(f"{path} line {number}: {row!r} does not start its PredictionString with a WordNet id")
        labels[row[0].strip()] = wnid
    return labels


def devkit_synsets(meta_path):
    """{devkit ID: WordNet id} of the devkit's meta.mat, leaf synsets only (num_children 0)."""
    from scipy import io as scipy_io

    with tf.io.gfile.GFile(meta_path, "rb") as f:
        synsets = scipy_io.loadmat(io.BytesIO(f.read()), squeeze_me=True)["synsets"]
    rows = synsets.reshape(-1)
    return {int(row["ILSVRC2012_ID"]): str(row["WNID"]) for row in rows if int(row["num_children"]) == 0}


def read_devkit_truth(devkit_dir):
    """{image id: WordNet id} of the devkit's validation ground truth: line i labels
    ILSVRC2012_val_<i, 8 digits>, its devkit ID mapped through meta.mat."""
    truth_path = os.path.join(devkit_dir, DEVKIT_TRUTH)
    synsets = devkit_synsets(os.path.join(devkit_dir, DEVKIT_META))
    with tf.io.gfile.GFile(truth_path, "r") as f:
        ids = f.read().split()
    labels = {}
    for number, text in enumerate(ids, start=1):
        if not text.isdigit() or int(text) not in synsets:
            raise ValueError(f"{truth_path} line {number}: {text!r} is no devkit ID of meta.mat (1..{len(synsets)})")
        labels[f"ILSVRC2012_val_{number:08d}"] = synsets[int(text)]
    return labels


@functools.cache
def flat_val_labels(data_dir):
    """(labels {image id: WordNet id}, the file they come from) for a flat val/ folder:
    Kaggle's solution csv, else the devkit's ground truth; None where neither is found."""
    path = solution_csv(images_root(data_dir))
    if path is not None:
        return read_solution_csv(path), path
    devkit = os.path.join(data_dir, DEVKIT_DATA)
    if tf.io.gfile.exists(os.path.join(devkit, DEVKIT_TRUTH)):
        return read_devkit_truth(devkit), os.path.join(devkit, DEVKIT_TRUTH)
    return None


def image_id(path):
    """ILSVRC2012_val_00000001 of .../ILSVRC2012_val_00000001.JPEG."""
    return os.path.splitext(os.path.basename(path))[0]


def wordnet_names(class_ids):
    """Human class names ("tench") for WordNet-id classes, from the class list the package
    ships; None where any class is not one of ImageNet's WordNet ids."""
    if not class_ids or not all(WNID.match(str(wnid)) for wnid in class_ids):
        return None
    from keras_resnet.preprocessing import imagenet_classes
    from keras_resnet.weights import imagenet_class_names

    names = dict(zip((wnid for wnid, _ in imagenet_classes()), imagenet_class_names()))
    if any(wnid not in names for wnid in class_ids):
        return None
    return [names[wnid] for wnid in class_ids]
