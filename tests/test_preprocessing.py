"""preprocess_input and channel_affine against keras.applications and Keras' Rescaling layer;
nets fitted with Keras `fit` serve, once exported, what `model.predict` answers;
decode_predictions against TFDS's ImageNet files."""

import importlib.util
import os
import runpy
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras.applications import densenet, efficientnet, imagenet_utils, resnet, resnet_v2
from model_helpers import randomize

import keras_resnet
from keras_resnet.data.arrays import digits_arrays
from keras_resnet.export import saved_model
from keras_resnet.export.folding import input_conv
from keras_resnet.export.graph import ServingGraph
from keras_resnet.export.sources import ModelSource
from keras_resnet.preprocessing import MODES, channel_affine, decode_predictions, imagenet_classes, preprocess_input

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_images(seed, shape=(3, 8, 8, 3)):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_caffe_mode_equals_keras_applications_resnet():
    x = random_images(0)
    np.testing.assert_allclose(preprocess_input(x, mode="caffe"), resnet.preprocess_input(x.copy()), rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["torch", "tf"])
def test_other_modes_equal_keras_imagenet_utils(mode):
    x = random_images(1)
    want = imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(preprocess_input(x, mode=mode), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_channel_affine_is_keras_applications_preprocessing(mode):
    x = random_images(5)
    order, scale, shift = channel_affine(mode)
    want = imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(scale * x[..., order] + shift, want, rtol=0, atol=1e-4)


def test_channel_affine_of_pixel_mean_keeps_the_mean_image():
    mean = random_images(6, shape=(8, 8, 3))
    order, scale, shift = channel_affine("pixel_mean", mean)
    x = random_images(7)
    np.testing.assert_allclose(scale * x[..., order] + shift, x - mean, rtol=0, atol=1e-4)


# What a Keras user's recipe did to 0..255 images -> the mode that does the same (the README's table).
KERAS_RECIPES = {
    "caffe": resnet.preprocess_input,
    "tf": resnet_v2.preprocess_input,
    "torch": densenet.preprocess_input,
    "unit": keras.layers.Rescaling(1 / 255),
    "none": efficientnet.preprocess_input,  # EfficientNet rescales inside the model
}


@pytest.mark.parametrize("mode", sorted(KERAS_RECIPES))
def test_each_mode_is_a_keras_recipe(mode):
    x = random_images(8)
    want = np.asarray(KERAS_RECIPES[mode](x.copy()))
    np.testing.assert_allclose(preprocess_input(x, mode=mode), want, rtol=1e-6, atol=1e-4)
    order, scale, shift = channel_affine(mode)
    np.testing.assert_allclose(scale * x[..., order] + shift, want, rtol=1e-6, atol=1e-4)


def test_every_mode_but_pixel_mean_has_a_keras_recipe():
    assert set(MODES) - set(KERAS_RECIPES) == {"pixel_mean"}


def test_pixel_mean_mode_subtracts_the_mean_image():
    x = random_images(2)
    mean = random_images(3, shape=(8, 8, 3))
    np.testing.assert_array_equal(preprocess_input(x, mode="pixel_mean", mean=mean), x - mean)


@pytest.mark.parametrize("mode, mean, message", [("bgr", None, "'bgr'"), ("pixel_mean", None, "mean=")])
def test_bad_modes(mode, mean, message):
    with pytest.raises(ValueError, match=message):
        preprocess_input(random_images(4), mode=mode, mean=mean)


def tfds_file(*parts):
    """A file inside the installed tensorflow_datasets package, found without importing it."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None:
        pytest.skip("tensorflow_datasets is not installed (the 'data' extra)")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def test_shipped_classes_are_tfds_imagenet2012_in_order():
    with open(tfds_file("datasets", "imagenet2012", "labels.txt")) as f:
        wnids = f.read().split()
    names = runpy.run_path(tfds_file("datasets", "siscore", "labels.py"))["IMAGENET_LABELS_LIST"]
    assert [wnid for wnid, _ in imagenet_classes()] == wnids
    assert [name for _, name in imagenet_classes()] == names


def test_decode_predictions_names_chosen_classes():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [0, 1, 999]] = [0.7, 0.2, 0.1]
    preds[1, [134, 517]] = [0.4, 0.6]
    first, second = decode_predictions(preds, top=3)
    assert first == [
        ("n01440764", "tench", pytest.approx(0.7)),
        ("n01443537", "goldfish", pytest.approx(0.2)),
        ("n15075141", "toilet tissue", pytest.approx(0.1)),
    ]
    assert [(wnid, name) for wnid, name, _ in second[:2]] == [
        ("n03126707", "crane (machine)"),
        ("n02012849", "crane (bird)"),
    ]


def test_decode_predictions_default_top_is_five_best_first():
    preds = np.random.default_rng(5).random((4, 1000))
    decoded = decode_predictions(preds)
    assert [len(row) for row in decoded] == [5] * 4
    for row, scores in zip(decoded, preds):
        assert [score for _, _, score in row] == sorted(scores, reverse=True)[:5]


@pytest.mark.parametrize("preds, top", [(np.zeros((2, 10)), 5), (np.zeros(1000), 5), (np.zeros((1, 1000)), 0)])
def test_decode_predictions_bad_input(preds, top):
    with pytest.raises(ValueError):
        decode_predictions(preds, top=top)


@pytest.mark.parametrize("mode, rescale", [("unit", 1 / 255), ("none", 1.0)], ids=["unit", "none"])
def test_unit_folds_as_a_scale_and_none_folds_nothing(mode, rescale, rel_diff):
    """The serving graph's first conv reads raw 0..255 images; only a zero offset stays in front."""
    model = randomize(keras_resnet.CifarResNet(1, input_shape=(16, 16, 3)), seed=9)
    graph = ServingGraph(ModelSource(model=model, preprocess_mode=mode, name="resnet8"))
    assert input_conv(model) == "conv1_conv" and not graph.input_offset.any()
    images = random_images(10, shape=(4, 16, 16, 3))
    want = model.predict(keras.layers.Rescaling(rescale)(images), verbose=0)
    assert rel_diff(graph.numeric_outputs(images)["probabilities"].numpy(), want) <= 1e-5


# A SavedModel served as TF Serving would: a fresh process that imports TensorFlow only.
SERVE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = serve(images=tf.constant(np.load(sys.argv[2])))
    np.savez(sys.argv[3], probabilities=out["probabilities"].numpy(), top=out["top_k_classes"].numpy()[:, 0])
    """
)


def digits_16(split):
    """scikit-learn's digits as 16x16 RGB in 0..255 (float32) and their labels: fit in seconds."""
    images, labels = digits_arrays(split)
    return images[:, ::2, ::2].astype("float32"), labels


def own_rescaling_net():
    """A Keras user's CNN that scales its 0..255 input itself (a Rescaling layer first)."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def keras_fit(model, x, y):
    """Keras' own recipe: compile and fit a few epochs (trained BN statistics), seeded."""
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    return model


def serve(export_dir, images, scratch):
    """(probabilities, top-1 class) the SavedModel serves for `images`, from a fresh process."""
    np.save(scratch / "images.npy", images)
    process = subprocess.run(
        [sys.executable, "-c", SERVE, export_dir, str(scratch / "images.npy"), str(scratch / "out.npz")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    out = np.load(scratch / "out.npz")
    return out["probabilities"], out["top"]


@pytest.fixture(scope="module")
def digits_test():
    return digits_16("test")


@pytest.mark.slow
def test_a_net_fitted_on_x_over_255_exports_as_unit_and_serves_its_answers(tmp_path, digits_test):
    keras.utils.set_random_seed(0)
    x, y = digits_16("train")
    model = keras_fit(keras_resnet.CifarResNet(1, input_shape=(16, 16, 3)), x / 255, y)
    model.save(tmp_path / "digits.keras")
    images, labels = digits_test
    want = model.predict(images / 255, verbose=0)
    assert np.mean(want.argmax(1) == labels) > 0.8  # a trained net, not a constant answer
    exported = subprocess.run(
        [
            sys.executable,
            "export/to_saved_model.py",
            "--keras_file",
            str(tmp_path / "digits.keras"),
            "--preprocess_mode",
            "unit",
            "--base_path",
            str(tmp_path / "models"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    probabilities, top = serve(str(tmp_path / "models" / "digits" / "1"), images, tmp_path)
    assert np.array_equal(top, want.argmax(1))
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_net_with_its_own_rescaling_exports_as_none_and_serves_its_answers(tmp_path, digits_test):
    keras.utils.set_random_seed(0)
    model = keras_fit(own_rescaling_net(), *digits_16("train"))
    images, labels = digits_test
    want = model.predict(images, verbose=0)
    assert np.mean(want.argmax(1) == labels) > 0.8
    source = ModelSource(model=model, preprocess_mode="none", name="own_rescaling")
    result = saved_model.export_saved_model(source, str(tmp_path / "models"), log=lambda line: None)
    probabilities, top = serve(result.path, images, tmp_path)
    assert np.array_equal(top, want.argmax(1))
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-5)
