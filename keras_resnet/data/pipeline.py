"""From a source to batches: sharding, shuffling, views, preprocessing, batching.

`make_input_fn(...)` returns `input_fn(input_context)` for
`strategy.distribute_datasets_from_function`; all arguments are checked when it is made.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_resnet.data import arrays, catalog, folder_checks, sources, views
from keras_resnet.data.info import dataset_info, pixel_mean
from keras_resnet.data.skips import SkipCounter, batch_skipping_errors
from keras_resnet.preprocessing import MODES, preprocess_input

AUGMENTS = ("scale", "inception")
EVAL_VIEWS = ("center", "10crop", "multiscale")
RECORD_SHUFFLE_BUFFER = 10_000
PROBE_IMAGES = 64
SEED_STRIDE = 1_000_003


def per_replica_batch_size(global_batch_size, input_context):
    """The batch one input pipeline makes: the global batch split over replicas in sync."""
    if input_context is None:
        return global_batch_size
    replicas = input_context.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the {replicas} replicas in sync")
    return input_context.get_per_replica_batch_size(global_batch_size)


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer" + (" or None" if allow_none else ""))


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")


def _check_mean(mean, size):
    """The mean must broadcast over [size, size, 3]: 3 values, [1, 1, 3] or [size, size, 3]."""
    shape = np.shape(mean)
    if shape not in ((3,), (1, 1, 3), (size, size, 3)):
        raise ValueError(f"mean of shape {shape} does not fit {size}x{size}x3 images: 3 values or [{size}, {size}, 3]")


def _resolve_mean(name, data_dir, mode, mean, val_split, size, info, view):
    """The mean image for mode "pixel_mean", broadcast to [size, size, 3] where sizes are
    fixed: a same-shape subtraction is 4x faster in tf.data than one over channels."""
    if mode != "pixel_mean":
        return None
    if mean is None:
        mean = pixel_mean(name, data_dir, val_split)
        if info.small and mean.shape[0] != size:
            mean = tf.image.resize(mean, [size, size]).numpy()
    mean = np.asarray(mean, dtype=np.float32)
    if view == "multiscale" and mean.size != 3:
        raise ValueError(f"view='multiscale' sizes vary: mean must be 3 per-channel values, not shape {mean.shape}")
    if view == "multiscale":
        return mean
    _check_mean(mean, size)
    return np.ascontiguousarray(np.broadcast_to(mean, (size, size, 3)))


def _pipeline_seed(seed, input_context):
    """This input pipeline's seed: `seed` (or a fresh random one), offset per pipeline."""
    seed = int(np.random.default_rng().integers(2**40)) if seed is None else seed
    return seed + SEED_STRIDE * (input_context.input_pipeline_id if input_context is not None else 0)


def _element_seed(pipeline_seed, index):
    """Stateless seed [2] of the index-th element of a stream: new views every epoch."""
    return tf.stack([tf.constant(pipeline_seed, tf.int64), index])


def _small_dataset(cfg, input_context, loaded):
    """In-memory sets: shard by example, shuffle all, pad-crop-flip (section 4.2).

    Training reads example `index_shuffle(position % n)` of a per-epoch permutation at
    each position of an endless counter: the same order a full-set shuffle gives, with
    no shuffle buffer. The iterator's whole state is then the counter (symbolic
    checkpointing), so a checkpoint holds a few bytes of it, not the data set.
    """
    images, labels = loaded
    if input_context is not None and input_context.num_input_pipelines > 1:
        step, start = input_context.num_input_pipelines, input_context.input_pipeline_id
        images, labels = images[start::step], labels[start::step]
    size, native = cfg["size"], images.shape[1]

    def prepare(image):
        image = tf.cast(image, tf.float32)
        if size != native:
            image = tf.image.resize(image, [size, size])
        return preprocess_input(image, cfg["mode"], cfg["mean"])

    if not cfg["training"]:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if cfg["cache"]:
            dataset = dataset.cache("" if cfg["cache"] is True else cfg["cache"])
        return dataset.map(lambda image, label: (prepare(image), label), num_parallel_calls=tf.data.AUTOTUNE)
    seed = _pipeline_seed(cfg["seed"], input_context)
    count = len(labels)
    all_images, all_labels = tf.constant(images), tf.constant(labels)

    def example(position):
        index = tf.random.experimental.index_shuffle(
            position % count, _element_seed(seed, position // count), count - 1
        )
        image = views.pad_crop_flip(prepare(tf.gather(all_images, index)), _element_seed(seed, position))
        return image, tf.gather(all_labels, index)

    return tf.data.Dataset.counter().map(
        example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg["deterministic"]
    )


def eval_view(info, size):
    """{"resize", "crop"} of the centre view at crop `size`: in-memory sets take the whole
    image (resize None); streamed sets resize the shorter side in the ratio 256:224 first.
    What an exported model must do to an image to see what evaluation saw."""
    return {"resize": None if info.small else round(views.RESIZE * size / views.CROP), "crop": size}


def _large_view(cfg):
    """encoded image (+ seed) -> float32 view in 0..255, by training flag and view name."""
    size = cfg["size"]
    resize = round(views.RESIZE * size / views.CROP)
    if cfg["training"]:
        scale_range = tuple(round(s * size / views.CROP) for s in views.SCALE_RANGE)
        return lambda encoded, seed: views.imagenet_train_view(
            encoded, seed, size, scale_range, cfg["augment"], cfg["lighting"]
        )
    if cfg["view"] == "10crop":
        return lambda encoded, seed: views.ten_crop_view(encoded, size, resize)
    if cfg["view"] == "multiscale":
        return lambda encoded, seed: views.full_view(encoded, cfg["scale"])
    return lambda encoded, seed: views.center_view(encoded, size, resize)


def _large_dataset(cfg, input_context, counter, batch_size):
    """Encoded sets: shard by file, shuffle records, decode with skips counted (section 3.4)."""
    training = cfg["training"]
    examples, unpack = sources.encoded_examples(
        cfg["name"],
        cfg["split"],
        cfg["data_dir"],
        input_context,
        training=training,
        seed=cfg["seed"],
        deterministic=cfg["deterministic"] if training else True,
        val_split=cfg["val_split"],
    )
    if cfg["cache"]:
        examples = examples.cache("" if cfg["cache"] is True else cfg["cache"])
    if training:
        examples = examples.shuffle(cfg["shuffle_buffer"] or RECORD_SHUFFLE_BUFFER, seed=cfg["seed"]).repeat()
    seed = _pipeline_seed(cfg["seed"], input_context)
    view = _large_view(cfg)

    def work(index, *example):
        """example: (payload, label hint, ..., origin)."""
        encoded, label = unpack(example[0], example[1])
        image = view(encoded, _element_seed(seed, index))
        return preprocess_input(image, cfg["mode"], cfg["mean"]), label, example[-1]

    check = _label_check(cfg["num_classes"])
    return batch_skipping_errors(examples, work, counter, batch_size, drop_remainder=training, check=check)


def _label_check(classes):
    """A label outside [0, classes) stops the pipeline with an error naming its file."""

    def check(images, labels, origins):
        valid = tf.logical_and(labels >= 0, labels < classes)
        bad = tf.logical_not(valid)
        message = ["labels", tf.boolean_mask(labels, bad), f"outside [0, {classes}) in", tf.boolean_mask(origins, bad)]
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(valid), message)]):
            return tf.identity(images), tf.identity(labels)

    return check


def _check_arguments(global_batch_size, image_size, shuffle_buffer, preprocess_mode, augment, lighting, seed, cache):
    _check_positive_int("global_batch_size", global_batch_size)
    _check_positive_int("image_size", image_size, allow_none=True)
    _check_positive_int("shuffle_buffer", shuffle_buffer, allow_none=True)
    _check_choice("preprocess_mode", preprocess_mode, MODES)
    _check_choice("augment", augment, AUGMENTS)
    if not isinstance(lighting, (int, float)) or lighting < 0:
        raise ValueError(f"lighting={lighting!r} must be a standard deviation >= 0 (0 turns it off)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed={seed!r} must be an integer or None")
    if not isinstance(cache, (bool, str, type(None))):
        raise ValueError(f"cache={cache!r} must be None, True/False (memory) or a file path prefix")


def _check_view(training, view, scale):
    _check_choice("view", view, EVAL_VIEWS)
    if training and view != "center":
        raise ValueError(f"view={view!r} is an evaluation view: use it with training=False")
    if view == "multiscale":
        _check_positive_int("scale", scale)


def _check_split(info, split, data_dir, val_split, view):
    """The split exists (and has files), and the view and val_split suit the data set."""
    if info.small:
        catalog.check_split(split, ("train", "validation", "test") if val_split else ("train", "test"))
        if view != "center":
            raise ValueError(f"view={view!r} is for ImageNet-size images; {info.name} has the single view 'center'")
        return
    catalog.check_split(split)
    sources.check_split_files(info.name, split, data_dir, val_split)


def _decodes(unpack):
    def decode(*example):
        return tf.shape(views.decode_rgb(unpack(example[0], example[1])[0]))

    return decode


def check_decodable(name, split, data_dir, val_split=0.0, probe=PROBE_IMAGES):
    """A ValueError naming the source where none of a split's first `probe` images decodes
    (every file corrupt, say): the skipping pipeline would otherwise wait for one forever."""
    examples, unpack = sources.encoded_examples(
        name, split, data_dir, None, training=False, seed=None, deterministic=True, val_split=val_split
    )
    first = examples.take(probe)
    if int(first.map(_decodes(unpack)).ignore_errors().take(1).reduce(0, lambda n, _: n + 1)):
        return
    tried = int(first.reduce(0, lambda n, _: n + 1))
    where = data_dir or "the TFDS data dir"
    raise ValueError(
        f"no readable image in {name} {split} ({where}): the first {tried} records or files were all skipped "
        "as unreadable (no parse or no decode); check the files, e.g. open one with PIL"
    )


def make_input_fn(
    name,
    split,
    global_batch_size,
    *,
    training,
    data_dir=None,
    preprocess_mode="pixel_mean",
    mean=None,
    seed=None,
    deterministic=False,
    shuffle_buffer=None,
    cache=None,
    val_split=False,
    image_size=None,
    augment="scale",
    lighting=views.LIGHTING_STD,
    view="center",
    scale=None,
    skip_counter=None,
):
    """input_fn(input_context or None) -> Dataset of (float32 [b, H, W, 3], int32 [b]).

    See the package docstring for every argument; they are all checked here.
    """
    _check_arguments(global_batch_size, image_size, shuffle_buffer, preprocess_mode, augment, lighting, seed, cache)
    _check_view(training, view, scale)
    name = catalog.canonical_name(name)
    info = dataset_info(name, data_dir, val_split)
    _check_split(info, split, data_dir, val_split, view)
    if training and info.source == "folders":
        folder_checks.check_training_classes(data_dir, val_split)
    if not info.small:
        check_decodable(info.name, split, data_dir, val_split)
    size = image_size or info.image_size
    cfg = dict(
        name=info.name,
        split=split,
        data_dir=data_dir,
        training=bool(training),
        mode=preprocess_mode,
        mean=_resolve_mean(info.name, data_dir, preprocess_mode, mean, val_split, size, info, view),
        seed=None if seed is None else int(seed),
        deterministic=bool(deterministic),
        shuffle_buffer=shuffle_buffer,
        cache=cache,
        val_split=val_split,
        size=size,
        augment=augment,
        lighting=float(lighting),
        view=view,
        scale=scale,
        num_classes=info.num_classes,
    )
    counter = skip_counter or SkipCounter()
    loaded = arrays.load_arrays(name, split, data_dir, val_split) if info.small else None

    def input_fn(input_context=None):
        batch_size = per_replica_batch_size(global_batch_size, input_context)
        if view == "multiscale" and batch_size != 1:
            raise ValueError(f"view='multiscale' images differ in size: batch 1 per replica, not {batch_size}")
        if info.small:
            dataset = _small_dataset(cfg, input_context, loaded).batch(batch_size, drop_remainder=cfg["training"])
        else:
            dataset = _large_dataset(cfg, input_context, counter, batch_size)
        options = tf.data.Options()
        options.deterministic = cfg["deterministic"] or not training
        options.experimental_symbolic_checkpoint = info.small and cfg["training"]
        return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)

    input_fn.skip_counter = counter
    input_fn.info = info
    return input_fn


def make_eval_input_fn(name, split, global_batch_size, *, view="center", scale=None, **kwargs):
    """Evaluation input_fn: one deterministic pass with the named view (section 3.4).

    center: [b, 224, 224, 3]; 10crop: [b, 10, 224, 224, 3] (4 corners + centre, then
    their flips); multiscale: [1, 2, S, S*w/h, 3] (whole image, shorter side `scale`,
    and its flip), one input_fn per scale in views.MULTI_SCALES.
    """
    return make_input_fn(name, split, global_batch_size, training=False, view=view, scale=scale, **kwargs)
