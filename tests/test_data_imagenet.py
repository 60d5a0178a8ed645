"""ImageNet as users download it, written here in the real layouts with tiny JPEGs: Kaggle's
ILSVRC/Data/CLS-LOC tree with LOC_val_solution.csv, and the original train/ and flat val/
with the devkit's ground truth and a meta.mat whose devkit IDs are not in sorted WordNet
order. Every val image must be labelled by its true class's sorted-WordNet index (the
output order of keras.applications' weights); both layouts train and evaluate."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from data_writers import encode, example, solid, write_shards

import keras_resnet.data as data
from keras_resnet.training import loop
from keras_resnet.training.config import recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Three ImageNet classes, in sorted WordNet order (labels 0, 1, 2), with their names.
WNIDS = ("n01440764", "n01443537", "n01484850")
NAMES = ("tench", "goldfish", "great white shark")
COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))
# Devkit IDs of the three classes: not their sorted order, as in the real meta.mat.
DEVKIT_IDS = {"n01484850": 1, "n01440764": 2, "n01443537": 3}
# The true class of val image 1, 2, ...: uneven counts (tench 1, goldfish 2, shark 3), so a
# label taken from the devkit ID's order gives other per-class counts.
VAL_TRUTH = ("n01484850", "n01443537", "n01440764", "n01484850", "n01443537", "n01484850")
SIZE = (36, 44)


def _jpeg(wnid):
    return encode(solid(*SIZE, COLOURS[WNIDS.index(wnid)]))


def _write_train_and_val(images_dir, per_class=4):
    """images_dir/train/<wnid>/<wnid>_<n>.JPEG and a flat images_dir/val/ILSVRC2012_val_<n>.JPEG."""
    for wnid in WNIDS:
        os.makedirs(images_dir / "train" / wnid)
        for n in range(per_class):
            (images_dir / "train" / wnid / f"{wnid}_{n + 1}.JPEG").write_bytes(_jpeg(wnid))
    os.makedirs(images_dir / "val")
    for number, wnid in enumerate(VAL_TRUTH, start=1):
        (images_dir / "val" / f"ILSVRC2012_val_{number:08d}.JPEG").write_bytes(_jpeg(wnid))


def write_kaggle(root):
    """Kaggle's download: root/ILSVRC/Data/CLS-LOC/{train,val}, root/LOC_val_solution.csv
    (rows out of order; each PredictionString one or two boxes of the image's class)."""
    _write_train_and_val(root / "ILSVRC" / "Data" / "CLS-LOC")
    os.makedirs(root / "ILSVRC" / "Data" / "CLS-LOC" / "test")  # flat, unlabelled: not read
    (root / "ILSVRC" / "Data" / "CLS-LOC" / "test" / "ILSVRC2012_test_00000001.JPEG").write_bytes(_jpeg(WNIDS[0]))
    rows = [
        f"ILSVRC2012_val_{number:08d},{wnid} 10 12 30 33 " + (f"{wnid} 1 2 20 21 " if number % 2 else "")
        for number, wnid in enumerate(VAL_TRUTH, start=1)
    ]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    return root


def write_meta_mat(path):
    """The devkit's meta.mat: a `synsets` struct array of leaves (num_children 0) and one
    inner synset (num_children 2), as scipy.io.savemat writes MATLAB structs."""
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height")
    rows = [
        (devkit_id, wnid, NAMES[WNIDS.index(wnid)], "a fish", 0, np.zeros((1, 0)), 0)
        for wnid, devkit_id in DEVKIT_IDS.items()
    ]
    rows.append((1001, "n00001740", "entity", "that which exists", 2, np.array([[1, 2]]), 18))
    synsets = np.empty((len(rows), 1), dtype=[(field, "O") for field in fields])
    for i, row in enumerate(rows):
        for field, value in zip(fields, row):
            synsets[i, 0][field] = value
    scipy.io.savemat(path, {"synsets": synsets})


def write_devkit(root):
    """The original tarballs extracted: root/train/<wnid>/, a flat root/val/ and
    root/ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt, meta.mat}."""
    _write_train_and_val(root)
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    os.makedirs(devkit)
    truth = "".join(f"{DEVKIT_IDS[wnid]}\n" for wnid in VAL_TRUTH)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    write_meta_mat(str(devkit / "meta.mat"))
    return root


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory):
    return write_kaggle(tmp_path_factory.mktemp("kaggle"))


@pytest.fixture(scope="module")
def devkit_root(tmp_path_factory):
    return write_devkit(tmp_path_factory.mktemp("devkit"))


TRUE_LABELS = [WNIDS.index(wnid) for wnid in VAL_TRUTH]


@pytest.mark.parametrize("layout", ["kaggle", "kaggle_cls_loc", "devkit"])
def test_each_val_image_is_labelled_by_its_true_classs_sorted_index(kaggle_root, devkit_root, layout):
    data_dir = {
        "kaggle": kaggle_root,
        "kaggle_cls_loc": kaggle_root / "ILSVRC" / "Data" / "CLS-LOC",
        "devkit": devkit_root,
    }[layout]
    found = data.folder_split(str(data_dir), "validation")
    assert [os.path.basename(p) for p in found.paths] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 7)]
    assert list(found.labels) == TRUE_LABELS
    assert list(found.labels) != [DEVKIT_IDS[wnid] - 1 for wnid in VAL_TRUTH]  # the devkit-order mistake
    info = data.dataset_info("imagenet", str(data_dir))
    assert info.class_names == list(NAMES) and info.class_ids == list(WNIDS)
    assert info.num_examples == {"train": 12, "validation": 6}


@pytest.mark.slow
def test_the_pipeline_yields_each_val_image_with_its_true_label(devkit_root):
    """The labels of the batches go with the images' pixels (each class its own colour)."""
    input_fn = data.make_input_fn(
        "imagenet", "validation", 6, training=False, data_dir=str(devkit_root), image_size=32, preprocess_mode="tf"
    )
    images, labels = next(iter(input_fn(None)))
    assert labels.numpy().tolist() == TRUE_LABELS
    colours = np.asarray(COLOURS, np.float32) / 127.5 - 1  # preprocessing mode "tf"
    nearest = np.argmin(((images.numpy().mean(axis=(1, 2))[:, None] - colours[None]) ** 2).sum(-1), axis=1)
    assert nearest.tolist() == TRUE_LABELS


def test_the_summary_names_classes_and_keeps_their_wordnet_ids(devkit_root):
    lines = "\n".join(data.describe("imagenet", str(devkit_root)))
    assert "validation: tench 1, goldfish 2, great white shark 3" in lines
    assert "tench n01440764" in lines


def test_a_flat_val_without_its_labels_names_the_files_that_label_it(tmp_path):
    _write_train_and_val(tmp_path)
    with pytest.raises(ValueError, match=r"not in a class folder \(a flat ImageNet val/ is labelled by LOC_val_sol"):
        data.folder_split(str(tmp_path), "validation")


def test_a_devkit_id_outside_meta_mat_is_an_error_naming_its_line(tmp_path):
    root = write_devkit(tmp_path)
    (root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n1001\n")
    with pytest.raises(ValueError, match=r"ground_truth.txt line 2: '1001' is no devkit ID of meta.mat"):
        data.folder_split(str(root), "validation")


# ---------------------------------------------------------------- trained and evaluated


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["kaggle", "devkit"])
def test_trains_and_evaluate_scores_each_val_image_under_its_true_class(kaggle_root, devkit_root, tmp_path, layout):
    data_dir = str(kaggle_root if layout == "kaggle" else devkit_root)
    config = recipe(
        "cifar",
        dataset="imagenet",
        data_dir=data_dir,
        model="resnet20",
        model_dir=str(tmp_path / "run"),
        image_size=32,
        batch_size=4,
        train_steps=2,
        seed=0,
        log_interval=1,
        eval_interval=0,
        checkpoint_interval=2,
    )
    result = loop.train(config)
    assert result.step == 2
    saved = json.load(open(os.path.join(result.model_dir, "config.json")))
    assert saved["record"]["class_names"] == list(NAMES)
    done = subprocess.run(
        [sys.executable, "train/evaluate.py", f"--model_dir={result.model_dir}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    per_class = [
        re.match(rf"^({name})\s+[\d.]+%\s+(\d+)$", line) for line in done.stdout.splitlines() for name in NAMES
    ]
    rows = dict(match.groups() for match in per_class if match)
    assert rows == {"tench": "1", "goldfish": "2", "great white shark": "3"}, done.stdout
    assert tf.io.gfile.exists(os.path.join(result.model_dir, "confusion_validation_center.png"))


# ---------------------------------------------------------------- TFRecords checked


def synset_example(image, label, synset=None):
    """A tf.train.Example as TPU / Model Garden shards hold it: image/class/synset too."""
    record = tf.train.Example.FromString(example(image, label))
    if synset is not None:
        record.features.feature["image/class/synset"].bytes_list.value.append(synset.encode())
    return record.SerializeToString()


def write_records(directory, labels_and_synsets, shards=2):
    """train and validation shards of the three fish, each image its class's colour."""
    os.makedirs(directory, exist_ok=True)
    records = [synset_example(_jpeg(WNIDS[cls]), label, synset) for cls, label, synset in labels_and_synsets]
    for split in ("train", "validation"):
        write_shards(str(directory), split, records, shards)
    return str(directory)


# (true class, then label and synset as written) of six records.
ZERO_BASED = [(cls, cls, WNIDS[cls]) for cls in (0, 1, 2, 2, 1, 2)]


def test_the_summary_says_records_count_from_zero_and_counts_each_class(tmp_path):
    lines = "\n".join(data.describe("imagenet", write_records(tmp_path, ZERO_BASED, shards=1)))
    zero = "(labels counted from 0, as their image/class/synset say)"
    assert f"  train, the first 6 records of its shards {zero}: tench 1, goldfish 2, great white shark 3" in lines


@pytest.mark.slow
def test_records_counted_from_zero_are_read_as_their_synsets_say_never_shifted(tmp_path):
    data_dir = write_records(tmp_path, ZERO_BASED, shards=1)
    input_fn = data.make_input_fn("imagenet", "validation", 6, training=False, data_dir=data_dir, image_size=32)
    images, labels = next(iter(input_fn(None)))
    assert labels.numpy().tolist() == [cls for cls, _, _ in ZERO_BASED]


def test_labels_that_disagree_with_their_synsets_are_an_error_naming_the_records(tmp_path):
    shuffled = [(cls, cls + 1, WNIDS[cls]) for cls in (0, 1, 2, 2, 1)] + [(2, 2, WNIDS[2])]
    data_dir = write_records(tmp_path, shuffled, shards=1)
    with pytest.raises(ValueError, match=r"validation-00000-of-00001 record 5: label 2 synset n01484850.*\+ 1"):
        data.make_input_fn("imagenet", "validation", 6, training=False, data_dir=data_dir)


@pytest.mark.parametrize(
    "label, message",
    [
        (1001, r"outside 1..1000 \(1000 classes\): \S*train-00000-of-00001 record 2: label 1001$"),
        (0, r"outside 1..1000 .*train-00000-of-00001 record 2: label 0 \(labels count from 1, as TensorFlow's"),
    ],
)
def test_a_label_outside_the_classes_is_an_error_before_reading(tmp_path, label, message):
    data_dir = write_records(tmp_path, [(0, 1, None), (1, 2, None), (2, label, None)], shards=1)
    with pytest.raises(ValueError, match=message):
        data.make_input_fn("imagenet", "train", 4, training=True, data_dir=data_dir)


def test_a_head_of_fewer_classes_than_the_records_hold_is_refused(tmp_path, devkit_root):
    data_dir = write_records(tmp_path, [(cls, cls + 1, WNIDS[cls]) for cls in (0, 1, 2)], shards=1)
    data.check_head_classes("imagenet", data_dir, 3)
    with pytest.raises(ValueError, match=r"classes=2 is too few for imagenet: .* label 3 synset n01484850"):
        data.check_head_classes("imagenet", data_dir, 2)
    with pytest.raises(ValueError, match=r"classes=2 is too few for imagenet, which holds 3 classes \(tench, gold"):
        data.check_head_classes("imagenet", str(devkit_root), 2)


@pytest.mark.slow
def test_label_1001_on_the_1000_class_head_ends_the_trainer_in_one_line_before_training(tmp_path):
    data_dir = write_records(tmp_path / "records", [(0, 1, None), (1, 1001, None)], shards=1)
    done = subprocess.run(
        [sys.executable, "train/imagenet.py", f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}"]
        + ["--model=resnet20", "--image_size=32", "--batch_size=2", "--train_steps=1"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "outside 1..1000" in errors[0], done.stderr[-2000:]
    assert errors[0].endswith("train-00000-of-00001 record 1: label 1001") and "Traceback" not in done.stderr
    assert not tf.io.gfile.glob(str(tmp_path / "run" / "ckpt*"))
