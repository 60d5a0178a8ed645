"""Inference images/s of keras_resnet beside keras.applications and the exported artifacts.

All rows run the same net on the same batch in one process, interleaved (A B A B) after
warm-up; each reports images/s at the median call, p50/p99 latency, achieved GFLOP/s (2 x
multiply-adds of `keras_resnet.count_flops`) as a fraction of the fp32 matmul rate measured
in the same process, and its ratio to keras.applications under tf.function.

  keras_applications_tf_function  keras.applications ResNet50 (101, 152) in a tf.function
  keras_applications_predict      the same model through model.predict (the batch as a
                                  one-batch tf.data.Dataset, autotuning off: one_batch_dataset)
  keras_resnet_tf_function        keras_resnet's --model in a tf.function
  keras_resnet_predict            the same model through model.predict
  saved_model                     the exporter's SavedModel, serving_default, run in a
                                  TensorFlow session as TF Serving runs it
  onnx_fp32, onnx_int8, onnx_fp16 the exporter's ONNX files in onnxruntime (fp16 where it runs)

The keras rows get preprocessed float images; the exported graphs take RGB 0..255 and carry
the preprocessing (and softmax, top-k) inside, as they serve. Kernels are random, the BN
layers those of a trained net (keras_resnet.testing.with_trained_statistics on scikit-learn's
bundled photos: untrained BNs fold into zero biases, which TensorFlow's constant folding would
drop from the frozen SavedModel graph); the int8 copy is calibrated on random images (its
accuracy is the exporter's report on real data).

    python bench/inference.py --json /tmp/inference.json
    python bench/inference.py --quick --json /tmp/inference.json   # smoke run
"""

from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (bench/timing.py, beside this script)

ROWS = (
    "keras_applications_tf_function",
    "keras_applications_predict",
    "keras_resnet_tf_function",
    "keras_resnet_predict",
    "saved_model",
    "onnx_fp32",
    "onnx_int8",
    "onnx_fp16",
)
REFERENCE = "keras_applications_tf_function"
QUICK = {
    "model": "resnet20",
    "batch_size": 4,
    "iterations": 3,
    "warmup": 1,
    "matmul_size": 1024,
    "calibration_images": 8,
}

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet50", "Registered keras_resnet architecture to time (keras_resnet.list_models()).")
flags.DEFINE_integer("batch_size", 32, "Images per call.")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: resnet20 unless --model is given, batch 4, 3 iterations, 1024x1024 matmul; "
    "proves the script works, its figures mean nothing.",
)
flags.DEFINE_list("rows", list(ROWS), f"Rows to run, a comma list from {','.join(ROWS)}.")
flags.DEFINE_integer("iterations", 20, "Timed calls per row (interleaved rounds).")
flags.DEFINE_integer("warmup", 3, "Untimed calls per row before timing (tracing, compilation).")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square fp32 matmul that measures the machine's peak.")
flags.DEFINE_integer("calibration_images", 64, "Random images the int8 copy is calibrated on.")
flags.DEFINE_integer(
    "saved_model_inter_op_threads",
    1,
    "Threads the SavedModel's session runs independent ops on: TF Serving's "
    "--tensorflow_inter_op_parallelism, which the README advises setting to 1 on small CPUs; "
    "0 is TensorFlow's default (one per core).",
)


def peer_model(builder, size):
    """keras.applications' ResNet of the same depth (50, 101, 152) at the same input size;
    ResNet50 for any other net, so the rows still have a reference."""
    import keras

    depth = builder.spec.depth if builder.spec.stem == "imagenet" and builder.residual else 50
    constructor = getattr(keras.applications, f"ResNet{depth}", keras.applications.ResNet50)
    return constructor(weights=None, input_shape=(*size, 3))


def one_batch_dataset(batch):
    """The batch as `predict`'s input: a one-element tf.data.Dataset with autotuning off.

    Given arrays, `predict` builds an autotuned pipeline, and dropping its iterator waits for
    the autotune thread's next wake-up, idle in some calls and not others, for any net
    (BENCHMARKS.md, "Keras' predict teardown stall"). That wait is tf.data's, and it would decide the predict ratio by which calls it hit."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensors(batch).with_options(options)


def keras_calls(prefix, model, batch):
    """The tf.function and predict rows of one Keras model on a preprocessed batch."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    tensor = tf.constant(batch)
    dataset = one_batch_dataset(batch)
    return {
        f"{prefix}_tf_function": lambda: forward(tensor).numpy(),
        f"{prefix}_predict": lambda: model.predict(dataset, verbose=0),
    }


def saved_model_call(source, directory, images, inter_op_threads):
    """serving_default of the exporter's SavedModel (folded, frozen, preprocessing inside) in a
    TensorFlow 1 session, as TF Serving runs it: Grappler and the oneDNN rewrites at load, then
    `Session.run`, with its own pool of `inter_op_threads` (0: TensorFlow's default).

    crop_fraction=1.0 only changes the bytes signature, which is not timed here."""
    import tensorflow as tf

    from keras_resnet.export.graph import FLOAT_SIGNATURE, IMAGES
    from keras_resnet.export.saved_model import export_saved_model

    exported = export_saved_model(source, os.path.join(directory, "saved_model"), crop_fraction=1.0)
    config = tf.compat.v1.ConfigProto()
    if inter_op_threads:
        config.session_inter_op_thread_pool.add().num_threads = inter_op_threads
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        signature = tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], exported.path).signature_def[
            FLOAT_SIGNATURE
        ]
    feed = {signature.inputs[IMAGES].name: images}
    fetch = signature.outputs["probabilities"].name
    return lambda: session.run(fetch, feed)


def onnx_call(source, directory, images, calibration, name):
    """One onnxruntime CPU session of the exporter's file for row `name` on the batch: one
    export_onnx call per row, so a copy this onnxruntime cannot build or run (fp16 lacks
    kernels in some builds) skips only its own row."""
    from keras_resnet.export.onnx import export_onnx
    from keras_resnet.export.verify import onnx_session

    precision = name.removeprefix("onnx_")
    result = export_onnx(
        source,
        os.path.join(directory, name, "model.onnx"),
        fp16=precision == "fp16",
        int8=precision == "int8",
        calibration_images=calibration,
        overwrite=True,
        int8_min_agreement=0.0,
    )
    session = onnx_session({"fp32": result.path, "fp16": result.fp16_path, "int8": result.int8_path}[precision])
    feed = {session.get_inputs()[0].name: images}
    return lambda: session.run(None, feed)


def _reason(error):
    return f"export failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"


def exported_calls(source, directory, images, calibration, wanted, inter_op_threads):
    """(calls, skipped) of the exported rows in `wanted`; a row whose export fails is skipped
    with the reason, so one broken path does not hide the others."""
    calls, skipped = {}, {}
    for name in ("saved_model", "onnx_fp32", "onnx_int8", "onnx_fp16"):
        if name not in wanted:
            continue
        try:
            if name == "saved_model":
                calls[name] = saved_model_call(source, directory, images, inter_op_threads)
            else:
                calls[name] = onnx_call(source, directory, images, calibration, name)
        except Exception as error:  # noqa: BLE001  recorded and printed, never hidden
            skipped[name] = _reason(error)
    return calls, skipped


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"--rows {unknown} unknown; choose from {', '.join(ROWS)}")
    run = timing.settings(FLAGS, QUICK)
    timing.require_positive(run, ("batch_size", "iterations", "matmul_size", "calibration_images"))
    if FLAGS.saved_model_inter_op_threads < 0:
        raise app.UsageError(
            f"--saved_model_inter_op_threads={FLAGS.saved_model_inter_op_threads} must be >= 0 (0: TensorFlow's default)"
        )
    import numpy as np

    from keras_resnet import count_flops, get_builder
    from keras_resnet.export.sources import ModelSource
    from keras_resnet.preprocessing import preprocess_input
    from keras_resnet.testing import sample_photos, with_trained_statistics

    try:
        builder = get_builder(run["model"])
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    wanted = set(FLAGS.rows)
    model = builder(weights=None)
    size = model.input_shape[1:3]
    with_trained_statistics(model, preprocess_input(sample_photos(size[0], count=16), "caffe"))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(run["batch_size"], *size, 3)).astype("float32")
    calibration = rng.uniform(0, 255, size=(run["calibration_images"], *size, 3)).astype("float32")
    batch = np.asarray(preprocess_input(images, "caffe"))
    own_flops = 2 * count_flops(model)
    flops = dict.fromkeys(ROWS, own_flops)
    calls = keras_calls("keras_resnet", model, batch)
    if wanted & {REFERENCE, "keras_applications_predict"}:
        peer = peer_model(builder, size)
        calls.update(keras_calls("keras_applications", peer, batch))
        flops.update(
            dict.fromkeys(("keras_applications_tf_function", "keras_applications_predict"), 2 * count_flops(peer))
        )
    source = ModelSource(model=model, preprocess_mode="caffe", name=run["model"])
    with tempfile.TemporaryDirectory() as directory:
        exported, skipped = exported_calls(
            source, directory, images, calibration, wanted, FLAGS.saved_model_inter_op_threads
        )
        calls.update(exported)
        calls = {name: calls[name] for name in ROWS if name in calls and name in wanted}
        peak = timing.matmul_gflops(run["matmul_size"])
        seconds = timing.interleaved(calls, warmup=run["warmup"], iterations=run["iterations"])
    rows = [
        timing.row(name, seconds[name], batch_size=run["batch_size"], flops_per_image=flops[name], peak_gflops=peak)
        for name in calls
    ]
    timing.add_ratios(rows, lambda name: REFERENCE)
    report(run, rows, skipped, peak, own_flops, size)


def report(run, rows, skipped, peak, own_flops, size):
    """Print the table and write --json."""
    timing.print_title(
        f"{run['model']} at {size[0]}x{size[1]}, batch {run['batch_size']}, {run['iterations']} interleaved calls per row "
        f"after {run['warmup']} warm-up; {own_flops / 2e9:.3f} GMAC per image; fp32 matmul {run['matmul_size']}^2: "
        f"{peak:.1f} GFLOP/s",
        FLAGS.quick,
    )
    timing.print_table(rows, "x keras.app")
    timing.print_skipped(skipped)
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=("tensorflow", "keras", "onnxruntime", "tf2onnx", "onnx", "numpy"),
            quick=FLAGS.quick,
            rows=rows,
            model=run["model"],
            image_size=list(size),
            batch_size=run["batch_size"],
            iterations=run["iterations"],
            warmup=run["warmup"],
            gmac_per_image=own_flops / 2e9,
            saved_model_inter_op_threads=FLAGS.saved_model_inter_op_threads,
            peak_gflops=peak,
            skipped=skipped,
        )


if __name__ == "__main__":
    app.run(main)
