"""tf.data input pipelines with the paper's augmentation and test views (sections 3.4, 4.2).

    import keras_resnet.data as data
    input_fn = data.make_input_fn("cifar10", "train", 128, training=True, data_dir=DIR)
    dataset = strategy.distribute_datasets_from_function(input_fn)

Names: "digits" (sklearn's bundled 8x8 digits as 32x32 RGB, offline), "cifar10",
"cifar100", "imagenet" (alias "imagenet2012"), any TFDS image-classification name, plain
or as "tfds:<name>", and any name for class folders or TFRecord shards in data_dir (your
own images; `folder_dataset_name(DIR)` names them after DIR). Sets of fixed images up to
64x64 are held in memory and get the CIFAR views; the others are streamed and get the
ImageNet views.

Where the files are (`data_dir`):
- digits: nothing needed (scikit-learn ships them).
- cifar10 / cifar100: DIR holding cifar-10-python.tar.gz or cifar-10-batches-py/
  (likewise cifar-100), else a TFDS data dir (None: TFDS's default).
- imagenet: `detect_source(DIR)` picks TFRecord shards (train-00000-of-01024, ...,
  validation-...; image/encoded, image/class/label from 1), class folders
  (train/<wnid>/*.JPEG, validation/ or val/; Kaggle's ILSVRC/Data/CLS-LOC with
  LOC_val_solution.csv, or a flat val/ with the devkit: data/imagenet.py), or a TFDS data dir (prepared, or
  downloads/manual/ILSVRC2012_img_{train,val}.tar to prepare). "test" reads validation.
- any other name with a DIR of class folders (train/<class>/<image>, optional validation/
  or val/ and test/; classes by sorted folder name) or TFRecord shards: read as such.
  Listing skips, with a reason, files without an image extension, files whose first bytes
  are no JPEG/PNG/GIF/BMP and files outside class folders; `describe()` says so. Training
  refuses a single class folder and a class left without a training image (an empty folder,
  or one val_split empties): folder_checks.py. EXIF orientation is ignored (pixels as
  stored, as TensorFlow decodes them); `describe()` counts the rotated files of a sample.
- other TFDS names: a TFDS data dir (None: TFDS's default).

make_input_fn(name, split, global_batch_size, *, training, data_dir=None,
              preprocess_mode="pixel_mean", mean=None, seed=None, deterministic=False,
              shuffle_buffer=None, cache=None, val_split=False, image_size=None,
              augment="scale", lighting=0.1, view="center", scale=None, skip_counter=None)
    -> input_fn(input_context or None) -> Dataset of (images float32 [b, H, W, 3],
    labels int32 [b]). The batch b is input_context.get_per_replica_batch_size(global)
    (a global batch not divisible by the replicas in sync is a ValueError), or the
    global batch without a context. Each input pipeline reads its own files
    (input_pipeline_id of num_input_pipelines; in-memory sets: every n-th example).
    training=True: shuffled, repeated forever, augmented, drop_remainder:
      in-memory sets: preprocess, then zero-pad 4, random crop, flip (section 4.2; the mean
        is subtracted before padding so it stays aligned and the padding is 0 at the input);
      ImageNet-like: augment="scale" (the paper: shorter side uniform in [256, 480], random
        224 crop, chosen in source pixels so only the crop is decoded and resized) or
        "inception" (random-resized crop, 8-100% area), flip, AlexNet PCA lighting of
        std `lighting` (0: off), then preprocess_input.
    training=False: one pass in file order, deterministic, drop_remainder=False, with `view`:
      "center" (in-memory sets: the original image; ImageNet: shorter side 256, centre 224),
      "10crop" -> [b, 10, 224, 224, 3] (4 corners + centre, then their flips),
      "multiscale" -> [1, 2, S, S*w/h, 3] (whole image with shorter side `scale`, and its
      flip; batch 1 per replica since sizes differ; one input_fn per scale, the paper's
      scales being views.MULTI_SCALES = (224, 256, 384, 480, 640)).
    preprocess_mode/mean: keras_resnet.preprocessing.preprocess_input, the last step on
      the 0..255 image; mode "pixel_mean" with mean=None uses pixel_mean(name, data_dir)
      (ImageNet: its per-channel mean; other streamed sets: their training images'
      per-channel mean, one pass); mean may be 3 values, [1, 1, 3] or [H, W, 3]. Every
      image is RGB with 3 channels whatever its file held (grey, alpha, palette, CMYK).
    image_size: output size (default dataset_info().image_size); ImageNet's 256 and
      [256, 480] scale with it.
    seed: fixes file order, shuffles and every augmentation (stateless ops seeded by
      (seed, the element's number in the stream): new views each epoch); with
      deterministic=True the order of parallel work is fixed too, so batches repeat exactly.
      Each input pipeline offsets the seed by its id.
    shuffle_buffer: encoded records of streamed sets (10,000). In-memory sets are read in a
      new permutation of the whole set each epoch (stateless `index_shuffle` of a counter,
      no buffer): their iterator checkpoints symbolically, its state a few bytes.
    cache: True caches the unaugmented examples in memory, a string in files with that
      prefix; None/False: no cache (in-memory sets need none).
    val_split: a fraction (True: 0.1) of the training set held out as "validation", for
      in-memory sets and class folders without validation/: stratified by class, fixed
      seed (CIFAR's 45k/5k at 0.1), "test" unchanged. Sets with their own validation split
      refuse it.
    input_fn.skip_counter, input_fn.info: see below and dataset_info.
make_eval_input_fn(name, split, global_batch_size, *, view="center", scale=None, **kw)
    -> make_input_fn(..., training=False, view=view, scale=scale, **kw).
dataset_info(name, data_dir=None, val_split=False) -> DatasetInfo(name, source,
    num_classes, image_size, num_examples {split: n}, class_names or None, small).
pixel_mean(name, data_dir=None, val_split=False) -> float32 [H, W, 3] training-set mean
    image (streamed sets: the per-channel mean as [1, 1, 3]).
describe(name, data_dir=None, val_split=False) -> lines: images per split and class, class
    names, files skipped and why (TFRecords: records per class of the checked sample).
check_head_classes(name, data_dir, classes, val_split=False): a ValueError where a head of
    `classes` outputs cannot hold the data's labels (more class folders, TFRecord labels). eval_view(info, size) -> the centre view's resize and crop.
check_decodable(name, split, data_dir): a ValueError where none of a split's first 64
    images decodes (make_input_fn calls it for streamed sets: no pipeline that waits forever).
digits(split) -> Dataset of (uint8 [32, 32, 3], int32): 1,437 train / 360 test, fixed.
detect_source(data_dir) -> "tfrecord" | "folders" | "cifar_python" | "tfds", or a
    ValueError listing the layouts it reads.

Skipped records (streamed sets): a corrupt or truncated image, a record that does not
parse, or a TFRecord shard cut short is skipped, printed to stderr with its file, and
counted, exactly and at once; the rest goes on (a shard is read up to the break). How:
the elements are numbered, decoded by a parallel map that keeps their order, passed
through `ignore_errors`, batched; the numbers missing from a batch are the skips (see
skips.py). The count is `input_fn.skip_counter.count` (records skipped so far by this
input_fn's pipelines; `.reset()` returns it and starts again, e.g. at each epoch's
end). Pass one `skip_counter=SkipCounter()` to several input_fns to add them up.
A label outside [0, classes) is not skipped: it stops the pipeline with an error
naming its file (TFRecords, checked as read) or a ValueError before reading (CIFAR).
TFRecord labels are checked first on a bounded sample (the first records of every shard,
4,096 in all; tfrecords.py): a label outside the 1,000 classes, or one that disagrees with
the record's image/class/synset, is a ValueError naming the records before any training;
records whose synsets show labels counted from 0 throughout are read as such (said in
`describe()`).
"""

from keras_resnet.data.arrays import cifar_name, digits, load_arrays
from keras_resnet.data.catalog import LAYOUTS, DatasetInfo
from keras_resnet.data.info import check_head_classes, dataset_info, describe, pixel_mean, streamed_channel_mean
from keras_resnet.data.pipeline import (
    check_decodable,
    eval_view,
    make_eval_input_fn,
    make_input_fn,
    per_replica_batch_size,
)
from keras_resnet.data.skips import SkipCounter
from keras_resnet.data.sources import detect_source, folder_dataset_name, folder_split

__all__ = [
    "LAYOUTS",
    "DatasetInfo",
    "SkipCounter",
    "check_decodable",
    "check_head_classes",
    "cifar_name",
    "dataset_info",
    "describe",
    "eval_view",
    "detect_source",
    "digits",
    "folder_dataset_name",
    "folder_split",
    "load_arrays",
    "make_eval_input_fn",
    "make_input_fn",
    "per_replica_batch_size",
    "pixel_mean",
    "streamed_channel_mean",
]
