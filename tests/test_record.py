"""One record per network, carried from its weights to the server.

Networks are checked against files in their real formats (a run dir laid out by the trainer's
own writer, `.keras` and `.weights.h5` files written by Keras, a SavedModel loaded by
TensorFlow, an ONNX file read by onnx) and against the import graph of the source itself.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import keras_resnet
from keras_resnet import convert, finetune, published, testing, weights
from keras_resnet import run_dir as run_layout
from keras_resnet.export import cli, sources
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.record import Record
from keras_resnet.training.config import write_run

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_resnet"
SIZE = 32
SERVED_SIZE = 128  # the served ResNet-50's input: the net's point holds at any size, and 224 takes minutes more
CLASS_NAMES = [f"digit {i}" for i in range(5)]


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(tree, modules):
    """keras_resnet modules a module's source imports, at any level (functions included)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in modules else node.module for n in names]
        found.update(n for n in names if n in modules)
    return found


def import_graph():
    """{module: keras_resnet modules it imports} for every module of the package."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imported_modules(ast.parse(path.read_text()), files) - {name} for name, path in files.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "keras_resnet.run_dir" in graph and "keras_resnet.training.saved_run" not in graph
    assert {"keras_resnet.weights", "keras_resnet.record"} <= graph["keras_resnet.builders"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_function_level_import_cycle():
    """The walk sees imports inside functions: the cycle the builders once hid that way."""
    source = {"a": "def f():\n    from b import x\n", "b": "import c\n", "c": "def g():\n    import a\n"}
    graph = {name: _imported_modules(ast.parse(text), set(source)) for name, text in source.items()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


MODEL_LAYER = (
    "keras_resnet.blocks", "keras_resnet.builders", "keras_resnet.convert", "keras_resnet.finetune",
    "keras_resnet.flops", "keras_resnet.loading", "keras_resnet.preprocessing", "keras_resnet.published",
    "keras_resnet.record", "keras_resnet.run_dir", "keras_resnet.specs", "keras_resnet.weights",
)  # fmt: skip


def test_only_training_and_its_programs_import_training():
    """Data, export, evaluation and the model layer (the run dir's module included) never
    import keras_resnet.training, at any level; the package's __init__ imports nothing of it."""
    graph = import_graph()
    below = [m for m in graph if m.startswith(("keras_resnet.data", "keras_resnet.export")) or m in MODEL_LAYER]
    below += ["keras_resnet", "keras_resnet.evaluation"]
    assert set(MODEL_LAYER) <= set(graph) and len(below) > 25
    for module in below:
        reached = [m for m in graph[module] if m == "keras_resnet.training" or m.startswith("keras_resnet.training.")]
        assert not reached, (module, reached)


def test_the_import_rule_sees_a_training_import_inside_a_function():
    source = "def f():\n    from keras_resnet.training import loop\n"
    modules = {"keras_resnet.training.loop", "keras_resnet.training"}
    assert _imported_modules(ast.parse(source), modules) == {"keras_resnet.training.loop"}


def trained_like(model, mode, mean=None, seed=0):
    """`model` with a trained net's BN statistics on real photos preprocessed by `mode`."""
    size = model.input_shape[1]
    return testing.with_trained_statistics(model, preprocess_input(testing.sample_photos(size, 8), mode, mean), seed)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A ResNet-20 run dir as the trainer writes it (run_dir.write_run + its checkpoint):
    5 classes with names, per-pixel mean preprocessing."""
    path = str(tmp_path_factory.mktemp("record") / "digits-r20")
    mean = np.random.default_rng(0).uniform(60, 140, (SIZE, SIZE, 3)).astype("float32")
    model = trained_like(keras_resnet.ResNet20(classes=5), "pixel_mean", mean)
    config = {
        "model": "resnet20",
        "model_kwargs": {"classes": 5, "input_shape": [SIZE, SIZE, 3]},
        "preprocessing": {"mode": "pixel_mean"},
        "class_names": CLASS_NAMES,
        "dataset": "digits",
    }
    write_run(path, config, pixel_mean=mean)
    checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(1))
    tf.train.CheckpointManager(checkpoint, os.path.join(path, run_layout.CHECKPOINT_SUBDIR), max_to_keep=1).save()
    return path, model, mean


def photos(size=SIZE, count=4, seed=1):
    return testing.sample_photos(size, count, seed).astype("float32")


def test_a_run_dir_needs_no_builder_arguments(run_dir, rel_diff):
    path, original, mean = run_dir
    model = keras_resnet.ResNet20(weights=path)
    assert model.record.architecture.classes == 5 and model.record.class_names == tuple(CLASS_NAMES)
    x = preprocess_input(photos(), "pixel_mean", mean)
    assert rel_diff(model(x), original(x)) <= 1e-6
    with pytest.raises(ValueError, match=r"classes=5, but classes=10") as error:
        keras_resnet.ResNet20(weights=path, classes=10)
    assert path in str(error.value)


def test_the_record_survives_run_dir_to_keras_to_weights_file(run_dir, tmp_path, rel_diff):
    path, original, mean = run_dir
    loaded = keras_resnet.load(path)
    record = loaded.record
    assert record.preprocess_mode == "pixel_mean" and np.array_equal(record.mean, mean)
    assert record.class_names == tuple(CLASS_NAMES) and record.eval_crop == SIZE
    keras_file = str(tmp_path / "net.keras")
    loaded.model.save(keras_file)
    from_keras = keras_resnet.load(keras_file)
    assert from_keras.record == record
    weights_file = str(tmp_path / "net.weights.h5")
    weights.save(from_keras.model, weights_file)
    from_weights = keras_resnet.load(weights_file)
    assert from_weights.record == record
    assert Record.from_text(json.dumps(weights.read_metadata(weights_file))) == record
    x = photos()
    expected = original(preprocess_input(x, "pixel_mean", mean))
    for step in (loaded, from_keras, from_weights):
        assert rel_diff(step.model(step.preprocess(x)), expected) <= 1e-6


def test_load_takes_another_input_size(run_dir):
    path, _, _ = run_dir
    loaded = keras_resnet.load(path, input_shape=(None, None, 3))
    assert loaded.model.input_shape == (None, None, None, 3)
    assert loaded.model(np.zeros((1, 48, 40, 3), "float32")).shape == (1, 5)


def converted_resnet50(directory, size, file_name="resnet50-11ad3fa6.pth"):
    """A v1.5 ResNet-50 written as the torchvision converter writes it (stride on the 3x3,
    epsilon 1e-5, torch preprocessing, named like torchvision's published V2 file), with a
    trained net's BN statistics."""
    model = keras_resnet.ResNet50(
        stride_in="3x3", bn_epsilon=convert.TORCHVISION_BN_EPSILON, input_shape=(size, size, 3)
    )
    trained_like(model, "torch")
    path = str(directory / "r50.weights.h5")
    convert.save_converted(model, path, file_name)
    return path, model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return converted_resnet50(tmp_path_factory.mktemp("converted"), 64)


def test_a_converted_file_needs_no_builder_arguments(converted, rel_diff):
    path, original = converted
    model = keras_resnet.ResNet50(weights=path)
    record = model.record
    assert (record.architecture.stride_in, record.architecture.bn_epsilon) == ("3x3", 1e-5)
    assert record.preprocess_mode == "torch" and (record.eval_resize, record.eval_crop) == (232, 224)
    assert record.weights["name"] == "torchvision/resnet50.IMAGENET1K_V2" and record.weights["top1"] == 80.858
    assert len(record.class_names) == 1000 and record.class_names[0] == "tench"
    x = preprocess_input(photos(64), "torch")
    assert rel_diff(model(x), original(x)) <= 1e-6
    with pytest.raises(ValueError, match=r"stride_in='3x3', but stride_in='1x1'"):
        keras_resnet.ResNet50(weights=path, stride_in="1x1")
    with pytest.raises(ValueError, match=r"bn_epsilon=1e-05, but bn_epsilon=0.001"):
        keras_resnet.ResNet50(weights=path, bn_epsilon=1e-3)


def test_a_plain_weights_file_needs_its_arguments_and_a_mode(tmp_path, rel_diff):
    """model.save_weights records nothing: the builder's arguments say the network, the
    exporter requires the preprocessing, and load() refuses it."""
    original = trained_like(keras_resnet.ResNet20(classes=3), "tf")
    path = str(tmp_path / "plain.weights.h5")
    original.save_weights(path)
    model = keras_resnet.ResNet20(weights=path, classes=3)
    x = preprocess_input(photos(), "tf")
    assert rel_diff(model(x), original(x)) <= 1e-6
    with pytest.raises(ValueError, match="records no network"):
        keras_resnet.load(path)
    with pytest.raises(ValueError, match="record no preprocessing"):
        sources.from_builder("resnet20", weights=path, classes=3)
    source = sources.from_builder("resnet20", weights=path, classes=3, preprocess_mode="tf")
    assert source.preprocess_mode == "tf" and json.loads(source.record_text())["preprocessing"]["mode"] == "tf"


def test_a_foreign_keras_file_needs_a_mode_and_a_recorded_one_refuses_another(run_dir, tmp_path):
    path, _, _ = run_dir
    recorded = str(tmp_path / "recorded.keras")
    keras_resnet.load(path).model.save(recorded)
    with pytest.raises(ValueError, match=r"preprocess_mode='tf' contradicts.*'pixel_mean'"):
        sources.from_keras_file(recorded, preprocess_mode="tf")
    foreign_model = finetune.with_new_head(keras_resnet.ResNet20(include_top=False, input_shape=(SIZE, SIZE, 3)), 4)
    assert not isinstance(foreign_model, keras_resnet.Network)
    foreign = str(tmp_path / "foreign.keras")
    foreign_model.save(foreign)
    with pytest.raises(ValueError, match="record no preprocessing"):
        sources.from_keras_file(foreign)
    assert sources.from_keras_file(foreign, preprocess_mode="caffe").preprocess_mode == "caffe"


def _flags(**values):
    flag_values = flags.FlagValues()
    cli.define_source_flags(flag_values)
    flag_values(["prog"] + [f"--{key}={value}" for key, value in values.items()])
    return flag_values


def test_export_flags_read_the_record(run_dir):
    path, _, mean = run_dir
    source = cli.source_from_flags(_flags(model_dir=path))
    assert source.name == "digits-r20"  # the run dir's name, not the architecture's
    assert source.preprocess_mode == "pixel_mean" and np.array_equal(source.mean, mean)
    assert source.class_names == tuple(CLASS_NAMES)
    with pytest.raises(ValueError, match=r"preprocess_mode='caffe' contradicts.*'pixel_mean'"):
        cli.source_from_flags(_flags(model_dir=path, preprocess_mode="caffe"))
    with pytest.raises(ValueError, match="record no preprocessing"):
        cli.source_from_flags(_flags(model="resnet20"))


def test_the_published_list_is_printed_and_readable(capsys):
    names = [entry.name for entry in published.PUBLISHED]
    assert names[:3] == [f"keras.applications/resnet{d}" for d in (50, 101, 152)]
    assert {f"torchvision/resnet{d}.IMAGENET1K_V1" for d in (18, 34, 50, 101, 152)} <= set(names)
    assert {f"torchvision/resnet{d}.IMAGENET1K_V2" for d in (50, 101, 152)} <= set(names)
    weights.main(["--list"])  # python -m keras_resnet.weights --list
    printed = capsys.readouterr().out
    for entry in published.PUBLISHED:
        line = next(line for line in printed.splitlines() if line.startswith(entry.name + " "))
        assert f"{entry.top1:.3f}" in line and f"{entry.top5:.3f}" in line and entry.source in line


def test_published_entries_are_torchvisions_own_meta():
    """Against torchvision's weights enums (installed by `make test-interop`)."""
    models = pytest.importorskip("torchvision.models", reason="torchvision is installed by make test-interop")
    for entry in published.PUBLISHED:
        if entry.publisher != "torchvision":
            continue
        depth, version = entry.name.split("/resnet")[1].split(".")
        theirs = getattr(models, f"ResNet{depth}_Weights")[version]
        metrics = theirs.meta["_metrics"]["ImageNet-1K"]
        assert (entry.top1, entry.top5) == (metrics["acc@1"], metrics["acc@5"]) and entry.source == theirs.url
        transforms = theirs.transforms()
        assert (entry.eval_resize, entry.eval_crop) == (transforms.resize_size[0], transforms.crop_size[0])


def serve_logits(version_dir, images):
    """The served float signature's logits, from the SavedModel loaded in a fresh process."""
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "np.save(sys.argv[3], f(images=tf.constant(np.load(sys.argv[2])))['logits'].numpy())\n"
    )
    directory = pathlib.Path(version_dir).parent
    np.save(directory / "x.npy", np.asarray(images, dtype="float32"))
    done = subprocess.run(
        [sys.executable, "-c", script, version_dir, str(directory / "x.npy"), str(directory / "y.npy")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(directory / "y.npy")


def _logits(model, x):
    """float64 logits of `model` (its head's softmax left out)."""
    features = keras.Model(model.input, model.get_layer("predictions").input)(x, training=False)
    head = model.get_layer("predictions")
    return np.asarray(features, "float64") @ np.asarray(head.kernel, "float64") + np.asarray(head.bias, "float64")


@pytest.mark.slow
def test_a_converted_v1_5_resnet50_is_served_as_converted(tmp_path, rel_diff):
    """`export/to_saved_model.py --model resnet50 --weights FILE` of a converted file serves the
    converted network (stride on the 3x3, epsilon 1e-5) with torch preprocessing."""
    path, original = converted_resnet50(tmp_path, SERVED_SIZE)
    base = tmp_path / "models"
    done = subprocess.run(
        [
            sys.executable,
            "export/to_saved_model.py",
            "--model",
            "resnet50",
            "--weights",
            path,
            "--base_path",
            str(base),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    version_dir = str(base / "resnet50" / "1")
    images = photos(SERVED_SIZE, 4, seed=7)
    served = serve_logits(version_dir, images)
    converted = keras_resnet.ResNet50(weights=path)
    expected = _logits(converted, preprocess_input(images, "torch"))
    difference = rel_diff(served, expected)
    print(f"served vs converted logits: relative difference {difference:.2e}")
    assert difference <= 1e-4
    assert sources.read_record(version_dir) == converted.record


def train_tiny(model_dir, mode):
    """A ResNet-20 trained 3 steps on scikit-learn's digits with `mode`, by the trainer."""
    from keras_resnet.training import loop
    from keras_resnet.training.config import recipe

    config = recipe(
        "cifar",
        model="resnet20",
        dataset="digits",
        model_dir=str(model_dir),
        batch_size=16,
        train_steps=3,
        seed=0,
        eval_interval=0,
        log_interval=3,
        checkpoint_interval=3,
        preprocess_mode=mode,
    )
    return loop.train(config)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "pixel_mean", "unit", "none"])
def test_a_trained_run_exports_with_its_mode_and_no_flag(mode, tmp_path, rel_diff):
    """From the run dir and from its .keras file, with no flag: the export serves the run's
    preprocessing (the SavedModel is written and served from the .keras file for every mode,
    and from the run dir for pixel_mean, the mode with a mean image, to keep the test short)."""
    from keras_resnet.export import saved_model

    run = tmp_path / f"run-{mode}"
    train_tiny(run, mode)
    loaded = keras_resnet.load(str(run))
    assert loaded.record.preprocess_mode == mode
    keras_file = str(tmp_path / "net.keras")
    loaded.model.save(keras_file)
    images = testing.sample_photos(loaded.model.input_shape[1], 4, seed=3).astype("float32")
    expected = _logits(loaded.model, loaded.preprocess(images))
    for given in ({"model_dir": str(run)}, {"keras_file": keras_file}):
        source = cli.source_from_flags(_flags(**given))
        assert source.preprocess_mode == mode
        assert (source.mean is None) == (mode != "pixel_mean")
        if "keras_file" in given or mode == "pixel_mean":
            result = saved_model.export_saved_model(source, str(tmp_path / "models"), log=lambda _: None)
            assert rel_diff(serve_logits(result.path, images), expected) <= 1e-4
            assert sources.read_record(result.path) == loaded.record


@pytest.mark.slow
def test_the_record_reaches_the_savedmodel_and_onnx_metadata(run_dir, tmp_path):
    """run dir -> .keras -> .weights.h5 -> SavedModel and ONNX: the same record at every step."""
    onnx = pytest.importorskip("onnx", reason="onnx is in the dev extras")
    from keras_resnet.export import onnx as onnx_export
    from keras_resnet.export import saved_model

    path, _, _ = run_dir
    record = keras_resnet.load(path).record
    keras_file = str(tmp_path / "net.keras")
    keras_resnet.load(path).model.save(keras_file)
    weights_file = str(tmp_path / "net.weights.h5")
    weights.save(keras_resnet.load(keras_file).model, weights_file)
    source = cli.source_from_flags(_flags(model="resnet20", weights=weights_file))
    result = saved_model.export_saved_model(source, str(tmp_path / "models"), log=lambda _: None)
    assert sources.read_record(result.path) == record
    onnx_path = str(tmp_path / "net.onnx")
    onnx_export.export_onnx(source, onnx_path, log=lambda _: None)
    props = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert Record.from_text(props["keras_resnet_record"]) == record
