"""The paper's analyses: Fig. 7's layer responses against a separately built Keras sub-model,
and Figs. 4/6 and 7 drawn from run dirs the trainer wrote."""

import collections
import json
import os

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.testing import sample_photos, with_trained_statistics
from keras_resnet.training import analysis, reporting

pytest.importorskip("matplotlib", reason="the figures need matplotlib (the [dev] extra)")

# Tiny runs: 6 iterations, the learning rate divided by 10 after iterations 2 and 4.
STEPS, BOUNDARIES, EVAL_INTERVAL = 6, (2, 4), 3


def cifar_3x3_bn_names(n):
    """The 6n+1 3x3 layers of a CIFAR net, written out from section 4.2's description."""
    names = ["conv1_bn"]
    for stage in (2, 3, 4):
        for block in range(1, n + 1):
            names += [f"conv{stage}_block{block}_1_bn", f"conv{stage}_block{block}_2_bn"]
    return names


def test_response_layers_are_the_3x3_layers():
    assert analysis.response_layers(keras_resnet.CifarResNet(1, input_shape=(32, 32, 3))) == cifar_3x3_bn_names(1)
    assert analysis.response_layers(keras_resnet.Plain20(input_shape=(32, 32, 3))) == cifar_3x3_bn_names(3)
    # Bottlenecks: only the middle conv is 3x3; the 7x7 stem and the projections are not counted.
    bottlenecks = keras_resnet.build(
        keras_resnet.NetSpec("bottleneck", (2, 1), (8, 16), "imagenet"), input_shape=(32, 32, 3)
    )
    assert analysis.response_layers(bottlenecks) == ["conv2_block1_2_bn", "conv2_block2_2_bn", "conv3_block1_2_bn"]


def test_response_stds_match_a_separate_submodel():
    """Each layer's std equals numpy's std (float64) of that BN layer's output read by its own
    one-output Keras model on all images at once; response_stds reads all layers in batches."""
    photos = sample_photos(32, count=24, seed=1)
    images = (photos - photos.mean(axis=0)) / 64.0
    model = with_trained_statistics(keras_resnet.CifarResNet(1, input_shape=(32, 32, 3)), images, seed=2)
    stds = analysis.response_stds(model, [images[:10], (images[10:], np.zeros(14))])
    for name, std in zip(cifar_3x3_bn_names(1), stds):
        reader = keras.Model(model.input, model.get_layer(name).output)
        response = keras.ops.convert_to_numpy(reader(images, training=False)).astype(np.float64)
        assert response.shape[0] == 24
        np.testing.assert_allclose(std, response.std(), rtol=1e-5, err_msg=name)
    assert len(stds) == 7 and np.all(stds > 0.1)


def test_moments_survive_a_large_mean():
    moments = analysis._Moments()
    values = 1e6 + np.random.default_rng(0).normal(0, 1e-2, 10_000)
    for chunk in np.split(values, 5):
        moments.add(chunk)
    np.testing.assert_allclose(moments.std, np.std(values), rtol=1e-6)


def test_bad_outputs_and_runs_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"must end in one of"):
        analysis.check_output(str(tmp_path / "figure.txt"))
    with pytest.raises(ValueError, match=r"does not exist"):
        analysis.check_output(str(tmp_path / "missing" / "figure.png"))
    with pytest.raises(ValueError, match=r"config.json is missing"):
        analysis.check_trained_runs([str(tmp_path)])
    with pytest.raises(ValueError, match=r"max_images=0"):
        analysis.run_responses(str(tmp_path), max_images=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain and a residual 20-layer net trained a few iterations on the bundled digits."""
    from keras_resnet.training import recipe, train

    base = tmp_path_factory.mktemp("runs")
    dirs = {}
    for model in ("plain20", "resnet20"):
        dirs[model] = str(base / model)
        config = recipe(
            "cifar",
            model=model,
            dataset="digits",
            model_dir=dirs[model],
            batch_size=16,
            train_steps=STEPS,
            lr_boundaries=BOUNDARIES,
            eval_interval=EVAL_INTERVAL,
            log_interval=1,
            checkpoint_interval=STEPS,
            seed=0,
        )
        train(config)
    return dirs


def metrics(model_dir, split):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def test_error_curves_from_runs(runs):
    curves = [analysis.read_run(runs["resnet20"]), analysis.read_run(runs["plain20"])]
    figure = analysis.plot_error_curves(curves)
    plain_axes, residual_axes = figure.axes
    assert plain_axes.get_title() == "plain nets" and residual_axes.get_title() == "residual nets"
    for axes, model in ((plain_axes, "plain20"), (residual_axes, "resnet20")):
        lines = {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}
        assert set(lines) == {f"{model} train", f"{model} test"}
        train, test = lines[f"{model} train"], lines[f"{model} test"]
        assert list(train.get_xdata()) == list(range(1, STEPS + 1))
        assert list(test.get_xdata()) == [EVAL_INTERVAL, STEPS]
        np.testing.assert_allclose(test.get_ydata(), [100 * r["top1_error"] for r in metrics(runs[model], "eval")])
        np.testing.assert_allclose(train.get_ydata(), [100 * r["top1_error"] for r in metrics(runs[model], "train")])
        assert test.get_linewidth() > 2 * train.get_linewidth()  # test bold, training thin
        assert train.get_color() == test.get_color()
        drops = [line.get_xdata()[0] for line in axes.get_lines() if line.get_label().startswith("_")]
        assert drops == list(BOUNDARIES)
        logged_lr = {r["step"]: r["lr"] for r in metrics(runs[model], "train")}
        for step in drops:  # the trainer's own log: iteration `step` ran at the higher rate, the next at 1/10
            assert logged_lr[step + 1] == pytest.approx(logged_lr[step] / 10)


def test_drops_of_a_plateau_schedule_come_from_the_logged_rates():
    records = [{"step": s, "lr": lr} for s, lr in ((100, 0.01), (200, 0.1), (300, 0.1), (400, 0.01), (500, 0.001))]
    assert reporting.learning_rate_drops({"lr_schedule": "plateau"}, records) == (
        300,
        400,
    )  # the warm-up's rise is not one
    assert reporting.learning_rate_drops({"lr_schedule": "steps", "lr_boundaries": [300, 450, 600]}, records) == (
        300,
        450,
    )


def test_errors_table_from_runs(runs):
    table = analysis.errors_table([analysis.read_run(runs[m]) for m in ("plain20", "resnet20")])
    final = {m: 100 * metrics(runs[m], "eval")[-1]["top1_error"] for m in runs}
    assert f"| 20 | {final['plain20']:.2f} (" in table
    assert f") | {final['resnet20']:.2f} (" in table
    assert f"| resnet20 | 20 | {STEPS} |" in table


def test_responses_from_runs(runs):
    """The run's own test images, preprocessed as trained: checked against the digits read
    directly, the run's mean image subtracted, through a separate sub-model."""
    import keras_resnet
    from keras_resnet.data import digits

    responses = [analysis.run_responses(runs[m], batch_size=32, max_images=40) for m in ("plain20", "resnet20")]
    for response in responses:
        assert response.images == 40 and response.split == "test"
        assert list(response.layer_names) == cifar_3x3_bn_names(3)
    loaded = keras_resnet.load(runs["resnet20"])
    model = loaded.model
    pixels = np.stack([image for image, _ in digits("test").take(40).as_numpy_iterator()]).astype("float32")
    images = pixels - loaded.mean
    for index in (0, 18):
        reader = keras.Model(model.input, model.get_layer(responses[1].layer_names[index]).output)
        expected = keras.ops.convert_to_numpy(reader(images, training=False)).astype(np.float64).std()
        np.testing.assert_allclose(responses[1].stds[index], expected, rtol=1e-4)

    figure = analysis.plot_responses(responses)
    original, ranked = figure.axes
    for axes, order in ((original, lambda s: list(s)), (ranked, lambda s: sorted(s, reverse=True))):
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert set(lines) == {"plain20", "resnet20"}
        for response in responses:
            line = lines[response.model]
            assert list(line.get_xdata()) == list(range(1, 20))
            np.testing.assert_allclose(line.get_ydata(), order(response.stds))
        assert lines["plain20"].get_linestyle() == "--" and lines["resnet20"].get_linestyle() == "-"
        assert lines["plain20"].get_color() == lines["resnet20"].get_color()  # one depth, one colour
    assert analysis.plot_responses(responses, log_scale=True).axes[0].get_yscale() == "log"


def test_run_colours_differ_within_a_panel_and_pair_across():
    Run = collections.namedtuple("Run", "model_dir depth residual")
    runs = [
        Run("p56", 56, False),
        Run("p20", 20, False),
        Run("r20", 20, True),
        Run("r20b", 20, True),
        Run("r56", 56, True),
    ]
    colours = analysis.run_colours(runs)
    assert colours["p20"] == colours["r20"] and colours["p56"] == colours["r56"]
    assert len({colours[d] for d in ("r20", "r20b", "r56")}) == 3 and len({colours["p20"], colours["p56"]}) == 2


def test_figures_are_written(runs, tmp_path):
    path = analysis.save_figure(
        analysis.plot_error_curves([analysis.read_run(runs["plain20"])]), str(tmp_path / "f.png")
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
