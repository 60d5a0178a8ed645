"""Your own images, end to end: class folders written here in real formats (PNG of mixed
sizes, greyscale, RGBA, palette; a corrupt file; a text file), trained on with every
preprocessing mode, evaluated from the run dir alone, exported, and served back as a
class name; --val_split's held-out files; refused reruns that leave the run dir as it was;
the README's CIFAR-10 command on the tarball as published."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from data_writers import encode, write_cifar10_tarball

import keras_resnet
import keras_resnet.data as data
from keras_resnet.data.arrays import digits_arrays
from keras_resnet.preprocessing import MODES, preprocess_input
from keras_resnet.training import loop
from keras_resnet.training.config import recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("nought", "one", "two")
PIL_MODES = ("RGB", "L", "RGBA", "P")
SIZES = (32, 40, 27, 36)


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def write_own_images(root, per_class=24):
    """root/train/<class>/*.png: digits 0-2 in four PIL modes and four sizes, plus a file
    with a PNG header and nothing after it, a truncated PNG and a text file."""
    images, labels = digits_arrays("train")
    for label, name in enumerate(NAMES):
        os.makedirs(root / "train" / name)
        for i, image in enumerate(images[labels == label][:per_class]):
            size = SIZES[i % len(SIZES)]
            resized = np.asarray(tf.image.resize(image, [size, size], "nearest"), np.uint8)
            (root / "train" / name / f"{i:03d}.png").write_bytes(encode(resized, "PNG", mode=PIL_MODES[i % 4]))
    (root / "train" / "nought" / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    whole = encode(images[0], "PNG")
    (root / "train" / "one" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "train" / "two" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def own_dir(tmp_path_factory):
    return str(write_own_images(tmp_path_factory.mktemp("own") / "shapes3"))


def own_config(data_dir, model_dir, **overrides):
    settings = dict(
        data_dir=data_dir,
        model="resnet20",
        model_dir=str(model_dir),
        image_size=32,
        val_split=0.25,
        batch_size=8,
        train_steps=2,
        seed=0,
        log_interval=1,
        eval_interval=0,
        checkpoint_interval=2,
    )
    return recipe("cifar", **{**settings, **overrides})


def run_cli(*args, timeout=300):
    """(status, stdout, stdout + stderr) of a script run as a user runs it."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout, done.stdout + done.stderr


# ---------------------------------------------------------------- the data layer


def test_folders_summary_names_classes_counts_and_skips(own_dir):
    lines = "\n".join(data.describe("shapes3", own_dir, val_split=0.25))
    assert "data: shapes3 from" in lines and "3 classes" in lines
    assert "train: nought 19, one 19, two 18" in lines  # 24 + 1 broken, 24 + 1 broken, 24; 6 held out of each
    assert "validation (0.25 of train/ held out, stratified): nought 6, one 6, two 6" in lines
    assert "notes.txt: not an image file name" in lines
    # A header-only PNG passes the listing and is skipped, named, when it fails to decode.
    info = data.dataset_info("shapes3", own_dir, val_split=0.25)
    assert info.class_names == list(NAMES) and info.num_examples == {"train": 56, "validation": 6 * 3}


def test_val_split_is_stratified_and_disjoint(own_dir):
    train = data.folder_split(own_dir, "train", 0.25)
    held = data.folder_split(own_dir, "validation", 0.25)
    assert not set(train.paths) & set(held.paths)
    listed = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(own_dir) for f in fs if f.endswith(".png"))
    assert sorted(train.paths + held.paths) == listed
    assert np.bincount(held.labels).tolist() == [6, 6, 6]


@pytest.mark.slow
def test_val_split_holds_out_the_same_files_in_a_fresh_process(own_dir):
    held = data.folder_split(own_dir, "validation", 0.25)
    script = (
        "import sys, keras_resnet.data as d; print('\\n'.join(d.folder_split(sys.argv[1], 'validation', 0.25).paths))"
    )
    rc, out, _ = run_cli("-c", script, own_dir, timeout=120)
    assert rc == 0, out
    assert [line for line in out.splitlines() if line.startswith(own_dir)] == list(held.paths)


def check_modes_views(name, data_dir, val_split, views, modes=MODES):
    """Each mode in training and in each view: RGB images of 3 channels, equal to
    preprocess_input of the unprocessed view."""
    common = dict(data_dir=data_dir, val_split=val_split, image_size=32)
    split = "test" if name == "digits" else "validation"
    raws = {}
    for view in views:
        batch_size, scale = (1, 40) if view == "multiscale" else (3, None)
        kw = dict(view=view, scale=scale, **common)
        raw = data.make_eval_input_fn(name, split, batch_size, preprocess_mode="pixel_mean", mean=np.zeros(3), **kw)
        raws[view] = (kw, batch_size, next(iter(raw(None)))[0].numpy())
    for mode in modes:
        mean = np.asarray([120.0, 110.0, 100.0], np.float32) if mode == "pixel_mean" else None
        train = data.make_input_fn(name, "train", 4, training=True, preprocess_mode=mode, mean=mean, seed=0, **common)
        batch, _ = next(iter(train(None)))
        assert batch.shape == (4, 32, 32, 3), (name, mode)
        for view, (kw, batch_size, x) in raws.items():
            done = data.make_eval_input_fn(name, split, batch_size, preprocess_mode=mode, mean=mean, **kw)
            y = next(iter(done(None)))[0].numpy()
            assert y.shape[-1] == 3 and y.shape == x.shape, (name, view, mode)
            np.testing.assert_allclose(y, preprocess_input(x, mode, mean), atol=1e-4)


def test_every_mode_on_folders_of_every_colour_mode(own_dir):
    check_modes_views("shapes3", own_dir, 0.25, ("center",))


@pytest.mark.slow
def test_every_mode_on_every_source_and_view(own_dir, tmp_path):
    """Folders (train/ with val_split), TFRecords and an in-memory set, each view."""
    from data_writers import example, write_shards

    images, labels = digits_arrays("test")
    records = [
        example(encode(image, "PNG", mode=PIL_MODES[i % 4]), int(label) + 1)
        for i, (image, label) in enumerate(zip(images[:6], labels[:6]))
    ]
    write_shards(str(tmp_path), "validation", records, 2)
    write_shards(str(tmp_path), "train", records, 2)
    every_view = ("center", "10crop", "multiscale")
    check_modes_views("shapes3", own_dir, 0.25, every_view)
    check_modes_views("imagenet", str(tmp_path), 0.0, every_view)
    check_modes_views("digits", None, 0.0, ("center",))


# ---------------------------------------------------------------- the journey


def _listing(directory):
    """Every file under a directory with its size and mtime: what a refused run must not change
    (the lock aside: taking it is how a run starts)."""
    return {
        os.path.join(dp, f): (os.stat(os.path.join(dp, f)).st_size, os.stat(os.path.join(dp, f)).st_mtime_ns)
        for dp, _, fs in os.walk(directory)
        for f in fs
        if f != "training.lock"
    }


@pytest.fixture(scope="module")
def trained(own_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("runs") / "shapes3"
    result = loop.train(own_config(own_dir, model_dir, preprocess_mode="tf"))
    return result


def test_a_folder_run_is_named_after_its_directory_and_lists_its_held_out_files(trained, own_dir):
    config = json.loads(open(os.path.join(trained.model_dir, "config.json")).read())
    assert config["training"]["dataset"] == "shapes3" and config["record"]["class_names"] == list(NAMES)
    with open(os.path.join(trained.model_dir, "held_out.txt")) as f:
        listed = f.read().split()
    held = data.folder_split(own_dir, "validation", 0.25).paths
    assert [os.path.join(own_dir, p) for p in listed] == list(held)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(model="resnet32"), "network: recorded 'resnet20', given 'resnet32'"),
        (dict(shortcut="B"), "architecture shortcut: recorded 'A', given 'B'"),
        (dict(dataset="other"), "dataset: recorded 'shapes3', given 'other'"),
        (dict(image_size=40), "architecture input_shape: recorded [32, 32, 3], given [40, 40, 3]"),
        (dict(batch_size=4), "batch_size: recorded 8, given 4"),
    ],
)
def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(trained, own_dir, change, named):
    before = _listing(trained.model_dir)
    with pytest.raises(ValueError, match=re.escape(named)):
        loop.train(own_config(own_dir, trained.model_dir, preprocess_mode="tf", train_steps=4, **change))
    assert _listing(trained.model_dir) == before


@pytest.mark.slow
def test_a_resume_holds_out_the_same_files(trained, own_dir):
    before = open(os.path.join(trained.model_dir, "held_out.txt")).read()
    result = loop.train(own_config(own_dir, trained.model_dir, preprocess_mode="tf", train_steps=3))
    assert result.step == 3
    assert open(os.path.join(trained.model_dir, "held_out.txt")).read() == before


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pixel_mean", "caffe", "torch"])
def test_every_preprocessing_mode_trains_on_folders(own_dir, tmp_path, mode):
    result = loop.train(own_config(own_dir, tmp_path / mode, preprocess_mode=mode))
    assert result.step == 2 and np.isfinite(result.train["loss"])
    if mode == "pixel_mean":  # the folder set's own per-channel mean, kept in the run dir
        mean = keras_resnet.load(result.model_dir).mean
        assert mean.shape == (1, 1, 3) and 20 < mean.ravel()[0] < 120


def test_evaluate_needs_only_the_run_dir(trained):
    rc, out, everything = run_cli("train/evaluate.py", f"--model_dir={trained.model_dir}")
    assert rc == 0, everything[-3000:]
    assert "shapes3 validation" in out and "nought" in out
    header, row = [line for line in out.splitlines() if line.strip()][-2:]
    assert row.split()[-2:] == ["-", "18"]  # no top-5 for 3 classes; the 18 held-out images
    assert os.path.isfile(os.path.join(trained.model_dir, "confusion_validation_center.png"))


@pytest.mark.slow
def test_export_with_default_flags_serves_a_class_name_for_a_held_out_image(trained, own_dir, tmp_path):
    base = tmp_path / "serving"
    rc, _, out = run_cli(
        "export/to_saved_model.py", f"--model_dir={trained.model_dir}", f"--base_path={base}", timeout=600
    )
    assert rc == 0, out[-3000:]
    (version,) = [os.path.join(dp) for dp, _, fs in os.walk(base) if "saved_model.pb" in fs]
    served = tf.saved_model.load(version).signatures["serve_image_bytes"]
    held = data.folder_split(own_dir, "validation", 0.25)
    path = next(p for p in held.paths if not p.endswith("header_only.png"))
    encoded = open(path, "rb").read()
    outputs = served(image_bytes=tf.constant([encoded]))
    names = [n.decode() for n in np.ravel(outputs["class_names"].numpy())]
    assert set(names) <= set(NAMES) and names
    # The served image is the one evaluation saw: the run's centre view (37, then 32), its mean.
    import keras_resnet
    from keras_resnet.data import views

    loaded = keras_resnet.load(trained.model_dir)
    view = views.center_view(tf.constant(encoded), 32, 37)[None].numpy()
    expected = loaded.model.predict(loaded.preprocess(view), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-4)
    assert names[0] == NAMES[int(np.argmax(expected))]


@pytest.mark.slow
def test_the_readmes_cifar_command_trains_and_evaluates_on_the_published_tarball(tmp_path):
    """train/cifar10.py --data_dir on cifar-10-python.tar.gz (Python 2 pickles), then
    train/evaluate.py from the run dir alone: the test split, named by batches.meta."""
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 10)
    test = (rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_cifar10_tarball(str(tmp_path), train, test, names)
    run_dir = tmp_path / "r20"
    flags = ["--model=resnet20", "--train_steps=3", "--lr_boundaries=1,2", "--batch_size=8", "--eval_interval=0"]
    rc, out, everything = run_cli("train/cifar10.py", f"--data_dir={tmp_path}", f"--model_dir={run_dir}", *flags)
    assert rc == 0, everything[-3000:]
    assert "read as cifar_python; 10 classes, train 40 images, test 20 images" in out
    assert json.load(open(run_dir / "config.json"))["record"]["class_names"] == names
    rc, out, everything = run_cli("train/evaluate.py", f"--model_dir={run_dir}")
    assert rc == 0, everything[-3000:]
    assert "cifar10 test" in out and "truck" in out
    assert out.split()[-1] == "20"  # every test image evaluated


@pytest.mark.slow
def test_int8_export_calibrates_on_kept_images_and_measures_on_held_out_ones(trained, own_dir, tmp_path):
    """A run on train/ alone with --val_split: int8 is calibrated on the images it trained on
    (none held out) and its accuracy measured on the held-out images (there is no test/)."""
    from keras_resnet.export import calibration, sources
    from keras_resnet.export.run import export_run

    source = sources.from_run_dir(trained.model_dir)
    kept, held = (data.folder_split(own_dir, split, 0.25).paths for split in ("train", "validation"))
    calibration_images, eval_images, eval_labels = calibration.source_images(source, 1000, 1000)
    readable = lambda paths: sum(not p.endswith(("header_only.png", "truncated.png")) for p in paths)  # noqa: E731
    assert len(eval_images) == len(eval_labels) == readable(held) == 18
    assert len(calibration_images) == readable(kept) == 3 * 24 - 18
    flat_eval = eval_images.reshape(len(eval_images), -1)
    assert not any((flat_eval == image.ravel()).all(axis=1).any() for image in calibration_images)
    lines = []
    result = export_run(trained.model_dir, str(tmp_path / "export"), fp16=False, log=lines.append)
    assert os.path.isfile(result.onnx.int8_path), lines
    assert result.onnx.int8_report["images"] == 18


# ---------------------------------------------------------------- data nobody can read


def test_all_corrupt_folders_are_an_error_naming_the_source_not_a_hang(tmp_path):
    rng = np.random.default_rng(0)
    for name in NAMES:
        os.makedirs(tmp_path / "train" / name)
        for i in range(3):
            (tmp_path / "train" / name / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(64))
    with pytest.raises(ValueError, match=rf"no readable image in {tmp_path.name} train \({tmp_path}\): the first 9"):
        data.make_input_fn(tmp_path.name, "train", 4, training=True, data_dir=str(tmp_path), preprocess_mode="tf")


def test_folders_without_one_image_file_are_an_error_counting_the_skips(tmp_path):
    for name in NAMES:
        os.makedirs(tmp_path / "train" / name)
        (tmp_path / "train" / name / "a.jpg").write_bytes(b"GARBAGE" * 10)
    with pytest.raises(ValueError, match=r"no images .* \(3 files skipped, e.g. .*a.jpg: not a JPEG, PNG, GIF or BMP"):
        data.dataset_info(tmp_path.name, str(tmp_path))


def test_all_corrupt_tfrecords_are_an_error_naming_the_source(tmp_path):
    from data_writers import example, write_shards

    rng = np.random.default_rng(0)
    write_shards(str(tmp_path), "validation", [example(b"\xff\xd8\xff" + rng.bytes(50), 1) for _ in range(5)], 2)
    write_shards(str(tmp_path), "train", [b"not an example"] * 4, 1)
    for split in ("validation", "train"):
        with pytest.raises(ValueError, match=rf"no readable image in imagenet {split} \({tmp_path}\)"):
            data.make_input_fn("imagenet", split, 2, training=split == "train", data_dir=str(tmp_path))


@pytest.mark.slow
def test_training_on_all_corrupt_folders_exits_with_one_line(tmp_path):
    for name in NAMES:
        os.makedirs(tmp_path / "bad" / "train" / name)
        (tmp_path / "bad" / "train" / name / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    rc, _, out = run_cli(
        "train/cifar10.py",
        f"--data_dir={tmp_path / 'bad'}",
        f"--model_dir={tmp_path / 'run'}",
        "--train_steps=2",
        timeout=180,
    )
    assert rc != 0 and "error: no readable image in bad train" in out, out[-2000:]
    assert "Traceback" not in out
