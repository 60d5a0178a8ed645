"""The training loop on the bundled digits data: it learns; its run dir restores through
keras_resnet.load and evaluates (keras_resnet.evaluation, train/evaluate.py) to the error it
reported; it decays exactly the kernels, runs in bfloat16 with float32 variables,
fine-tunes with frozen stages or frozen BN, stops on a non-finite loss, and
refuses bad input early. One trained run (`learned`) serves the tests that need one."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_resnet
from keras_resnet import data, evaluation, run_dir
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.training import loop, reporting
from keras_resnet.training.config import recipe, validate
from keras_resnet.training.inputs import Inputs
from keras_resnet.training.strategy import make_strategy, parse_tf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_config(model_dir, **overrides):
    settings = dict(
        model="resnet20",
        dataset="digits",
        model_dir=str(model_dir),
        batch_size=64,
        seed=0,
        log_interval=50,
        eval_interval=0,
        checkpoint_interval=50,
    )
    return recipe("cifar", **{**settings, **overrides})


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One short ResNet-20 run on digits (200 iterations of 64, lr 0.1, /10 at 120 and 170)."""
    model_dir = tmp_path_factory.mktemp("learned") / "run"
    return loop.train(digits_config(model_dir, train_steps=200, lr_boundaries=(120, 170)))


@pytest.mark.slow
def test_learning_is_real(learned):
    assert learned.eval["count"] == 360  # the whole digits test split
    assert learned.eval["top1_error"] <= 0.10, learned.eval


@pytest.mark.slow
def test_run_dir_restores_through_its_record(learned):
    """The exporters' contract: config.json (the record and the training config, each once) +
    checkpoints/ rebuild the trained classifier, whose test error, computed here without the
    data pipeline, is the one the run reported."""
    config = json.loads(open(os.path.join(learned.model_dir, "config.json")).read())
    assert sorted(config) == ["record", "training"]
    assert config["training"]["model"] == "resnet20" and config["training"]["dataset"] == "digits"
    assert not {"preprocess_mode", "preprocessing", "class_names", "model_kwargs"} & set(config["training"])
    record = run_dir.record_of(learned.model_dir)
    assert (record.architecture.classes, record.architecture.input_shape) == (10, (32, 32, 3))
    assert record.class_names == tuple(str(d) for d in range(10))
    loaded = keras_resnet.load(learned.model_dir)
    model, mode, mean = loaded.model, loaded.preprocess_mode, loaded.mean
    assert mode == "pixel_mean" and mean.shape == (32, 32, 3)
    images, labels = data.load_arrays("digits", "test")
    probabilities = model.predict(preprocess_input(images.astype("float32"), mode, mean), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)  # the builder's softmax head
    error = np.mean(probabilities.argmax(axis=1) != labels)
    assert error == pytest.approx(learned.eval["top1_error"], abs=1 / 360)


@pytest.mark.slow
def test_run_dir_holds_checkpoints_metrics_summaries_and_curves(learned):
    directory = learned.model_dir
    assert tf.train.latest_checkpoint(os.path.join(directory, "checkpoints")).endswith("ckpt-200")
    assert sorted(os.listdir(os.path.join(directory, "checkpoints"))) == sorted(
        ["checkpoint"] + [f"ckpt-{s}.{ext}" for s in (50, 100, 150, 200) for ext in ("index", "data-00000-of-00001")]
    )
    records = reporting.read_metrics(directory)
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [50, 100, 150, 200]
    assert [r["lr"] for r in train] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert train[-1]["loss"] < train[0]["loss"]
    assert [r["step"] for r in records if r["split"] == "eval"] == [200]
    for split in ("train", "eval"):
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(directory, split)))
    with open(os.path.join(directory, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for axes in reporting.curves_figure(directory).axes:  # the drops at 120 and 170, dotted on both panels
        dotted = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert sorted(line.get_xdata()[0] for line in dotted) == [120, 170]


def _curves(figure):
    """{label: (iterations, marker)} of the curves of each panel of a curves figure."""
    return [
        {line.get_label(): (list(line.get_xdata()), line.get_marker()) for line in axes.get_lines()}
        for axes in figure.axes
    ]


def test_a_two_class_run_shorter_than_a_log_interval(digit_folders, tmp_path, capsys):
    """Two classes of PNG folders, 2 iterations evaluated after each, logged every 50: no
    top-5 error printed (it is 0 with 2 classes); curves.png shows the single training
    point as a marker."""
    config = recipe(
        "cifar",
        data_dir=str(digit_folders),
        model="resnet20",
        model_dir=str(tmp_path / "two"),
        image_size=32,
        batch_size=8,
        train_steps=2,
        learning_rate=0.1,
        lr_boundaries=(),
        eval_interval=1,
        log_interval=50,
        checkpoint_interval=2,
        seed=0,
    )
    result = loop.train(config)
    out = capsys.readouterr().out
    evals = [line for line in out.splitlines() if line.startswith("eval at step")]
    assert len(evals) == 2 and all("top-1 err" in line and "top-5" not in line for line in evals), out
    error_panel, loss_panel = _curves(reporting.curves_figure(result.model_dir))
    assert error_panel["train top-1"] == ([2], "o") and error_panel["eval top-1"] == ([1, 2], "o")
    assert loss_panel["train"] == ([2], "o")


def test_a_huge_first_evaluation_loss_beside_a_modest_training_loss_gets_the_batch_norm_note():
    """Numbers a plain-56 run on digits recorded (batch 64, lr 0.1, eval every 25, log every
    15): evaluation loss 2.27e6 at iteration 25 beside training loss 27.4 at 15, then 3.45 at
    50 once the moving statistics caught up."""
    note = reporting.bn_statistics_hint(2273237.8666666667, 27.43056938846906, 1)
    assert "batch-norm moving statistics" in note and "2.27e+06" in note and "settles" in note
    assert reporting.bn_statistics_hint(3.449019114176432, 73.84459385871887, 2) is None


@pytest.mark.parametrize(
    "eval_loss, train_loss, evaluation_number",
    [(2e5, float("nan"), 1), (2e5, 500.0, 1), (2e5, 2.3, reporting.EARLY_EVALUATIONS + 1), (900.0, 2.3, 1)],
)
def test_no_batch_norm_hint_for_a_diverged_run_a_late_evaluation_or_a_moderate_loss(
    eval_loss, train_loss, evaluation_number
):
    assert reporting.bn_statistics_hint(eval_loss, train_loss, evaluation_number) is None


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    """Digits 0 and 1 of the digits test split as PNG files in class folders (an ImageNet layout)."""
    root = tmp_path_factory.mktemp("folders")
    images, labels = data.load_arrays("digits", "test")
    for split in ("train", "validation"):
        for digit in (0, 1):
            os.makedirs(root / split / str(digit))
            for i, image in enumerate(images[labels == digit][:6]):
                Image.fromarray(image).save(root / split / str(digit) / f"{i}.png")
    return root


@pytest.mark.slow
def test_centre_view_reproduces_the_runs_own_eval(learned):
    reported = [r for r in reporting.read_metrics(learned.model_dir) if r["split"] == "eval"][-1]
    metrics = evaluation.evaluate(evaluation.load_classifier(learned.model_dir), "digits", "test", "center")
    assert metrics["count"] == reported["count"] == 360
    assert metrics["top1_error"] == pytest.approx(reported["top1_error"], abs=0.5 / 360)
    assert metrics["top5_error"] == pytest.approx(reported["top5_error"], abs=0.5 / 360)


def test_multiscale_averages_the_image_and_its_mirror(learned, digit_folders):
    classifier = evaluation.load_classifier(learned.model_dir)
    metrics = evaluation.evaluate(
        classifier, "imagenet", "validation", "multiscale", data_dir=str(digit_folders), scales=(32,)
    )
    mean = classifier.mean.mean(axis=(0, 1))  # sizes vary across scales: the per-channel mean
    wrong, count = 0, 0
    for label in (0, 1):
        folder = digit_folders / "validation" / str(label)
        images = np.stack(
            [np.asarray(Image.open(folder / name), dtype="float32") for name in sorted(os.listdir(folder))]
        )
        x = preprocess_input(images, "pixel_mean", mean)
        scores = (classifier.model.predict(x, verbose=0) + classifier.model.predict(x[:, :, ::-1], verbose=0)) / 2
        wrong += int(np.sum(scores.argmax(axis=1) != label))
        count += len(images)
    assert metrics["count"] == count == 12
    assert metrics["top1_error"] == pytest.approx(wrong / count)
    ten_crop = evaluation.evaluate(classifier, "imagenet", "validation", "10crop", data_dir=str(digit_folders))
    assert ten_crop["count"] == 12 and 0 <= ten_crop["top1_error"] <= 1


@pytest.mark.slow
def test_evaluate_cli_prints_the_table(learned):
    done = subprocess.run(
        [sys.executable, "train/evaluate.py", f"--model_dir={learned.model_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reported = [r for r in reporting.read_metrics(learned.model_dir) if r["split"] == "eval"][-1]
    header, row = done.stdout.strip().splitlines()[-2:]
    assert header.split() == ["model", "testing", "top-1", "err.", "top-5", "err.", "images"]
    assert row.split() == [
        "resnet20",
        "centre",
        "crop",
        f"{100 * reported['top1_error']:.2f}",
        f"{100 * reported['top5_error']:.2f}",
        "360",
    ]


def test_weight_decay_reaches_exactly_the_conv_and_fc_kernels():
    model = keras_resnet.ResNet20(classifier_activation=None)
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    decayed = loop.decayed_variables(model)
    assert [id(v) for v in decayed] == [id(v) for v in kernels] and len(kernels) == 20  # 19 convs + fc
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    excluded = {id(v) for layer in bn for v in (layer.gamma, layer.beta)} | {id(model.get_layer("predictions").bias)}
    assert not excluded & {id(v) for v in decayed}
    assert {id(v) for v in loop.decayed_variables(model, all_weights=True)} == {
        id(v) for v in model.trainable_variables
    }

    # The coupled L2 term adds exactly weight_decay * w to a kernel's gradient, nothing elsewhere.
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(8, 32, 32, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 8), tf.int32)

    def gradients(weight_decay):
        with tf.GradientTape() as tape:
            loss, _ = loop.replica_loss(
                model, images, labels, global_batch_size=8, weight_decay=weight_decay, decayed=decayed
            )
        return tape.gradient(loss, model.trainable_variables)

    plain, decayed_grads = gradients(0.0), gradients(1e-4)
    kernel_ids = {id(v) for v in kernels}
    for variable, g0, g1 in zip(model.trainable_variables, plain, decayed_grads):
        expected = 1e-4 * variable.numpy() if id(variable) in kernel_ids else 0.0
        np.testing.assert_allclose(
            g1.numpy() - g0.numpy(), expected, atol=1e-6 * float(tf.reduce_max(tf.abs(g0))) + 1e-12
        )


def test_sync_bn_reaches_every_batch_norm_layer():
    model = loop.build_model(recipe("cifar", model="resnet20", sync_bn=True, classes=10), (32, 32))
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 19 and all(layer.synchronized for layer in bn)  # one per conv (section 3.4)
    assert not any(
        layer.synchronized
        for layer in loop.build_model(recipe("cifar", classes=10), (32, 32)).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_bfloat16_trains_and_keeps_float32_variables(tmp_path):
    result = loop.train(
        digits_config(
            tmp_path / "bf16",
            dtype="bfloat16",
            batch_size=32,
            train_steps=20,
            log_interval=5,
            lr_boundaries=(),
            checkpoint_interval=20,
        )
    )
    losses = [r["loss"] for r in reporting.read_metrics(result.model_dir) if r["split"] == "train"]
    assert losses[-1] < losses[0], losses
    assert result.model.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
    assert {v.dtype for v in result.model.weights} == {"float32"}
    assert keras.config.dtype_policy().name == "float32"  # the caller's policy is left as it was


def _weights(model):
    """{layer/variable path: value} of every weight, trainable or not."""
    return {v.path: v.numpy() for v in model.weights}


def _stage(path):
    return int(path.split("_")[0][len("conv") :]) if path.startswith("conv") else None


def test_fine_tuning_with_freeze_trains_only_the_later_stages_and_the_new_head(learned, tmp_path):
    """--init_weights RUN_DIR --classes 10 --freeze conv3."""
    source_dir = learned.model_dir
    before = _weights(keras_resnet.load(source_dir).model)
    result = loop.train(
        digits_config(
            tmp_path / "tuned",
            init_weights=source_dir,
            classes=10,
            freeze="conv3",
            batch_size=32,
            train_steps=3,
            learning_rate=0.01,
        )
    )
    after = _weights(keras_resnet.load(result.model_dir).model)
    assert set(after) == set(before)
    frozen = [p for p in before if _stage(p) is not None and _stage(p) <= 3]
    training = [p for p in before if _stage(p) == 4 and p.endswith(("kernel", "gamma", "beta", "moving_mean"))]
    assert frozen and training
    for path in frozen:  # conv1..conv3: kernels, gamma/beta and BN statistics bit-identical
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    for path in training + ["predictions/kernel"]:
        assert not np.array_equal(after[path], before[path]), path
    config = run_dir.training_config(result.model_dir)
    assert (config["init_weights"], config["freeze"], config["classes"]) == (source_dir, "conv3", 10)


def test_fine_tuning_with_freeze_bn_keeps_every_batch_norm_fixed(learned, tmp_path):
    """--init_weights RUN_DIR --classes 10 --freeze_bn."""
    source_dir = learned.model_dir
    before = _weights(keras_resnet.load(source_dir).model)
    result = loop.train(
        digits_config(
            tmp_path / "tuned_bn",
            init_weights=source_dir,
            classes=10,
            freeze_bn=True,
            batch_size=32,
            train_steps=3,
            learning_rate=0.01,
        )
    )
    model = keras_resnet.load(result.model_dir).model
    after = _weights(model)
    bn = [v.path for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights]
    assert any(p.endswith("moving_variance") for p in bn)
    for path in bn:  # moving mean/variance (and gamma/beta) as the source left them
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert not np.array_equal(after["conv1_conv/kernel"], before["conv1_conv/kernel"])  # the convs still train


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, 8).astype("int32")

    def train_fn(context):  # three good batches, then NaN images
        good = tf.data.Dataset.from_tensors((images, labels)).repeat(3)
        return good.concatenate(tf.data.Dataset.from_tensors((images * np.nan, labels)).repeat())

    inputs = Inputs(train_fn, None, num_examples=8, num_classes=10, image_size=(32, 32), preprocess_mode="tf")
    config = digits_config(tmp_path / "nan", batch_size=8, train_steps=10, checkpoint_interval=1, lr_boundaries=())
    with pytest.raises(loop.NonFiniteLossError, match="at step 4") as error:
        loop.train(config, inputs)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    assert latest.endswith("ckpt-3") and latest in str(error.value)
    model = keras_resnet.load(config.model_dir).model
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"strategy": "gpus"},
            r"strategy='gpus' is not one of \('default', 'one_device', 'mirrored', 'multi_worker', 'tpu'\)",
        ),
        ({"model": "resnet21"}, r"model='resnet21' is not registered; allowed: .*resnet20"),
        ({"dtype": "float64"}, r"dtype='float64' is not one of \('float32', 'bfloat16', 'float16'\)"),
        ({"lr_schedule": "exponential"}, r"lr_schedule='exponential' is not one of"),
        ({"shortcut": "B", "model": "plain20"}, r"plain net"),
        ({"batch_size": 0}, r"batch_size=0 must be >= 1"),
        ({"freeze": "conv3"}, r"give --init_weights too"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(digits_config(tmp_path / "run", **overrides))


def test_model_dir_that_is_a_file_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a dir")
    with pytest.raises(ValueError, match="model_dir=.*exists and is not a directory"):
        loop.train(digits_config(path))


def test_tf_config_is_checked_before_a_multi_worker_start(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        parse_tf_config("{cluster: worker}")
    with pytest.raises(ValueError, match="index must be in 0..1"):
        parse_tf_config(json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}))
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        loop.train(digits_config(tmp_path / "run", strategy="multi_worker"))
    assert not (tmp_path / "run").exists()
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(ValueError, match="reads TF_CONFIG, which is not set"):
        make_strategy("multi_worker")


STEPS_PER_LOOP = """
import sys
import numpy as np
from keras_resnet.training import loop
from keras_resnet.training.config import recipe

for steps_per_loop in (1, 4):
    result = loop.train(recipe(
        "cifar", model="resnet20", dataset="digits", model_dir=f"{sys.argv[1]}/n{steps_per_loop}", batch_size=16,
        train_steps=12, seed=0, deterministic=True, steps_per_loop=steps_per_loop, checkpoint_interval=12,
        log_interval=12, eval_interval=0, lr_boundaries=(6,), warmup_epochs=0.05, error_warmup=True,
        error_warmup_threshold=0.85))
    np.savez(f"{sys.argv[1]}/n{steps_per_loop}.npz", *result.model.get_weights())
"""


def test_steps_per_loop_4_gives_the_weights_of_one_iteration_per_call(tmp_path):
    """12 iterations with --deterministic, the learning rate computed in the graph through a
    linear warm-up (4 iterations), ResNet-110's error warm-up and a step boundary at 6."""
    script = tmp_path / "loops.py"
    script.write_text(STEPS_PER_LOOP)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = []
    for n in (1, 4):
        with np.load(tmp_path / f"n{n}.npz") as saved:
            loaded.append([saved[f"arr_{i}"] for i in range(len(saved.files))])
    for a, b in zip(*loaded):
        assert np.linalg.norm(a - b) <= 1e-6 * max(np.linalg.norm(b), 1e-12)
    lrs = [[r["lr"] for r in reporting.read_metrics(str(tmp_path / f"n{n}")) if r["split"] == "train"] for n in (1, 4)]
    assert lrs[0] == lrs[1] == [pytest.approx(0.01)]  # the error warm-up's rate at the last step


def test_synthetic_data_trains_on_one_batch_without_reading_data(tmp_path, capsys):
    """--synthetic_data on cifar10 with no data dir (nothing to read offline): the run memorises
    its one fixed batch."""
    config = digits_config(
        tmp_path / "synthetic",
        dataset="cifar10",
        synthetic_data=True,
        batch_size=16,
        train_steps=40,
        log_interval=10,
        checkpoint_interval=40,
        lr_boundaries=(),
        learning_rate=0.05,
    )
    result = loop.train(config)
    assert "resnet20 on synthetic data (one batch on the device)" in capsys.readouterr().out
    records = [r for r in reporting.read_metrics(result.model_dir) if r["split"] == "train"]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert records[-1]["top1_error"] < records[0]["top1_error"] and records[-1]["loss"] < records[0]["loss"] / 2
    assert result.eval is None and run_dir.training_config(result.model_dir)["synthetic_data"] is True
