"""A run dir as the trainer really writes it, read one way by every tool.

One ResNet-20 run on class folders `base/` (digits named one, three, two, zero) is trained
here once; each test works on a copy. A resume is refused before anything is written where
the data's classes or the preprocessing differ, and keeps a changed learning rate as a
history; readers fall back past a truncated newest checkpoint, naming it; evaluation maps a
subset of the classes by name and refuses another list; `--init_weights RUN` brings its
network; the flat config.json of earlier runs still opens.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags
from data_writers import encode

import keras_resnet
from keras_resnet import evaluation, run_dir
from keras_resnet.data.arrays import digits_arrays
from keras_resnet.record import Record
from keras_resnet.training import cli, loop
from keras_resnet.training.config import TrainConfig, recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ("zero", "one", "two", "three")
LETTERS = ("a", "b", "c", "d")


def write_folders(root, names, per_class=6):
    """root/{train,validation}/<name>/*.png: digit i under the i-th name."""
    for split, offset in (("train", 0), ("validation", per_class)):
        images, labels = digits_arrays("train")
        for label, name in enumerate(names):
            os.makedirs(root / split / name)
            for i, image in enumerate(images[labels == label][offset : offset + per_class]):
                (root / split / name / f"{i:02d}.png").write_bytes(encode(image, "PNG"))
    return str(root)


def config(data_dir, model_dir, **overrides):
    settings = dict(
        data_dir=data_dir,
        model="resnet20",
        model_dir=str(model_dir),
        image_size=16,
        batch_size=8,
        train_steps=4,
        seed=0,
        log_interval=2,
        eval_interval=0,
        checkpoint_interval=2,
        keep_checkpoints=3,
    )
    return recipe("cifar", **{**settings, **overrides})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    return {
        "digits": write_folders(root / "digits" / "base", DIGITS),
        "letters": write_folders(root / "letters" / "base", LETTERS),
        "some": write_folders(root / "some" / "base", ("one", "zero")),
    }


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    """The run dir of 4 steps on the digit folders: checkpoints ckpt-2 and ckpt-4."""
    model_dir = tmp_path_factory.mktemp("trained") / "run"
    loop.train(config(folders["digits"], model_dir))
    return str(model_dir)


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run dir, for a test to change."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return str(copy)


def snapshot(model_dir):
    """Every file's bytes and mtime under config.json and checkpoints/."""
    files = [os.path.join(model_dir, "config.json")]
    files += [os.path.join(model_dir, "checkpoints", n) for n in os.listdir(os.path.join(model_dir, "checkpoints"))]
    return {path: (open(path, "rb").read(), os.stat(path).st_mtime_ns) for path in files}


def truncate_newest(model_dir):
    """Halve the newest checkpoint's .data file (ckpt-4); returns its path."""
    (data,) = [n for n in os.listdir(os.path.join(model_dir, "checkpoints")) if n.startswith("ckpt-4.data")]
    path = os.path.join(model_dir, "checkpoints", data)
    os.truncate(path, os.path.getsize(path) // 2)
    return path


def run_cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stdout + done.stderr


def test_config_json_holds_the_record_and_the_training_config_once(trained):
    config_json = json.loads(open(os.path.join(trained, "config.json")).read())
    assert sorted(config_json) == ["record", "training"]
    assert config_json["record"]["class_names"] == ["one", "three", "two", "zero"]
    assert config_json["record"]["preprocessing"]["mode"] == "pixel_mean"
    assert config_json["training"]["dataset"] == "base" and config_json["training"]["learning_rate"] == 0.1
    assert not {"preprocess_mode", "preprocessing", "class_names", "model_kwargs", "record"} & set(
        config_json["training"]
    )


def test_other_class_names_in_a_same_named_folder_are_refused_before_anything_is_written(run, folders):
    before = snapshot(run)
    with pytest.raises(ValueError) as error:
        loop.train(config(folders["letters"], run, train_steps=6))
    message = str(error.value)
    assert "class names: recorded ['one', 'three', 'two', 'zero'], given ['a', 'b', 'c', 'd']" in message
    assert "use another --model_dir" in message and f"--init_weights {run}" in message
    assert snapshot(run) == before
    assert run_dir.history(run) == []


def test_another_preprocessing_mode_is_refused_before_anything_is_written(run, folders):
    before = snapshot(run)
    with pytest.raises(ValueError) as error:
        loop.train(config(folders["digits"], run, train_steps=6, preprocess_mode="caffe"))
    message = str(error.value)
    assert "preprocessing mode: recorded 'pixel_mean', given 'caffe'" in message
    assert "mean: recorded channel means (" in message and "given None" in message
    assert snapshot(run) == before


def test_a_learning_rate_change_resumes_and_the_run_dir_keeps_both_values(run, folders, capsys):
    loop.train(config(folders["digits"], run, train_steps=6, learning_rate=0.05))
    output = capsys.readouterr().out
    assert (
        "learning_rate: 0.1 -> 0.05" in output
        and f"resumed from {os.path.join(run, 'checkpoints', 'ckpt-4')}" in output
    )
    assert run_dir.training_config(run)["learning_rate"] == 0.05
    (entry,) = run_dir.history(run)
    assert entry["step"] == 4 and entry["changed"]["learning_rate"] == [0.1, 0.05]
    assert entry["changed"]["train_steps"] == [4, 6]


@pytest.mark.slow
def test_the_flat_config_of_earlier_runs_opens_and_resumes(run, folders):
    """config.json as the trainer wrote it before: one flat dict with the record beside
    class_names, preprocessing (and pixel_mean.npy), model_kwargs."""
    new = json.loads(open(os.path.join(run, "config.json")).read())
    record = new["record"]
    np.save(os.path.join(run, "pixel_mean.npy"), np.asarray(record["preprocessing"]["mean"], "float32"))
    flat = {
        **new["training"],
        "model_kwargs": {"classes": 4, "input_shape": [16, 16, 3]},
        "preprocessing": {"mode": "pixel_mean", "mean_file": "pixel_mean.npy"},
        "preprocess_mode": "pixel_mean",
        "class_names": record["class_names"],
        "eval_view": {"resize": None, "crop": 16},
        "record": record,
    }
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(flat, f)
    loaded = keras_resnet.load(run)
    assert loaded.class_names == ("one", "three", "two", "zero") and loaded.record == Record.from_json(record)
    assert run_dir.training_config(run)["dataset"] == "base"
    loop.train(config(folders["digits"], run, train_steps=6))
    assert sorted(json.loads(open(os.path.join(run, "config.json")).read())) == ["record", "training"]


def test_load_falls_back_past_a_truncated_newest_checkpoint_and_names_it(run, trained, capfd):
    truncated = truncate_newest(run)
    loaded = keras_resnet.load(run)
    err = capfd.readouterr().err
    assert f"skipped checkpoint {os.path.join(run, 'checkpoints', 'ckpt-4')}: " in err
    assert f"read ckpt-2, the newest readable checkpoint of {run}" in err
    assert os.path.getsize(truncated) > 0  # a reader moves nothing aside
    reference = keras_resnet.ResNet20(weights=None, classes=4, input_shape=(16, 16, 3))
    run_dir.restore_newest(__import__("tensorflow").train.Checkpoint(model=reference), trained)
    assert not all(np.array_equal(a, b) for a, b in zip(loaded.model.get_weights(), reference.get_weights()))


def test_weights_show_prints_the_record(trained):
    status, stdout, output = run_cli("-m", "keras_resnet.weights", "--show", trained)
    assert status == 0, output
    shown = json.loads(stdout)
    assert shown == run_dir.read_config(trained)["record"]


def test_evaluation_maps_a_subset_by_name_and_refuses_another_list(trained, folders):
    classifier = evaluation.load_classifier(trained)
    same = evaluation.evaluate(classifier, "base", "validation", data_dir=folders["digits"], batch_size=8)
    some = evaluation.evaluate(classifier, "base", "validation", data_dir=folders["some"], batch_size=8)
    assert same["count"] == 24 and some["count"] == 12
    names = classifier.class_names
    for name in ("one", "zero"):  # the same images, counted under the network's own index of the name
        i = names.index(name)
        assert some["confusion"][i].sum() == 6 and np.array_equal(some["confusion"][i], same["confusion"][i])
    with pytest.raises(ValueError) as error:
        evaluation.evaluate(classifier, "base", "validation", data_dir=folders["letters"], batch_size=8)
    message = str(error.value)
    assert "['a', 'b', 'c', 'd']" in message and "['one', 'three', 'two', 'zero']" in message


def test_init_weights_run_brings_its_network_without_model(trained, folders, tmp_path):
    values = flags.FlagValues()
    cli.define_flags(TrainConfig(), values)
    values(["train", f"--init_weights={trained}", "--classes=2", f"--model_dir={tmp_path / 'tuned'}"])
    assert cli.config_from_flags(values).model == "resnet20"
    values(["train", f"--init_weights={trained}", "--model=resnet32"])
    assert cli.config_from_flags(values).model == "resnet32"  # given: kept, and refused by the weights below
    with pytest.raises(ValueError, match=r"hold a resnet20 .* not a resnet32"):
        loop.train(config(folders["some"], tmp_path / "other", init_weights=trained, model="resnet32", classes=2))
    result = loop.train(config(folders["some"], tmp_path / "tuned", init_weights=trained, classes=2, train_steps=2))
    assert run_dir.record_of(result.model_dir).architecture.classes == 2


def test_a_model_dir_that_cannot_be_written_is_one_line(folders):
    with pytest.raises(run_dir.RunDirError) as error:
        loop.train(config(folders["digits"], "/proc/keras_resnet_run"))
    assert str(error.value).startswith("--model_dir '/proc/keras_resnet_run' cannot be written (")


@pytest.mark.slow
def test_evaluate_py_falls_back_past_a_truncated_newest_checkpoint(run):
    truncate_newest(run)
    status, _, output = run_cli("train/evaluate.py", f"--model_dir={run}", "--batch_size=8")
    assert status == 0, output
    assert f"skipped checkpoint {os.path.join(run, 'checkpoints', 'ckpt-4')}: " in output
    assert "Traceback" not in output and "top-1 err." in output


@pytest.mark.slow
def test_a_read_only_model_dir_is_one_line_and_status_1(folders):
    status, _, output = run_cli(
        "train/cifar10.py", f"--data_dir={folders['digits']}", "--model_dir=/proc/keras_resnet_run", "--train_steps=2"
    )
    assert status == 1 and "Traceback" not in output
    assert output.strip().splitlines()[-1].startswith("error: --model_dir '/proc/keras_resnet_run' cannot be written")


@pytest.mark.slow
@pytest.mark.parametrize(
    "program, target",
    [("export/to_saved_model.py", "--base_path={out}/saved_model"), ("export/to_onnx.py", "--output={out}/run.onnx")],
)
def test_exporters_fall_back_past_a_truncated_newest_checkpoint(run, tmp_path, program, target):
    truncate_newest(run)
    status, _, output = run_cli(program, f"--model_dir={run}", target.format(out=tmp_path / "export"), timeout=600)
    assert status == 0, output[-3000:]
    assert f"skipped checkpoint {os.path.join(run, 'checkpoints', 'ckpt-4')}: " in output
    assert "Traceback" not in output


LIVE = """
import sys
from keras_resnet.training import loop
from keras_resnet.training.config import recipe
loop.train(recipe("cifar", model="resnet20", data_dir=sys.argv[1], model_dir=sys.argv[2], image_size=16,
                  batch_size=8, train_steps=100000, seed=0, log_interval=2, eval_interval=0,
                  checkpoint_interval=2, keep_checkpoints=1, steps_per_loop=2))
"""


@pytest.mark.slow
def test_a_run_that_is_training_exports_5_times_out_of_5(folders, tmp_path):
    """The trainer writes a checkpoint every 2 steps and keeps 1, so each is deleted soon
    after it is written; every export pins one whole checkpoint, and the SavedModel, loaded
    here, serves that checkpoint's network's answers."""
    import tensorflow as tf

    from keras_resnet.export import export_saved_model, sources
    from keras_resnet.preprocessing import preprocess_input

    model_dir = tmp_path / "live"
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    trainer = subprocess.Popen(
        [sys.executable, "-c", LIVE, folders["digits"], str(model_dir)], env=env, stdout=subprocess.DEVNULL
    )
    digits, _ = digits_arrays("test")
    images = tf.image.resize(digits[:8].astype("float32"), (16, 16)).numpy()
    try:
        while not (model_dir / "checkpoints" / "checkpoint").exists():
            assert trainer.poll() is None
            time.sleep(0.2)
        steps = []
        for attempt in range(5):
            step = tf.Variable(0, dtype=tf.int64)
            run_dir.restore_newest(tf.train.Checkpoint(step=step), model_dir)
            steps.append(int(step.numpy()))
            source = sources.from_run_dir(str(model_dir))
            exported = export_saved_model(source, str(tmp_path / "base"), model_name="live", log=lambda *_: None)
            served = tf.saved_model.load(exported.path).signatures["serving_default"](images=tf.constant(images))
            pinned = source.model(preprocess_input(images, source.preprocess_mode, source.mean), training=False)
            np.testing.assert_allclose(served["probabilities"].numpy(), np.asarray(pinned), atol=1e-5)
            assert exported.version == attempt + 1
        assert trainer.poll() is None  # still training: the exports met rotation
    finally:
        trainer.kill()
        trainer.wait()
    assert steps == sorted(steps) and steps[-1] > steps[0], steps
