"""Sources against data outside the code: sklearn's digits, files written here in the
real formats (PIL images, TFRecord shards, the CIFAR python tarball), TFDS mocks."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
from data_writers import (
    cifar_batch,
    encode,
    example,
    numbered_examples,
    python2_pickle,
    ramp,
    solid,
    write_cifar10_tarball,
    write_cifar100_tarball,
    write_shards,
)

import keras_resnet.data as data


def labels_of(input_fn, context=None):
    return np.concatenate([labels.numpy() for _, labels in input_fn(context)])


# ---------------------------------------------------------------- digits


def test_digits_are_sklearns_1797_images_split_once_each():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.round(bunch.images * 255 / 16).astype(np.uint8)
    original = collections.Counter((image.tobytes(), int(label)) for image, label in zip(grey, bunch.target))
    seen = collections.Counter()
    sizes = {}
    for split in ("train", "test"):
        dataset = data.digits(split)
        assert dataset.element_spec[0].shape == (32, 32, 3) and dataset.element_spec[0].dtype == tf.uint8
        assert dataset.element_spec[1].dtype == tf.int32
        images = [(image.numpy(), int(label)) for image, label in dataset]
        sizes[split] = len(images)
        for image, label in images:
            assert (image == image[..., :1]).all()  # grey as RGB
            seen[(image[::4, ::4, 0].tobytes(), label)] += 1
    assert sizes == {"train": 1437, "test": 360}
    assert seen == original  # every sklearn digit exactly once across the two splits


def test_digits_test_split_is_stratified():
    counts = np.bincount([int(label) for _, label in data.digits("test")], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


# ---------------------------------------------------------------- CIFAR python format


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("cifar")
    train = (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.arange(50) % 10)
    test = (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10)[::-1])
    write_cifar10_tarball(str(directory), train, test, names=[f"name{i}" for i in range(10)])
    return str(directory), train, test


def test_cifar_tarball_reads_images_in_the_original_layout(cifar_dir):
    directory, train, test = cifar_dir
    images, labels = data.load_arrays("cifar10", "train", directory)
    np.testing.assert_array_equal(images, train[0])
    np.testing.assert_array_equal(labels, train[1])
    images, labels = data.load_arrays("cifar10", "test", directory)
    np.testing.assert_array_equal(images, test[0])
    info = data.dataset_info("cifar10", directory)
    assert (info.source, info.num_classes, info.image_size) == ("cifar_python", 10, 32)
    assert info.num_examples == {"train": 50, "test": 10}
    assert info.class_names == [f"name{i}" for i in range(10)]
    np.testing.assert_allclose(data.pixel_mean("cifar10", directory), train[0].mean(axis=0), atol=1e-4)


def test_cifar_extracted_batches_read_like_the_tarball(cifar_dir, tmp_path):
    import tarfile

    directory, train, _ = cifar_dir
    with tarfile.open(os.path.join(directory, "cifar-10-python.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    assert data.detect_source(str(tmp_path)) == "cifar_python"
    np.testing.assert_array_equal(data.load_arrays("cifar10", "train", str(tmp_path))[0], train[0])


def test_cifar_val_split_holds_out_a_tenth_without_overlap(cifar_dir):
    directory, train, _ = cifar_dir
    kept, _ = data.load_arrays("cifar10", "train", directory, val_split=True)
    held, _ = data.load_arrays("cifar10", "validation", directory, val_split=True)
    assert (len(kept), len(held)) == (45, 5)  # the paper's 45k/5k, scaled
    together = {image.tobytes() for image in np.concatenate([kept, held])}
    assert together == {image.tobytes() for image in train[0]}


def test_cifar100_tarball_reads_fine_labels_and_their_names(tmp_path):
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), np.arange(200) % 100)
    test = (rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), np.arange(100)[::-1])
    fine_names = [f"fine{i}" for i in range(100)]
    write_cifar100_tarball(str(tmp_path), train, test, fine_names)
    assert data.detect_source(str(tmp_path)) == "cifar_python"
    images, labels = data.load_arrays("cifar100", "train", str(tmp_path))
    np.testing.assert_array_equal(images, train[0])
    np.testing.assert_array_equal(labels, train[1])
    np.testing.assert_array_equal(data.load_arrays("cifar100", "test", str(tmp_path))[1], test[1])
    info = data.dataset_info("cifar100", str(tmp_path))
    assert (info.source, info.num_classes, info.class_names) == ("cifar_python", 100, fine_names)
    assert info.num_examples == {"train": 200, "test": 100}


def test_cifar_label_out_of_range_names_the_file(tmp_path):
    images = np.zeros((5, 32, 32, 3), np.uint8)
    write_cifar10_tarball(str(tmp_path), (np.zeros((5, 32, 32, 3), np.uint8), np.zeros(5)), (images, [0, 1, 2, 10, 4]))
    with pytest.raises(ValueError, match=r"label 10 outside \[0, 10\) in .*test_batch"):
        data.load_arrays("cifar10", "test", str(tmp_path))


def test_the_written_batches_are_python2_pickles_as_published(cifar_dir, tmp_path):
    """The dataset page's Python 3 recipe, pickle.load(f, encoding='bytes'), reads them; a plain
    pickle.load fails on their Python 2 str, as it does on the published files."""
    import pickle
    import tarfile

    directory, train, _ = cifar_dir
    with tarfile.open(os.path.join(directory, "cifar-10-python.tar.gz")) as tar:
        content = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(content)
    batch = pickle.loads(content, encoding="bytes")
    assert sorted(batch) == [b"batch_label", b"data", b"labels"]
    np.testing.assert_array_equal(batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), train[0][:10])


@pytest.mark.parametrize("keys", ["bytes", "str"])
def test_cifar_batches_pickled_by_python3_read_like_the_published_ones(cifar_dir, tmp_path, keys):
    """Copies re-pickled under Python 3, with the recipe's bytes keys or with str keys."""
    import pickle
    import tarfile

    directory, train, test = cifar_dir
    with tarfile.open(os.path.join(directory, "cifar-10-python.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    batches = tmp_path / "cifar-10-batches-py"
    for path in batches.iterdir():
        batch = pickle.loads(path.read_bytes(), encoding="bytes")
        if keys == "str":
            batch = {key.decode(): value for key, value in batch.items()}
        path.write_bytes(pickle.dumps(batch))
    np.testing.assert_array_equal(data.load_arrays("cifar10", "train", str(tmp_path))[0], train[0])
    np.testing.assert_array_equal(data.load_arrays("cifar10", "test", str(tmp_path))[1], test[1])
    assert data.dataset_info("cifar10", str(tmp_path)).class_names == [f"name{i}" for i in range(10)]


# ---------------------------------------------------------------- class folders


COLOURS = {"a_red": (220, 30, 30), "b_green": (30, 200, 40), "c_blue": (20, 40, 210)}


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    """train/ and validation/ class folders: RGB JPEG, RGB PNG, grey PNG, CMYK JPEG, RGBA PNG."""
    root = tmp_path_factory.mktemp("folders")
    for split in ("train", "validation"):
        for name, rgb in COLOURS.items():
            os.makedirs(root / split / name)
            image = solid(40, 60, rgb)
            files = {
                "rgb.jpg": encode(image, "JPEG"),
                "rgb.png": encode(image, "PNG"),
                "grey.png": encode(image, "PNG", mode="L"),
                "cmyk.jpeg": encode(image, "JPEG", mode="CMYK"),
                "alpha.PNG": encode(image, "PNG", mode="RGBA"),
            }
            for file_name, content in files.items():
                (root / split / name / file_name).write_bytes(content)
        (root / split / "notes.txt").write_text("not a class folder")
    return str(root)


def test_folders_decode_every_format_to_rgb(folder_dir):
    assert data.detect_source(folder_dir) == "folders"
    info = data.dataset_info("imagenet", folder_dir)
    assert info.class_names == sorted(COLOURS) and info.num_classes == 3
    assert info.num_examples == {"train": 15, "validation": 15}
    input_fn = data.make_eval_input_fn("imagenet", "validation", 5, data_dir=folder_dir, preprocess_mode="tf")
    images, labels = [], []
    for batch, label in input_fn(None):
        images.append(batch.numpy())
        labels.append(label.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (15, 224, 224, 3) and input_fn.skip_counter.count == 0
    names = sorted(COLOURS)
    for image, label in zip(images, labels):
        rgb = np.asarray(COLOURS[names[label]], np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114])  # PIL's "L" conversion
        pixels = (image + 1.0) * 127.5
        assert np.abs(pixels - rgb).max() < 8 or np.abs(pixels - grey).max() < 3


# ---------------------------------------------------------------- TFRecord shards


def test_tfrecord_shards_yield_0_based_labels_and_images(tmp_path):
    images = [ramp(30, 40, 5, 7), solid(50, 20, (10, 200, 30))]
    records = [example(encode(images[0], "PNG"), 1, b"PNG"), example(encode(images[1], "JPEG"), 1000)]
    write_shards(str(tmp_path), "validation", records, 2)
    assert data.detect_source(str(tmp_path)) == "tfrecord"
    assert data.dataset_info("imagenet", str(tmp_path)).num_examples == {"train": 0, "validation": 2}
    input_fn = data.make_eval_input_fn("imagenet", "validation", 2, data_dir=str(tmp_path), preprocess_mode="tf")
    batch, labels = next(iter(input_fn(None)))
    assert labels.numpy().tolist() == [0, 999]
    pixels = (batch.numpy()[1] + 1.0) * 127.5
    assert np.abs(pixels - [10, 200, 30]).max() < 6


def test_corrupt_jpeg_and_truncated_record_are_skipped_and_counted(tmp_path):
    good = numbered_examples(6)
    corrupt = example(b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 4, 7)
    paths = write_shards(str(tmp_path), "validation", good[:3] + [corrupt] + good[3:], 1)
    with open(paths[0], "ab") as shard:
        shard.write(numbered_examples(8)[7][:20])  # the last record cut short
    second = write_shards(str(tmp_path), "validation", [], 2)[1]  # an empty shard beside it
    assert os.path.getsize(second) == 0
    input_fn = data.make_input_fn("imagenet", "validation", 4, training=False, data_dir=str(tmp_path))
    assert sorted(labels_of(input_fn)) == [0, 1, 2, 3, 4, 5]
    assert input_fn.skip_counter.count == 2
    assert input_fn.skip_counter.reset() == 2 and input_fn.skip_counter.count == 0


def test_a_record_that_does_not_parse_is_skipped_and_counted(tmp_path):
    write_shards(str(tmp_path), "validation", numbered_examples(3) + [b"not a tf.train.Example"], 1)
    input_fn = data.make_input_fn("imagenet", "validation", 8, training=False, data_dir=str(tmp_path))
    assert sorted(labels_of(input_fn)) == [0, 1, 2] and input_fn.skip_counter.count == 1


def test_tfrecord_label_out_of_range_is_an_error_naming_the_file_before_reading(tmp_path):
    paths = write_shards(str(tmp_path), "validation", [example(encode(solid(8, 8, (1, 2, 3))), 1001)], 1)
    with pytest.raises(ValueError, match=f"outside 1..1000 .*{os.path.basename(paths[0])} record 0: label 1001"):
        data.make_input_fn("imagenet", "validation", 1, training=False, data_dir=str(tmp_path))


def test_two_workers_read_every_example_exactly_once(tmp_path):
    write_shards(str(tmp_path), "validation", numbered_examples(20), 4)
    input_fn = data.make_input_fn("imagenet", "validation", 4, training=False, data_dir=str(tmp_path))
    shares = [labels_of(input_fn, tf.distribute.InputContext(2, worker, 2)) for worker in range(2)]
    assert len(shares[0]) == len(shares[1]) == 10
    assert sorted(np.concatenate(shares)) == list(range(20))


def test_more_workers_than_shards_is_an_error(tmp_path):
    write_shards(str(tmp_path), "validation", numbered_examples(4), 1)
    input_fn = data.make_input_fn("imagenet", "validation", 2, training=False, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="1 files cannot be shared by 2 input pipelines"):
        input_fn(tf.distribute.InputContext(2, 0, 2))


def test_in_memory_sets_shard_by_example_exactly_once():
    input_fn = data.make_input_fn("digits", "test", 50, training=False, preprocess_mode="tf")
    shares = [input_fn(tf.distribute.InputContext(2, worker, 2)) for worker in range(2)]
    images = np.concatenate([batch.numpy() for share in shares for batch, _ in share])
    pixels = np.round((images + 1.0) * 127.5).astype(np.uint8)
    expected = [image.numpy().tobytes() for image, _ in data.digits("test")]
    assert len(pixels) == 360
    assert sorted(image.tobytes() for image in pixels) == sorted(expected)


# ---------------------------------------------------------------- detection and bad paths


def test_detect_source_names_each_layout(tmp_path, cifar_dir, folder_dir):
    write_shards(str(tmp_path), "train", numbered_examples(1), 1)
    assert data.detect_source(str(tmp_path)) == "tfrecord"
    assert data.detect_source(cifar_dir[0]) == "cifar_python"
    assert data.detect_source(folder_dir) == "folders"
    tfds_dir = tmp_path / "tfds"
    os.makedirs(tfds_dir / "imagenet2012" / "5.1.0")
    (tfds_dir / "imagenet2012" / "5.1.0" / "dataset_info.json").write_text("{}")
    assert data.detect_source(str(tfds_dir)) == "tfds"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_data_dir_says_what_layout_was_expected(tmp_path, make):
    path = str(tmp_path / "nothing") if make == "missing" else str(tmp_path)
    with pytest.raises(ValueError, match=r"train-00000-of-01024(.|\n)*train/<class>/<image>(.|\n)*dataset_info.json"):
        data.make_input_fn("imagenet", "train", 8, training=True, data_dir=path)


def test_folder_split_without_images_is_an_error(tmp_path):
    os.makedirs(tmp_path / "train" / "n0001")
    with pytest.raises(ValueError, match="no images"):
        data.make_input_fn("imagenet", "train", 8, training=True, data_dir=str(tmp_path))


# ---------------------------------------------------------------- TFDS


def test_tfds_cifar10_and_imagenet2012_through_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        images, labels = next(iter(data.make_input_fn("cifar10", "train", 4, training=True, seed=0)(None)))
        assert images.shape == (4, 32, 32, 3) and labels.dtype == tf.int32
        info = data.dataset_info("imagenet2012")
        assert (info.num_classes, info.image_size, info.source) == (1000, 224, "tfds")
        assert info.class_names[0] == "n01440764"
        input_fn = data.make_input_fn("imagenet", "validation", 4, training=False)
        batches = [images.shape for images, _ in input_fn(None)]
        assert batches == [(4, 224, 224, 3), (2, 224, 224, 3)] and input_fn.skip_counter.count == 0
        images, _ = next(iter(data.make_input_fn("tfds:mnist", "test", 2, training=False)(None)))
        assert images.shape == (2, 28, 28, 3)


def test_unprepared_or_unknown_tfds_names_are_clear_value_errors(tmp_path):
    with pytest.raises(ValueError, match=r"TFDS cifar100 is not prepared in (.|\n)*dataset_info.json"):
        data.make_input_fn("cifar100", "train", 8, training=True, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="name='no_such_set': not 'digits'"):
        data.dataset_info("tfds:no_such_set")


# ---------------------------------------------------------------- broken CIFAR files


class _MakesDirectory:
    """Unpickles by calling os.makedirs(path): a file that runs code when loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def _break_cifar(directory, fault):
    """A CIFAR-10 dir (extracted batches) or tarball with one fault; the file to be named."""
    import pickle
    import tarfile

    images = np.zeros((10, 32, 32, 3), np.uint8)
    tarball = write_cifar10_tarball(str(directory), (images, np.arange(10)), (images, np.arange(10)))
    if fault == "truncated tarball":
        with open(tarball, "rb") as f:
            content = f.read()
        with open(tarball, "wb") as f:
            f.write(content[: len(content) // 2])
        return tarball
    with tarfile.open(tarball) as tar:
        tar.extractall(directory, filter="data")
    os.remove(tarball)
    batch = os.path.join(str(directory), "cifar-10-batches-py", "data_batch_3")
    with open(batch, "rb") as f:
        content = f.read()
    broken = {
        "truncated": lambda: content[: len(content) // 3],
        "garbage": lambda: np.random.default_rng(7).bytes(500),
        "wrong row length": lambda: python2_pickle({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}),
        "missing key": lambda: python2_pickle({b"data": np.zeros((2, 3072), np.uint8)}),
        "runs code": lambda: pickle.dumps(_MakesDirectory(os.path.join(str(directory), "made"))),
    }
    if fault == "missing batch":
        os.remove(batch)
    else:
        with open(batch, "wb") as f:
            f.write(broken[fault]())
    return batch


@pytest.mark.parametrize(
    "fault, said",
    [
        ("truncated", "not a CIFAR python batch"),
        ("garbage", "not a CIFAR python batch"),
        ("wrong row length", r"data of shape \(2, 3000\), expected \[n, 3072\]"),
        ("missing key", "no 'labels' entry"),
        ("runs code", "names os.makedirs, which a CIFAR batch never holds"),
        ("missing batch", "is missing"),
        ("truncated tarball", "not a whole CIFAR python tarball"),
    ],
)
def test_a_broken_cifar_file_is_one_line_naming_the_file_and_the_fault(tmp_path, fault, said):
    named = _break_cifar(tmp_path, fault)
    with pytest.raises(ValueError, match=said) as caught:
        data.load_arrays("cifar10", "train", str(tmp_path))
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert not os.path.exists(os.path.join(str(tmp_path), "made"))


def _damaged(content, rng):
    """`content` with a few random bytes overwritten, cut short, or replaced by random bytes."""
    kind = rng.integers(3)
    if kind == 0:
        damaged = np.frombuffer(content, np.uint8).copy()
        where = rng.integers(0, len(content), rng.integers(1, 4))
        damaged[where] = rng.integers(0, 256, len(where), dtype=np.uint8)
        return damaged.tobytes()
    if kind == 1:
        return content[: rng.integers(0, len(content))]
    return rng.bytes(int(rng.integers(1, 2000)))


def test_damaged_cifar_batches_load_or_give_one_line_naming_the_file(tmp_path):
    """Hundreds of damaged published-format batches: each is read whole or refused by a
    ValueError naming it; no other exception, however the bytes fall."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    content = python2_pickle(cifar_batch(images, range(10)))
    whole = python2_pickle(cifar_batch(np.zeros_like(images), range(10)))
    outcomes = collections.Counter()
    for case in range(400):
        batches = tmp_path / f"case{case}" / "cifar-10-batches-py"
        batches.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in (1, 2, 4, 5)] + ["test_batch"]:
            (batches / name).write_bytes(whole)
        (batches / "data_batch_3").write_bytes(_damaged(content, rng))
        try:
            read, labels = data.load_arrays("cifar10", "train", str(batches.parent))
        except ValueError as error:
            assert str(batches / "data_batch_3") in str(error) and "\n" not in str(error), error
            outcomes["refused"] += 1
        else:
            assert read.shape == (50, 32, 32, 3) and read.dtype == np.uint8 and labels.max() < 10
            outcomes["read"] += 1
    assert outcomes["refused"] > 200 and outcomes["read"] > 10, outcomes


def test_class_folders_with_a_test_folder_are_not_taken_for_cifar_100s_test_batch(tmp_path):
    for split in ("train", "test"):
        for name in ("cats", "dogs"):
            os.makedirs(tmp_path / split / name)
            (tmp_path / split / name / "0.png").write_bytes(encode(solid(8, 8, (1, 2, 3)), "PNG"))
    assert data.detect_source(str(tmp_path)) == "folders"
    assert data.dataset_info("pets", str(tmp_path)).num_examples == {"train": 2, "test": 2}
