"""keras_resnet.weights against keras.applications: its published file format, its loader, its outputs.

No network: the tests write files in the published legacy h5 layout from randomly initialised
keras.applications models, place them where `keras.utils.get_file` looks ($KERAS_HOME/models,
under the published file name) and point the `IMAGENET_FILES` entry at their own md5; the
file name and address stay the published ones.
"""

import dataclasses
import hashlib
import os
import re
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import randomize

import keras_resnet
from keras_resnet import builders, run_dir, scripts, specs, weights
from keras_resnet.training.config import write_run

SIZE = 32  # keras.applications' smallest input; the weights do not depend on it


def write_published_h5(model, path):
    """The layout of keras.applications' published files (Keras 2 legacy h5, `name:0` weights)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            variables = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{variable.name}:0".encode() for variable in variables]
            group.attrs["weight_names"] = names
            for name, variable in zip(names, variables):
                group.create_dataset(name, data=variable.numpy())


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def images(seed, size=SIZE, batch=2):
    return np.random.default_rng(seed).uniform(-120, 130, (batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """ResNet50 files in the published format (with and without top) and their reference models."""
    directory = tmp_path_factory.mktemp("published")
    shape = (SIZE, SIZE, 3)
    top = randomize(keras.applications.ResNet50(weights=None, input_shape=shape, classifier_activation=None), 1)
    notop = randomize(keras.applications.ResNet50(weights=None, include_top=False, input_shape=shape, pooling="avg"), 2)
    files = {}
    for include_top, model in ((True, top), (False, notop)):
        path = str(directory / weights.IMAGENET_FILES[(50, include_top)].fname)
        write_published_h5(model, path)
        files[include_top] = path
    return {"models": {True: top, False: notop}, "files": files}


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache for this test, with downloads forbidden."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    (tmp_path / "models").mkdir()
    return tmp_path


def place(published, keras_home, monkeypatch, include_top):
    """Put the test's file where get_file finds it, and make the table expect the file's md5."""
    source = published["files"][include_top]
    entry = weights.IMAGENET_FILES[(50, include_top)]
    target = keras_home / "models" / entry.fname
    target.write_bytes(open(source, "rb").read())
    monkeypatch.setitem(weights.IMAGENET_FILES, (50, include_top), dataclasses.replace(entry, file_hash=md5(target)))
    return target


def test_table_holds_the_published_files():
    entry = weights.IMAGENET_FILES[(50, True)]
    assert entry.fname == "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert entry.origin == (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    )
    assert entry.file_hash == "2cb95161c43110f7111970584f804107"
    assert weights.IMAGENET_FILES[(152, False)].file_hash == "ee4c566cf9a93f14d82f913c2dc6dd0c"
    assert sorted({depth for depth, _ in weights.IMAGENET_FILES}) == [50, 101, 152]


def test_written_file_is_what_keras_applications_reads(published):
    reference = published["models"][True]
    reloaded = keras.applications.ResNet50(
        weights=published["files"][True], input_shape=(SIZE, SIZE, 3), classifier_activation=None
    )
    x = images(0)
    np.testing.assert_array_equal(reloaded(x), reference(x))


def test_imagenet_from_cache_equals_keras_applications(published, keras_home, monkeypatch, rel_diff):
    place(published, keras_home, monkeypatch, include_top=True)
    model = keras_resnet.ResNet50(weights="imagenet", input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    x = images(3)
    assert rel_diff(model(x), published["models"][True](x)) <= 1e-5
    assert sum(int(np.prod(variable.shape)) for variable in model.trainable_weights) == 25_557_032
    assert weights.preprocessing("imagenet") == ("caffe", None)


def test_imagenet_features_without_top(published, keras_home, monkeypatch, rel_diff):
    place(published, keras_home, monkeypatch, include_top=False)
    model = keras_resnet.ResNet50(weights="imagenet", include_top=False, pooling="avg", classes=10)
    x = images(4)
    got = model(x)
    assert got.shape == (2, 2048)
    assert rel_diff(got, published["models"][False](x)) <= 1e-5


def test_cached_file_with_another_hash_is_refused_and_kept(published, keras_home):
    entry = weights.IMAGENET_FILES[(50, True)]
    target = keras_home / "models" / entry.fname
    target.write_bytes(open(published["files"][True], "rb").read())
    with pytest.raises(FileNotFoundError) as error:
        keras_resnet.ResNet50(weights="imagenet")
    message = str(error.value)
    assert entry.fname in message and "2cb95161c43110f7111970584f804107" in message
    assert str(target) in message and entry.origin in message
    assert target.exists()


def test_missing_file_offline_says_what_to_place_where(keras_home):
    entry = weights.IMAGENET_FILES[(50, False)]
    with pytest.raises(FileNotFoundError) as error:
        keras_resnet.ResNet50(weights="imagenet", include_top=False)
    message = str(error.value)
    assert entry.fname in message and entry.origin in message
    assert str(keras_home / "models" / entry.fname) in message


def test_failed_download_says_what_to_place_where(keras_home, monkeypatch, tmp_path):
    monkeypatch.delenv(weights.OFFLINE_ENV)
    entry = weights.IMAGENET_FILES[(50, True)]
    unreachable = dataclasses.replace(entry, origin=(tmp_path / "absent" / entry.fname).as_uri())
    monkeypatch.setitem(weights.IMAGENET_FILES, (50, True), unreachable)
    with pytest.raises(FileNotFoundError, match="download failed") as error:
        keras_resnet.ResNet50(weights="imagenet")
    assert str(keras_home / "models" / entry.fname) in str(error.value)


def test_resnet152_file_by_path(tmp_path, rel_diff):
    reference = randomize(
        keras.applications.ResNet152(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)), 152
    )
    path = str(tmp_path / weights.IMAGENET_FILES[(152, False)].fname)
    write_published_h5(reference, path)
    model = keras_resnet.ResNet152(weights=path, include_top=False, input_shape=(SIZE, SIZE, 3))
    x = images(152)
    assert rel_diff(model(x), reference(x)) <= 1e-5
    assert weights.preprocessing(path) == ("caffe", None)


def test_resnet101_file_is_ported_and_checked(tmp_path):
    reference = randomize(keras.applications.ResNet101(weights=None, input_shape=(SIZE, SIZE, 3)), 101)
    path = str(tmp_path / weights.IMAGENET_FILES[(101, True)].fname)
    write_published_h5(reference, path)
    given = {"shortcut": "B", "stride_in": "1x1", "bn_epsilon": 1.001e-5, "classes": 1000}
    source = weights.open_weights(path, specs.imagenet_spec(101), True, given)
    assert source.record.architecture == weights.published_architecture(101, include_top=True)
    assert source.record.preprocess_mode == "caffe" and source.record.weights["top1"] == 76.4
    arrays = source.read(None)
    conv, bn = reference.get_layer("conv4_block23_3_conv"), reference.get_layer("conv4_block23_3_bn")
    np.testing.assert_allclose(arrays[bn.name]["moving_mean"], bn.moving_mean - conv.bias, rtol=1e-6)
    assert "bias" not in arrays[conv.name]
    assert weights.build_kwargs(path) == {"shortcut": "B", "stride_in": "1x1", "bn_epsilon": 1.001e-5}
    with pytest.raises(ValueError, match="resnet101.*not a resnet152"):
        keras_resnet.ResNet152(weights=path)


@pytest.fixture
def no_building(monkeypatch):
    """Make building any stage fail, so errors must come from validation first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a layer was built before the weights were checked")

    monkeypatch.setattr(builders, "stage", refuse)


@pytest.mark.parametrize(
    "builder, kwargs, named",
    [
        (keras_resnet.ResNet34, {}, "resnet34"),
        (keras_resnet.Plain34, {}, "plain34"),
        (keras_resnet.Plain50, {}, "plain50"),
        (keras_resnet.ResNet50, {"classes": 10}, "classes=10"),
        (keras_resnet.ResNet50, {"stride_in": "3x3"}, "stride_in='1x1'"),
    ],
)
def test_imagenet_requests_without_a_published_file(builder, kwargs, named, keras_home, no_building):
    with pytest.raises(ValueError, match="ResNet50|1000|stride_in") as error:
        builder(weights="imagenet", **kwargs)
    assert named in str(error.value)


def test_path_that_does_not_exist(tmp_path, no_building):
    missing = str(tmp_path / "nowhere.weights.h5")
    with pytest.raises(ValueError, match="existing path") as error:
        keras_resnet.ResNet18(weights=missing)
    assert missing in str(error.value)


def test_unknown_file_kind(tmp_path, no_building):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        keras_resnet.ResNet18(weights=str(path))


@pytest.fixture(scope="module")
def torch_like_resnet18(tmp_path_factory):
    """A ResNet-18 with torchvision's BN epsilon, saved as keras_resnet's own .weights.h5."""
    model = randomize(keras_resnet.ResNet18(bn_epsilon=1e-5, classes=7, input_shape=(SIZE, SIZE, 3)), 18)
    path = str(tmp_path_factory.mktemp("own") / "r18.weights.h5")
    weights.save(model, path, "torch", source="test")
    return model, path


def test_own_file_metadata(torch_like_resnet18):
    _, path = torch_like_resnet18
    metadata = weights.read_metadata(path)
    assert metadata["preprocessing"] == {"mode": "torch", "mean": None}
    assert metadata["architecture"]["blocks_per_stage"] == [2, 2, 2, 2]
    assert metadata["architecture"]["bn_epsilon"] == 1e-5
    assert weights.build_kwargs(path) == {"shortcut": "B", "stride_in": "1x1", "bn_epsilon": 1e-5}
    assert weights.preprocessing(path) == ("torch", None)


def test_own_file_loads_like_keras_load_weights(torch_like_resnet18):
    original, path = torch_like_resnet18
    reference = keras_resnet.ResNet18(bn_epsilon=1e-5, classes=7, input_shape=(SIZE, SIZE, 3))
    reference.load_weights(path)
    model = keras_resnet.ResNet18(weights=path, classes=7, input_shape=(SIZE, SIZE, 3), **weights.build_kwargs(path))
    x = images(5)
    np.testing.assert_array_equal(model(x), reference(x))


def test_own_file_into_a_headless_model(torch_like_resnet18):
    original, path = torch_like_resnet18
    model = keras_resnet.ResNet18(weights=path, include_top=False, bn_epsilon=1e-5)
    features = keras.Model(original.input, original.get_layer("conv5_block2_out").output)
    x = images(6)
    np.testing.assert_array_equal(model(x), features(x))


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"bn_epsilon": 1.001e-5}, "bn_epsilon=1e-05"),
        ({"classes": 1000}, "classes=7"),
        ({"shortcut": "C"}, "shortcut='B'"),
    ],
)
def test_own_file_refuses_another_architecture(torch_like_resnet18, kwargs, named, no_building):
    _, path = torch_like_resnet18
    with pytest.raises(ValueError) as error:
        keras_resnet.ResNet18(weights=path, **kwargs)
    assert named in str(error.value)


def test_own_file_of_another_depth(torch_like_resnet18, no_building):
    _, path = torch_like_resnet18
    with pytest.raises(ValueError, match="resnet18.*not a resnet34"):
        keras_resnet.ResNet34(weights=path, bn_epsilon=1e-5, include_top=False)


def test_keras_file(tmp_path):
    original = randomize(keras_resnet.ResNet20(), 20)
    path = str(tmp_path / "resnet20.keras")
    original.save(path)
    model = keras_resnet.ResNet20(weights=path)
    x = images(7)
    np.testing.assert_array_equal(model(x), original(x))


def test_training_run_dir(tmp_path):
    original = randomize(keras_resnet.ResNet20(classes=5), 21)
    mean = np.full((SIZE, SIZE, 3), 120.0, "float32")
    config = {
        "model": "resnet20",
        "model_kwargs": {"classes": 5},
        "preprocessing": {"mode": "pixel_mean"},
    }
    write_run(str(tmp_path), config, pixel_mean=mean)
    checkpoint = tf.train.Checkpoint(model=original, step=tf.Variable(3))
    tf.train.CheckpointManager(checkpoint, str(tmp_path / run_dir.CHECKPOINT_SUBDIR), max_to_keep=1).save()
    model = keras_resnet.ResNet20(weights=str(tmp_path), include_top=False, pooling="avg")
    features = keras.Model(original.input, original.get_layer("avg_pool").output)
    x = images(8)
    np.testing.assert_array_equal(model(x), features(x))
    mode, loaded_mean = weights.preprocessing(str(tmp_path))
    assert mode == "pixel_mean"
    np.testing.assert_array_equal(loaded_mean, mean)
    with pytest.raises(ValueError, match="classes=5.*classes=10"):
        keras_resnet.ResNet20(weights=str(tmp_path), classes=10)


def test_save_refuses_a_mode_without_file(tmp_path):
    with pytest.raises(ValueError, match="pixel_mean"):
        weights.save(keras_resnet.ResNet20(), str(tmp_path / "m.weights.h5"), "pixel_mean")


# Unreadable and mismatched files: the exception names the path and says what is wrong.


@pytest.fixture(scope="module")
def plain_resnet20(tmp_path_factory):
    """A ResNet-20 (10 classes) saved by plain `model.save_weights` (no record), and its model."""
    model = randomize(keras_resnet.ResNet20(), 22)
    path = str(tmp_path_factory.mktemp("plain") / "r20.weights.h5")
    model.save_weights(path)
    return model, path


def cut(path, tmp_path, name):
    """A copy of the file at `path` holding only its first half, as an interrupted copy leaves it."""
    with open(path, "rb") as f:
        data = f.read()
    target = tmp_path / name
    target.write_bytes(data[: len(data) // 2])
    return str(target)


def test_a_truncated_weights_file_is_named(plain_resnet20, tmp_path):
    truncated = cut(plain_resnet20[1], tmp_path, "trunc.weights.h5")
    with pytest.raises(ValueError, match="is truncated") as error:
        keras_resnet.ResNet20(weights=truncated)
    assert truncated in str(error.value)


@pytest.mark.parametrize("name", ["garbage.h5", "garbage.weights.h5"])
def test_a_file_that_is_not_hdf5_is_named(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="is not an HDF5 file") as error:
        keras_resnet.ResNet50(weights=str(path))
    assert str(path) in str(error.value)


def test_a_truncated_keras_file_is_named(tmp_path):
    saved = str(tmp_path / "whole.keras")
    keras_resnet.ResNet20().save(saved)
    truncated = cut(saved, tmp_path, "trunc.keras")
    with pytest.raises(ValueError, match="not a readable .keras file.*truncated") as error:
        keras_resnet.ResNet20(weights=truncated)
    assert truncated in str(error.value) and "not found" not in str(error.value)


@pytest.mark.parametrize(
    "builder, kwargs, asked",
    [
        (keras_resnet.ResNet32, {}, "resnet32 (32 layers in basic blocks, 10 classes)"),
        (keras_resnet.ResNet20, {"classes": 100}, "resnet20 (20 layers in basic blocks, 100 classes)"),
        (keras_resnet.ResNet20, {"include_top": False}, "resnet20 (20 layers in basic blocks, no classifier head)"),
    ],
)
def test_a_plain_weights_file_of_another_network_says_what_it_holds(plain_resnet20, builder, kwargs, asked):
    _, path = plain_resnet20
    with pytest.raises(ValueError) as error:
        builder(weights=path, **kwargs)
    message = str(error.value)
    assert message.startswith(f"weights={path!r} hold a network of 20 layers in basic blocks, 10 classes, but ")
    assert asked in message and len(message) < 300


def test_a_plain_weights_file_of_a_bottleneck_net_is_described(tmp_path):
    path = str(tmp_path / "b11.weights.h5")
    small = (16, 16, 3)
    keras_resnet.build(
        specs.NetSpec("bottleneck", (1, 2), (8, 16), "cifar"), classes=3, input_shape=small
    ).save_weights(path)
    deeper = specs.NetSpec("bottleneck", (2, 2), (8, 16), "cifar")
    with pytest.raises(ValueError, match=r"11 layers in bottleneck blocks, 3 classes, but resnet14 \(14 layers"):
        keras_resnet.build(deeper, weights=path, classes=3, input_shape=small)


def test_a_plain_weights_file_of_the_asked_network_loads_as_keras_loads_it(plain_resnet20):
    original, path = plain_resnet20
    model = keras_resnet.ResNet20(weights=path)
    x = images(9)
    np.testing.assert_array_equal(model(x), original(x))


# The command-line programs: one line on stderr, status 1, no traceback (--verbose shows it).

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines other programs write to stderr: TensorFlow's and absl's C++ log lines, and the warning
# Python's runpy gives for `python -m` of a module its package imports.
FOREIGN_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|<frozen runpy>:\d+: RuntimeWarning)")


def run_command(arguments, cwd, env=None):
    """(status, stderr lines of this program) of `python arguments` with the worktree importable."""
    process = subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in process.stderr.splitlines() if line.strip() and not FOREIGN_LINE.match(line)]
    return process.returncode, lines


def assert_one_line(status, lines, *named):
    assert status == 1, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(name in lines[0] for name in named), lines


@pytest.mark.slow
def test_export_of_a_truncated_weights_file_is_one_line(plain_resnet20, tmp_path):
    truncated = cut(plain_resnet20[1], tmp_path, "trunc.weights.h5")
    command = [os.path.join(REPO, "export", "to_saved_model.py"), "--model", "resnet20", "--weights", truncated]
    status, lines = run_command([*command, "--base_path", str(tmp_path / "base")], tmp_path)
    assert_one_line(status, lines, truncated, "truncated")
    assert not (tmp_path / "base").exists() or not any((tmp_path / "base").iterdir())
    status, lines = run_command([*command, "--base_path", str(tmp_path / "base"), "--verbose"], tmp_path)
    assert status == 1 and "Traceback (most recent call last):" in lines


@pytest.mark.slow
def test_weights_show_of_a_garbage_file_is_one_line(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"not an HDF5 file\n" * 100)
    status, lines = run_command(["-m", "keras_resnet.weights", "--show", "garbage.h5"], tmp_path)
    assert_one_line(status, lines, "'garbage.h5'", "not an HDF5 file")
    status, lines = run_command(
        ["-m", "keras_resnet.weights", "--show", "garbage.h5"], tmp_path, {scripts.TRACEBACK_ENV: "1"}
    )
    assert status == 1 and "Traceback (most recent call last):" in lines


# `import torch` fails in the child as it does where torch is not installed.
WITHOUT_TORCH = """
import importlib.abc, runpy, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
runpy.run_module("keras_resnet.convert", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_convert_without_torch_names_the_extra(tmp_path):
    (tmp_path / "resnet18.pth").write_bytes(b"\0" * 64)
    status, lines = run_command(["-c", WITHOUT_TORCH, "torchvision", "resnet18.pth", "r18.weights.h5"], tmp_path)
    assert_one_line(status, lines, "'resnet18.pth'", "pip install 'keras-resnet[interop]'")
    assert not (tmp_path / "r18.weights.h5").exists()


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv(scripts.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        with scripts.user_errors():
            raise ValueError("weights='x.h5' is truncated\n(h5py: eof)")
    assert exit_.value.code == "error: weights='x.h5' is truncated (h5py: eof)"
    with pytest.raises(SystemExit, match="No space left"):
        with scripts.user_errors():
            raise OSError(28, "No space left on device", "out/x")
    with pytest.raises(ValueError):
        with scripts.user_errors(verbose=True):
            raise ValueError("shown with its traceback")
    monkeypatch.setenv(scripts.TRACEBACK_ENV, "1")
    with pytest.raises(ValueError):
        with scripts.user_errors():
            raise ValueError("shown with its traceback")
    with pytest.raises(KeyError):
        with scripts.user_errors():
            raise KeyError("a bug")
