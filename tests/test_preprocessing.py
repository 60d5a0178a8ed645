"""preprocess_input and channel_affine against keras.applications; decode_predictions against
TFDS's ImageNet files."""

import importlib.util
import os
import runpy

import numpy as np
import pytest
from keras.applications import imagenet_utils, resnet

from keras_resnet.preprocessing import channel_affine, decode_predictions, imagenet_classes, preprocess_input


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
