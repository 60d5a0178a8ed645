"""Images/s of the ImageNet training input pipeline, per CPU core, against plain decoding.

Per core = images per second of CPU time used by the process (all its threads), which
is images/s per core for a pipeline that keeps every core busy, and stays meaningful on
a machine shared with other work; wall-clock images/s are printed beside it.

Writes JPEG TFRecord shards in the format of TensorFlow's ImageNet tooling (500x375
photos-like images by default), then times, in the same run and on the same files, in
--rounds alternating rounds (the median counts):
  decode     parse + full JPEG decode + batch: the floor of the work
  scale      make_input_fn's training view (the paper's scale augmentation, section 3.4)
  inception  make_input_fn with augment="inception"
  naive      full decode, resize to the sampled scale, random crop (for reference)

    python bench/input_pipeline.py --json /tmp/input_pipeline.json
    python bench/input_pipeline.py --quick --json /tmp/input_pipeline.json   # smoke run
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (bench/timing.py, beside this script)

PIPELINES = ("decode", "scale", "inception", "naive")
WARMUP_BATCHES = 5
QUICK = {"num_images": 256, "batches": 16, "rounds": 2}

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: 256 images, 16 batches, 2 rounds where those flags are not given; proves the script works, "
    "its figures mean nothing.",
)
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_integer("num_images", 512, "JPEGs written, in one shard per core (at least 2).")
flags.DEFINE_integer("width", 500, "Width of the written JPEGs.")
flags.DEFINE_integer("height", 375, "Height of the written JPEGs.")
flags.DEFINE_integer("batch_size", 32, "Batch size of every pipeline.")
flags.DEFINE_integer("batches", 60, f"Timed batches per pipeline and round (after {WARMUP_BATCHES} warm-up batches).")
flags.DEFINE_list("pipelines", list(PIPELINES), f"Pipelines to time, a comma list from {','.join(PIPELINES)}.")
flags.DEFINE_integer("rounds", 3, "Each pipeline is timed this many times, alternating; the median counts.")


def photo_like(rng, height, width):
    """A smooth random picture plus grain: JPEG sizes like photos' (~100 KB at 500x375)."""
    import numpy as np
    from PIL import Image

    coarse = rng.integers(0, 256, size=(height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    grain = rng.normal(0.0, 16.0, size=smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def write_shards(directory, num_images, height, width, shards):
    """train-0000k-of-0000n shards of tf.train.Examples; returns the mean JPEG size.

    ImageNet's shards hold ~1,250 images: each shard opened costs the library pipeline
    a few milliseconds (its skip bookkeeping), so few, large shards are the fair test.
    """
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    writers = [tf.io.TFRecordWriter(os.path.join(directory, f"train-{k:05d}-of-{shards:05d}")) for k in range(shards)]
    for i in range(num_images):
        buffer = io.BytesIO()
        Image.fromarray(photo_like(rng, height, width)).save(buffer, "JPEG", quality=90)
        encoded = buffer.getvalue()
        total += len(encoded)
        feature = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1 + i % 1000])),
            "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
        }
        writers[i % shards].write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    for writer in writers:
        writer.close()
    return total / num_images


def plain_records(directory):
    import tensorflow as tf

    files = tf.data.Dataset.list_files(os.path.join(directory, "train-*"), shuffle=False)
    records = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE).repeat()
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    return records.map(lambda r: tf.io.parse_single_example(r, spec)["image/encoded"])


def decode_dataset(directory, batch_size):
    """Parse and decode only: the work no pipeline can skip."""
    import tensorflow as tf

    images = plain_records(directory).map(lambda e: tf.io.decode_jpeg(e, channels=3), tf.data.AUTOTUNE)
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def naive_dataset(directory, batch_size):
    """The straightforward scale augmentation: decode all, resize to S in [256, 480], crop."""
    import tensorflow as tf

    def view(encoded):
        image = tf.io.decode_jpeg(encoded, channels=3)
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.random.uniform([], 256, 481, dtype=tf.int32)
        size = tf.cast(tf.round(hw * tf.cast(scale, tf.float32) / tf.reduce_min(hw)), tf.int32)
        resized = tf.image.resize(image, size)
        return tf.image.random_flip_left_right(tf.image.random_crop(resized, [224, 224, 3]))

    images = plain_records(directory).map(view, tf.data.AUTOTUNE)
    return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def library_dataset(directory, batch_size, augment):
    from keras_resnet.data import make_input_fn

    input_fn = make_input_fn(
        "imagenet", "train", batch_size, training=True, data_dir=directory, augment=augment, shuffle_buffer=256, seed=0
    )
    return input_fn(None)


def images_per_second(dataset, batches, batch_size):
    """(images per CPU-second, images per wall-second) over `batches` batches.

    Each timing has its own iterator, gone before the next starts: no other pipeline's
    threads run meanwhile.
    """
    iterator = iter(dataset)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    return images / (time.process_time() - cpu), images / (time.perf_counter() - wall)


def build(name, directory, batch_size):
    if name == "decode":
        return decode_dataset(directory, batch_size)
    if name == "naive":
        return naive_dataset(directory, batch_size)
    return library_dataset(directory, batch_size, name)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.pipelines) - set(PIPELINES))
    if unknown or "decode" not in FLAGS.pipelines:
        raise app.UsageError(f"--pipelines={FLAGS.pipelines}: choose from {PIPELINES}, 'decode' included")
    run = timing.settings(FLAGS, QUICK, ("width", "height", "batch_size"))
    timing.require_positive(run, ("num_images", "width", "height", "batch_size", "batches", "rounds"))
    import numpy as np

    cores = timing.machine()["cores"]
    per_core = {name: [] for name in FLAGS.pipelines}
    wall = {name: [] for name in FLAGS.pipelines}
    with tempfile.TemporaryDirectory() as directory:
        jpeg_bytes = write_shards(directory, run["num_images"], run["height"], run["width"], max(cores, 2))
        datasets = {name: build(name, directory, run["batch_size"]) for name in FLAGS.pipelines}
        for _ in range(run["rounds"]):
            for name, dataset in datasets.items():
                cpu_rate, wall_rate = images_per_second(dataset, run["batches"], run["batch_size"])
                per_core[name].append(cpu_rate)
                wall[name].append(wall_rate)
    decode = float(np.median(per_core["decode"]))
    rows = [
        {
            "name": name,
            "images_per_s_per_core": float(np.median(per_core[name])),
            "images_per_s": float(np.median(wall[name])),
            "per_core_ratio_to": "decode",
            "per_core_ratio": float(np.median(per_core[name])) / decode,
        }
        for name in FLAGS.pipelines
    ]
    report(run, rows, cores, jpeg_bytes)


def report(run, rows, cores, jpeg_bytes):
    """Print the table and write --json."""
    timing.print_title(
        f"{run['num_images']} JPEGs {run['width']}x{run['height']}, mean {jpeg_bytes / 1024:.0f} KB, batch "
        f"{run['batch_size']}, {cores} CPU cores; median of {run['rounds']} alternating rounds of {run['batches']} "
        f"batches per pipeline",
        FLAGS.quick,
    )
    print(f"{'pipeline':{timing.NAME_WIDTH}s} {'per core':>9s} {'x decode':>9s} {'wall':>9s}  (images/s)")
    for r in rows:
        print(
            f"{r['name']:{timing.NAME_WIDTH}s} {r['images_per_s_per_core']:9.1f} {r['per_core_ratio']:8.2f}x "
            f"{r['images_per_s']:9.1f}"
        )
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=("tensorflow", "numpy", "pillow"),
            quick=FLAGS.quick,
            rows=rows,
            **run,
            mean_jpeg_bytes=jpeg_bytes,
        )


if __name__ == "__main__":
    app.run(main)
