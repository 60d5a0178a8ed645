"""make_input_fn: batching, distribution, determinism, preprocessing and argument checks."""

import numpy as np
import pytest
import tensorflow as tf
from data_writers import encode, example, numbered_examples, ramp, write_shards

import keras_resnet.data as data
from keras_resnet.preprocessing import preprocess_input


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """Validation and train shards: 8 numbered JPEGs each, 2 shards per split."""
    directory = tmp_path_factory.mktemp("imagenet")
    write_shards(str(directory), "train", numbered_examples(8, size=(60, 80)), 2)
    write_shards(str(directory), "validation", numbered_examples(8, size=(60, 80)), 2)
    return str(directory)


def first_batch(input_fn, context=None):
    images, labels = next(iter(input_fn(context)))
    return images.numpy(), labels.numpy()


# ---------------------------------------------------------------- digits, the demo set


def test_digits_training_batches_are_preprocessed_augmented_and_endless():
    mean = data.pixel_mean("digits")
    train = np.stack([image.numpy() for image, _ in data.digits("train")])
    np.testing.assert_allclose(mean, train.mean(axis=0), atol=1e-3)
    input_fn = data.make_input_fn("digits", "train", 256, training=True, seed=0)
    batches = list(input_fn(None).take(7))  # 1,792 images: more than the 1,437 of an epoch
    assert all(images.shape == (256, 32, 32, 3) and images.dtype == tf.float32 for images, _ in batches)
    assert all(labels.dtype == tf.int32 for _, labels in batches)
    images = batches[0][0].numpy()  # image - mean, zero-padded: within [-mean, 255 - mean]
    assert images.min() >= -mean.max() - 1e-3 and images.max() <= 255
    assert not np.array_equal(batches[0][0].numpy(), batches[5][0].numpy())


def test_digits_evaluation_is_one_ordered_pass_of_the_original_images_minus_the_mean():
    mean = data.pixel_mean("digits")
    input_fn = data.make_input_fn("digits", "test", 64, training=False)
    batches = [(images.numpy(), labels.numpy()) for images, labels in input_fn(None)]
    assert [len(labels) for _, labels in batches] == [64] * 5 + [40]  # 360, remainder kept
    images = np.concatenate([images for images, _ in batches])
    originals = np.stack([image.numpy() for image, _ in data.digits("test")])
    np.testing.assert_allclose(images + mean, originals, atol=1e-3)


def test_training_is_reproducible_with_a_seed_and_random_without():
    def batch(seed):
        return first_batch(data.make_input_fn("digits", "train", 32, training=True, seed=seed, deterministic=True))

    np.testing.assert_array_equal(batch(5)[0], batch(5)[0])
    assert not np.array_equal(batch(5)[0], batch(6)[0])
    assert not np.array_equal(batch(None)[0], batch(None)[0])


def test_val_split_for_in_memory_sets():
    info = data.dataset_info("digits", val_split=True)
    assert info.num_examples == {"train": 1294, "validation": 143, "test": 360}
    input_fn = data.make_input_fn("digits", "validation", 100, training=False, val_split=True)
    assert sum(len(labels) for _, labels in input_fn(None)) == 143


# ---------------------------------------------------------------- distribution


def test_per_replica_batch_and_indivisible_global_batch():
    input_fn = data.make_input_fn("digits", "train", 48, training=True, seed=0)
    images, _ = first_batch(input_fn, tf.distribute.InputContext(2, 1, 4))
    assert images.shape[0] == 12
    with pytest.raises(ValueError, match="global batch size 48 is not divisible by the 5 replicas"):
        input_fn(tf.distribute.InputContext(1, 0, 5))


def test_distribute_datasets_from_function_counts_skips_inside_a_strategy_scope(tmp_path):
    write_shards(str(tmp_path), "validation", numbered_examples(6) + [example(b"\xff\xd8\xff not a JPEG", 7)], 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        input_fn = data.make_input_fn("imagenet", "validation", 4, training=False, data_dir=str(tmp_path))
        dataset = strategy.distribute_datasets_from_function(input_fn)
    labels = np.concatenate([strategy.experimental_local_results(batch[1])[0].numpy() for batch in dataset])
    assert sorted(labels) == list(range(6)) and input_fn.skip_counter.count == 1


# ---------------------------------------------------------------- ImageNet-like sets


def test_imagenet_training_batches(imagenet_dir):
    input_fn = data.make_input_fn(
        "imagenet", "train", 6, training=True, data_dir=imagenet_dir, seed=1, shuffle_buffer=8
    )
    batches = list(input_fn(None).take(4))  # 24 images: three passes over 8
    assert all(images.shape == (6, 224, 224, 3) for images, _ in batches)
    labels = np.concatenate([labels.numpy() for _, labels in batches])
    assert set(labels) == set(range(8))
    images = batches[0][0].numpy() + data.pixel_mean("imagenet")  # back to 0..255, lighting may add a little
    assert images.min() > -30 and images.max() < 285


def test_imagenet_training_is_reproducible_with_seed_and_deterministic(imagenet_dir):
    def batch(seed, augment="scale"):
        input_fn = data.make_input_fn(
            "imagenet", "train", 4, training=True, data_dir=imagenet_dir, seed=seed, deterministic=True, augment=augment
        )
        return first_batch(input_fn)

    for augment in ("scale", "inception"):
        first, again, other = batch(3, augment), batch(3, augment), batch(4, augment)
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
        assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_evaluation_views_end_with_preprocess_input(imagenet_dir, mode):
    raw = data.make_eval_input_fn("imagenet", "validation", 8, data_dir=imagenet_dir, mean=[0, 0, 0])
    done = data.make_eval_input_fn("imagenet", "validation", 8, data_dir=imagenet_dir, preprocess_mode=mode)
    np.testing.assert_allclose(first_batch(done)[0], preprocess_input(first_batch(raw)[0], mode), atol=1e-4)


def test_ten_crop_and_multiscale_evaluation_batches(tmp_path):
    write_shards(str(tmp_path), "validation", [example(encode(ramp(375, 500, 0.5, 0.5)), 3)] * 3, 1)
    ten = data.make_eval_input_fn("imagenet", "validation", 2, view="10crop", data_dir=str(tmp_path))
    assert [tuple(images.shape) for images, _ in ten(None)] == [(2, 10, 224, 224, 3), (1, 10, 224, 224, 3)]
    for scale in (224, 480):
        multi = data.make_eval_input_fn(
            "imagenet", "validation", 1, view="multiscale", scale=scale, data_dir=str(tmp_path)
        )
        images, labels = first_batch(multi)
        assert images.shape == (1, 2, scale, round(scale * 500 / 375), 3) and labels.tolist() == [2]
    with pytest.raises(ValueError, match="batch 1 per replica, not 2"):
        data.make_eval_input_fn("imagenet", "validation", 2, view="multiscale", scale=224, data_dir=str(tmp_path))(None)


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"global_batch_size": 0}, "global_batch_size=0 must be a positive integer"),
        ({"preprocess_mode": "bgr"}, "preprocess_mode='bgr' is not one of"),
        ({"split": "valid"}, "split='valid' is not one of"),
        ({"augment": "mixup"}, "augment='mixup' is not one of"),
        ({"view": "5crop", "training": False}, "view='5crop' is not one of"),
        ({"view": "10crop"}, "view='10crop' is for ImageNet-size images"),
        ({"image_size": -1}, "image_size=-1 must be a positive integer"),
        ({"lighting": -0.1}, "lighting=-0.1 must be"),
        ({"seed": "x"}, "seed='x' must be an integer"),
        ({"mean": np.zeros((8, 8, 3))}, r"mean of shape \(8, 8, 3\) does not fit 32x32x3"),
        ({"name": ""}, "name='': expected"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, message):
    arguments = {"name": "digits", "split": "train", "global_batch_size": 8, "training": True, **kwargs}
    if arguments.get("view", "center") != "center":
        arguments["training"] = False
    with pytest.raises(ValueError, match=message):
        name, split, batch = arguments.pop("name"), arguments.pop("split"), arguments.pop("global_batch_size")
        data.make_input_fn(name, split, batch, **arguments)


def test_val_split_is_for_in_memory_sets_only(imagenet_dir):
    with pytest.raises(ValueError, match="val_split=True holds out part of train"):
        data.make_input_fn("imagenet", "train", 8, training=True, data_dir=imagenet_dir, val_split=True)


def test_image_size_rescales_every_view(imagenet_dir):
    input_fn = data.make_input_fn("imagenet", "train", 2, training=True, data_dir=imagenet_dir, image_size=96, seed=0)
    assert first_batch(input_fn)[0].shape == (2, 96, 96, 3)
    input_fn = data.make_input_fn("digits", "test", 2, training=False, image_size=40)
    assert first_batch(input_fn)[0].shape == (2, 40, 40, 3)
