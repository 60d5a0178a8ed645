"""What data sets and layouts exist: names, splits, the layouts read, TFDS builders."""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

IMAGENET = "imagenet"
TFDS_PREFIX = "tfds:"
SPLITS = ("train", "validation", "test")
SMALL_MAX_SIZE = 64
DEFAULT_VAL_FRACTION = 0.1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# First bytes of the formats tf.io.decode_image reads.
IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))
LAYOUTS = """expected one of these layouts:
  TFRecord shards  DIR/train-00000-of-01024 ..., DIR/validation-00000-of-00128 ...
                   (tf.train.Example: image/encoded, image/class/label counted from 1)
  class folders    DIR/train/<class>/<image> and DIR/validation/<class>/<image> (or val/;
                   train/ alone with val_split); .jpg .jpeg .png .gif .bmp, named after DIR
  ImageNet         Kaggle's DIR/ILSVRC/Data/CLS-LOC/{train,val} with DIR/LOC_val_solution.csv
                   (or DIR=CLS-LOC), or DIR/train/<wnid>/, a flat DIR/val/ and the devkit
                   DIR/ILSVRC2012_devkit_t12/data/ (validation ground truth, meta.mat)
  TFDS data dir    DIR/<name>/<version>/dataset_info.json (prepared), or for imagenet2012
                   DIR/downloads/manual/ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
  CIFAR python     DIR/cifar-10-python.tar.gz or DIR/cifar-10-batches-py/ (cifar-100 likewise)"""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a trainer needs to know of a data set before reading it."""

    name: str
    source: str
    num_classes: int
    image_size: int
    num_examples: dict
    class_names: list | None
    small: bool
    class_ids: list | None = None  # WordNet ids where class_names are their human names


def canonical_name(name):
    """'imagenet' for imagenet/imagenet2012, the TFDS name for 'tfds:<name>', else name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r}: expected 'digits', 'cifar10', 'cifar100', 'imagenet' or a TFDS name")
    name = name[len(TFDS_PREFIX) :] if name.startswith(TFDS_PREFIX) else name
    return IMAGENET if name in (IMAGENET, "imagenet2012") else name


def val_fraction(val_split):
    """The fraction of train a val_split holds out: False/None/0 -> 0.0, True -> 1/10 (CIFAR's
    5k of 50k, section 4.2), a number in (0, 1) -> itself."""
    if val_split is None or val_split is False:
        return 0.0
    if val_split is True:
        return DEFAULT_VAL_FRACTION
    if not isinstance(val_split, (int, float)) or not 0 <= val_split < 1:
        raise ValueError(f"val_split={val_split!r} must be a fraction of the training split in [0, 1) (0: none)")
    return float(val_split)


def check_split(split, allowed=SPLITS):
    if split not in allowed:
        raise ValueError(f"split={split!r} is not one of {allowed}")


def tfds_module():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ValueError("TFDS data sets need tensorflow-datasets: pip install 'keras-resnet[data]'") from error
    return tfds


def tfds_builder(name, data_dir=None):
    """The TFDS builder, prepared from the manual dir (imagenet2012's flow) if needed."""
    tfds = tfds_module()
    try:
        builder = tfds.builder("imagenet2012" if name == IMAGENET else name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"name={name!r}: not 'digits', 'cifar10', 'cifar100', 'imagenet' or a TFDS set") from None
    manual = os.path.join(builder.data_dir_root, "downloads", "manual")
    if not tf.io.gfile.exists(builder.data_dir) and tf.io.gfile.isdir(manual) and tf.io.gfile.listdir(manual):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder


def tfds_dataset(builder, split, **kwargs):
    """builder.as_dataset(split, ...), or a ValueError saying where the data was expected."""
    try:
        return builder.as_dataset(split=split, **kwargs)
    except AssertionError:
        raise ValueError(f"TFDS {builder.name} is not prepared in {str(builder.data_dir_root)!r}; {LAYOUTS}") from None


def tfds_split(name, split):
    """TFDS split name: ImageNet's labelled held-out set is its validation split."""
    return "validation" if name == IMAGENET and split == "test" else split
