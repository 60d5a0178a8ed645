"""Inference images/s of keras_resnet beside keras.applications and the exported artifacts.

All rows run the same net on the same batch, interleaved (A B A B) after warm-up, each timed
call after an untimed one of its own; the Keras rows run in this process, each exported file
in a runtime process of its own (--isolate_runtimes), as a server runs it. Each reports
images/s at the median call, p50/p99 latency, achieved GFLOP/s (2 x multiply-adds of
`keras_resnet.count_flops`) as a fraction of the fp32 matmul rate measured in the same
process, its ratio to keras.applications under tf.function, and the median CPU time of its
calls in the process that ran them (all threads: CPU time over p50 is the cores a call keeps
busy, spinning and waiting included).

  keras_applications_tf_function  keras.applications ResNet50 (101, 152) in a tf.function
  keras_applications_predict      the same model through model.predict (the batch as a
                                  one-batch tf.data.Dataset, autotuning off: one_batch_dataset)
  keras_resnet_tf_function        keras_resnet's --model in a tf.function
  keras_resnet_predict            the same model through model.predict
  saved_model                     the exporter's SavedModel, serving_default, run in a
                                  TensorFlow session as TF Serving runs it
  keras_export_saved_model        the TF Serving peer: keras.applications' net exported by Keras'
                                  own model.export(format="tf_saved_model"), served as saved_model
  onnx_fp32, onnx_int8, onnx_fp16 the exporter's ONNX files in onnxruntime (fp16 where it runs)
  litert_fp32, litert_int8        the exporter's .tflite files (float32; full-integer int8) in
                                  the LiteRT interpreter, XNNPACK, one thread per core
  openvino_fp32, openvino_int8    the exporter's OpenVINO IR (float32 compute; NNCF int8) on
                                  OpenVINO's CPU plugin
  openvino_bf16                   the float32 IR as OpenVINO runs it by default on a CPU with
                                  bfloat16 (its precision hint unset)

Every row is timed at --batch_size, then again at --latency_batch_size (one image: what an
online request costs, p50/p99); the last table puts both beside each exported file's size.
A last line gives what a TF Serving user compares: saved_model over keras_export_saved_model,
images/s at --batch_size and p50 at --latency_batch_size (JSON: tf_serving_peer), after checking
that both compute one function (top-1 agreement, logits within 1e-3): keras.applications' net
holds keras_resnet's weights where the two nets are alike (ResNet-50/101/152), else it is not
checked and says why.

The keras rows and Keras' export get preprocessed float images (keras.applications leaves
preprocess_input to its caller); the exporter's graphs take RGB 0..255 and carry the
preprocessing (and softmax, top-k) inside, as they serve. Kernels are random, the BN
layers those of a trained net (keras_resnet.testing.with_trained_statistics on scikit-learn's
bundled photos: untrained BNs fold into zero biases, which TensorFlow's constant folding would
drop from a graph of constants); the int8 copy is calibrated on random images (its
accuracy is the exporter's report on real data).

    python bench/inference.py --json /tmp/inference.json
    python bench/inference.py --rows saved_model,onnx_fp32 --latency_batch_size 0   # two rows, batch 32 only
    python bench/inference.py --quick --json /tmp/inference.json   # smoke run
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (bench/timing.py, beside this script)

ROWS = (
    "keras_applications_tf_function",
    "keras_applications_predict",
    "keras_resnet_tf_function",
    "keras_resnet_predict",
    "saved_model",
    "keras_export_saved_model",
    "onnx_fp32",
    "onnx_int8",
    "onnx_fp16",
    "litert_fp32",
    "litert_int8",
    "openvino_fp32",
    "openvino_int8",
    "openvino_bf16",
)
EXPORTED = ROWS[4:]
REFERENCE = "keras_applications_tf_function"
# The SavedModel a TF Serving user would otherwise serve: Keras' own export of keras.applications' net.
KERAS_EXPORT = "keras_export_saved_model"
# The most the peer's logits may differ (relative) from the exporter's SavedModel's on the same weights.
MAX_LOGITS_DIFFERENCE = 1e-3
# An untimed call before each timed one: a runtime's first call after another's finds its memory
# cold (ResNet-50 at batch 1: TensorFlow +10 ms, onnxruntime +6 ms), which a server never meets.
REWARM = 1
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
flags.DEFINE_integer(
    "latency_batch_size", 1, "Time every row again at this batch (online latency); 0: only --batch_size."
)
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
flags.DEFINE_bool(
    "isolate_runtimes",
    True,
    "Run each exported file's runtime in a process of its own, as a server runs it (the Keras rows stay in this "
    "one); false: every runtime in this process, where one's threads and allocations slow the next.",
)
flags.DEFINE_integer(
    "intra_op_threads",
    0,
    "Threads the SavedModel's session and the onnxruntime sessions split each operator over "
    "(TF Serving's --tensorflow_intra_op_parallelism, onnxruntime's intra_op_num_threads); "
    "0 is each runtime's default (one per core). 1 compares the kernels without their threading.",
)


def peer_model(builder, size):
    """keras.applications' ResNet of the same depth (50, 101, 152) at the same input size;
    ResNet50 for any other net, so the rows still have a reference."""
    import keras

    depth = builder.spec.depth if builder.spec.stem == "imagenet" and builder.residual else 50
    constructor = getattr(keras.applications, f"ResNet{depth}", keras.applications.ResNet50)
    return constructor(weights=None, input_shape=(*size, 3))


def copy_weights(model, peer, name):
    """Give keras.applications' `peer` the weights of keras_resnet's `model` (named `name`),
    whose convs have no bias: the peer's become zero. ValueError naming the first layer of the
    peer that `model` lacks or shapes differently."""
    import keras

    from keras_resnet.weights import assign, model_arrays

    arrays = model_arrays(model)
    for layer in peer.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias and layer.name in arrays:
            arrays[layer.name] = {**arrays[layer.name], "bias": np.zeros(tuple(layer.bias.shape), "float32")}
    assign(peer, arrays, name)


def same_weights_peer(builder, model, size, name, photos):
    """(peer_model, None) holding `model`'s weights, so the two compute one function; where the
    nets differ, (peer_model with trained statistics of its own on `photos`, why the two cannot
    hold the same weights)."""
    from keras_resnet.testing import with_trained_statistics

    peer = peer_model(builder, size)
    try:
        copy_weights(model, peer, name)
    except ValueError as error:
        with_trained_statistics(peer, photos)
        return peer, f"{name} is not keras.applications' {peer.name} ({error})"
    return peer, None


def one_batch_dataset(batch):
    """The batch as `predict`'s input: a one-element tf.data.Dataset with autotuning off.

    Given arrays, `predict` builds an autotuned pipeline, and dropping its iterator waits for
    the autotune thread's next wake-up, idle in some calls and not others, for any net
    (BENCHMARKS.md, "Keras' predict teardown stall"). That wait is tf.data's, and it would decide the predict ratio by which calls it hit."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensors(batch).with_options(options)


def keras_binders(prefix, model, mode):
    """The tf.function and predict rows of one Keras model: each binds RGB images (preprocessed
    here, outside the timed call) to a call."""
    import tensorflow as tf

    from keras_resnet.preprocessing import preprocess_input

    forward = tf.function(lambda x: model(x, training=False))

    def tf_function(images):
        tensor = tf.constant(preprocess_input(images, mode))
        return cpu_timed(lambda: forward(tensor).numpy())

    def predict(images):
        dataset = one_batch_dataset(preprocess_input(images, mode))
        return cpu_timed(lambda: model.predict(dataset, verbose=0))

    return {f"{prefix}_tf_function": tf_function, f"{prefix}_predict": predict}


def export_saved_model_file(source, directory, reference):
    """The exporter's SavedModel (folded, preprocessing inside): its version dir.
    crop_fraction=1.0 only changes the bytes signature, which is not timed here."""
    from keras_resnet.export.saved_model import export_saved_model

    return export_saved_model(
        source, os.path.join(directory, "saved_model"), crop_fraction=1.0, reference=reference
    ).path


def export_keras_saved_model_file(peer, directory):
    """keras.applications' `peer` as Keras exports it for TF Serving (`model.export`, weights
    as variables, nothing folded): its dir."""
    path = os.path.join(directory, KERAS_EXPORT)
    peer.export(path, format="tf_saved_model", verbose=False)
    return path


def saved_model_runner(path, threads, output=None):
    """serving_default of the SavedModel at `path` in a TensorFlow 1 session, as TF Serving runs
    it: Grappler and the oneDNN rewrites at load, then `Session.run`, with its own pool of
    `threads["inter_op"]` and `threads["intra_op"]` threads (0: TensorFlow's default). The
    signature's one input is fed; `output` is fetched, or its only output when None."""
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads["intra_op"])
    if threads["inter_op"]:
        config.session_inter_op_thread_pool.add().num_threads = threads["inter_op"]
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        signature = tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], path).signature_def[
            tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        ]
    (feed,) = (tensor.name for tensor in signature.inputs.values())
    (fetch,) = (tensor.name for key, tensor in signature.outputs.items() if output in (None, key))
    return lambda images: session.run(fetch, {feed: images})


def onnx_runner(path, threads):
    """An onnxruntime CPU session of the ONNX file at `path`."""
    from keras_resnet.export.verify import onnx_session

    session = onnx_session(path, threads["intra_op"])
    feed = session.get_inputs()[0].name
    return lambda images: session.run(None, {feed: images})


def litert_runner(path, threads):
    """The .tflite file at `path` in the LiteRT interpreter (XNNPACK, one thread per core;
    `threads` are TensorFlow's and onnxruntime's)."""
    from keras_resnet.export import litert

    return litert.runner(path)


def openvino_runner(path, threads, precision_hint=True):
    """The IR at `path` on OpenVINO's CPU plugin, in float32, or at its default precision
    without `precision_hint` (`threads` are TensorFlow's and onnxruntime's)."""
    from keras_resnet.export import openvino

    return openvino.runner(path, config=None if precision_hint else {})


RUNNERS = {
    "saved_model": saved_model_runner,
    "onnx": onnx_runner,
    "litert": litert_runner,
    "openvino": openvino_runner,
}


def open_runtime(opener):
    """`run(images)` of an opener (RUNNERS key, path, threads, keyword options), in this process."""
    kind, path, threads, options = opener
    return RUNNERS[kind](path, threads, **options)


def opener_of(name, path, threads):
    """How row `name` opens its file (open_runtime): Keras' export in the exporter's
    SavedModel's runner, with the same threads; each SavedModel's probabilities fetched."""
    if name == KERAS_EXPORT:
        return ("saved_model", path, threads, {})
    kind = next(kind for kind in RUNNERS if name.startswith(kind))
    options = {"saved_model": {"output": "probabilities"}, "openvino_bf16": {"precision_hint": False}}
    return (kind, path, threads, options.get(name, {}))


def directory_size(path):
    """Bytes of the files under `path` (a file's own size for a file)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def export_onnx_file(source, directory, calibration, name, reference):
    """The exporter's ONNX file for row `name`: one export_onnx call per row, so a copy this
    onnxruntime cannot build or run (fp16 lacks kernels in some builds) skips only its own row."""
    from keras_resnet.export.onnx import export_onnx

    precision = name.removeprefix("onnx_")
    result = export_onnx(
        source,
        os.path.join(directory, name, "model.onnx"),
        fp16=precision == "fp16",
        int8=precision == "int8",
        calibration_images=calibration,
        overwrite=True,
        int8_min_agreement=0.0,
        reference=reference,
    )
    return {"fp32": result.path, "fp16": result.fp16_path, "int8": result.int8_path}[precision]


def export_litert_files(source, directory, calibration, names, reference):
    """The exporter's .tflite files for the LiteRT rows in `names` (one export, int8 beside
    float32 when asked): {row: path}."""
    from keras_resnet.export import litert

    result = litert.export_litert(
        source,
        os.path.join(directory, "litert", "model.tflite"),
        int8="litert_int8" in names,
        calibration_images=calibration,
        int8_min_agreement=0.0,
        reference=reference,
    )
    return {name: result.paths[name.removeprefix("litert_")] for name in names}


def export_openvino_files(source, directory, calibration, names, reference):
    """The exporter's IR for the OpenVINO rows in `names` (one export, int8 beside float32 when
    asked; openvino_bf16 is the float32 IR): {row: path of the .xml}."""
    from keras_resnet.export import openvino

    result = openvino.export_openvino(
        source,
        os.path.join(directory, "openvino", "model.xml"),
        int8="openvino_int8" in names,
        calibration_images=calibration,
        int8_min_agreement=0.0,
        reference=reference,
    )
    return {name: result.paths["int8" if name == "openvino_int8" else "fp32"] for name in names}


def served_size(name, path):
    """Bytes of what row `name` serves: the SavedModel's whole version dir, an IR's .xml and .bin."""
    if name.startswith("openvino"):
        from keras_resnet.export import openvino

        return directory_size(path) + directory_size(openvino.weights_path(path))
    return directory_size(path)


def _reason(error, step="export"):
    return f"{step} failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"


def exported_openers(source, peer, directory, calibration, wanted, threads):
    """({row: opener}, {row: file bytes}, skipped) of the exported rows in `wanted`: each file
    written and verified by its exporter (Keras' export of `peer`: as Keras writes it), and how
    to open it (open_runtime). A row whose export fails is skipped with the reason, so one
    broken path does not hide the others. All exports share one float64 reference."""
    from keras_resnet.export.verify import Reference

    reference = Reference(source)
    paths, skipped = {}, {}
    for name in ("saved_model", KERAS_EXPORT, "onnx_fp32", "onnx_int8", "onnx_fp16"):
        if name not in wanted:
            continue
        try:
            if name == "saved_model":
                paths[name] = export_saved_model_file(source, directory, reference)
            elif name == KERAS_EXPORT:
                paths[name] = export_keras_saved_model_file(peer, directory)
            else:
                paths[name] = export_onnx_file(source, directory, calibration, name, reference)
        except Exception as error:  # noqa: BLE001  recorded and printed, never hidden
            skipped[name] = _reason(error)
    for runtime, export in (("litert", export_litert_files), ("openvino", export_openvino_files)):
        names = [name for name in EXPORTED if name.startswith(runtime) and name in wanted]
        if not names:
            continue
        try:
            paths.update(export(source, directory, calibration, names, reference))
        except Exception as error:  # noqa: BLE001  recorded and printed, never hidden
            skipped.update(dict.fromkeys(names, _reason(error)))
    openers = {name: opener_of(name, path, threads) for name, path in paths.items()}
    return openers, {name: served_size(name, path) for name, path in paths.items()}, skipped


def serve_runtime(connection, opener):
    """A child process's loop: open one exported file's runtime, then keep the images it is
    sent and run them on each request, answering when the outputs are ready (or, asked for
    outputs, running the images sent with the request and answering with its outputs)."""
    try:
        run = open_runtime(opener)
    except Exception as error:  # noqa: BLE001  sent to the parent, which skips the row
        connection.send(("error", _reason(error, step="opening")))
        return
    connection.send(("ready", None))
    call = None
    while True:
        command, payload = connection.recv()
        if command == "images":
            call = binder(run)(payload)
            connection.send(("ok", None))
        elif command == "run":
            connection.send(("done", call()))
        elif command == "outputs":
            connection.send(("outputs", run(payload)))
        else:
            return


class RuntimeProcess:
    """One exported file's runtime in a process of its own, as a server runs it: no other
    runtime's threads, allocations or caches in its process. A timed call is one request over a
    pipe (a few bytes each way); the images are sent once per batch size, untimed."""

    def __init__(self, opener):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve_runtime, args=(child, opener), daemon=True)
        self.process.start()
        child.close()
        self._expect("ready")

    def _expect(self, answer, request=None):
        """Send `request` (if any), wait for `answer` and return what came with it; a child
        that died says so."""
        try:
            if request is not None:
                self.connection.send(request)
            reply, payload = self.connection.recv()
        except (EOFError, OSError):
            self.process.join(timeout=30)
            raise RuntimeError(f"the runtime's process ended (exit code {self.process.exitcode})") from None
        if reply != answer:
            raise RuntimeError(payload)
        return payload

    def bind(self, images):
        self._expect("ok", ("images", images))
        return lambda: self._expect("done", ("run", None))

    def run(self, images):
        """The runtime's outputs on `images` (untimed)."""
        return self._expect("outputs", ("outputs", images))

    def close(self):
        if self.process.is_alive():
            self.connection.send(("stop", None))
        self.process.join(timeout=30)


def runtime_binders(openers, isolate, skipped):
    """({row: bind(images) -> call}, {row: run(images) -> outputs}, [processes to close]): each
    opener in a RuntimeProcess when `isolate`, else opened in this process. A runtime that fails
    to open skips its row."""
    binders, runs, processes = {}, {}, []
    for name, opener in openers.items():
        try:
            if isolate:
                process = RuntimeProcess(opener)
                processes.append(process)
                binders[name], runs[name] = process.bind, process.run
            else:
                runs[name] = open_runtime(opener)
                binders[name] = binder(runs[name])
        except Exception as error:  # noqa: BLE001  recorded and printed, never hidden
            skipped[name] = str(error)
    return binders, runs, processes


def fed_preprocessed(take, mode):
    """`take(images)` (a bind or a run) given the images preprocessed, outside any timed call,
    as the Keras rows are: what Keras' export of keras.applications' net takes."""
    from keras_resnet.preprocessing import preprocess_input

    return lambda images: take(np.asarray(preprocess_input(images, mode), dtype="float32"))


def logits_difference(ours, theirs):
    """(relative difference of the logits behind two softmax outputs, fraction of the classes
    compared). Softmax keeps the logits less a constant: log p less its mean over the classes
    compared, those whose probability both hold as a normal float32 (a class whose logit lies
    over 87 below the top one's is a zero or a subnormal, which keeps no logit)."""
    ours, theirs = (np.asarray(p, dtype="float64") for p in (ours, theirs))
    held = (ours >= np.finfo("float32").tiny) & (theirs >= np.finfo("float32").tiny)

    def centred(probabilities):
        log = np.log(np.where(held, probabilities, 1.0))
        return np.where(held, log - log.sum(axis=-1, keepdims=True) / held.sum(axis=-1, keepdims=True), 0.0)

    a, b = centred(ours), centred(theirs)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a)), float(held.mean())


def same_function(runs, images, mode, not_applicable):
    """Whether Keras' export computes the exporter's SavedModel's function on `images`: top-1
    agreement and the relative difference of their (centred) logits; or why it is not
    checked (`not_applicable`: the two nets cannot hold the same weights, or a row did not run)."""
    missing = [name for name in ("saved_model", KERAS_EXPORT) if name not in runs]
    if not_applicable or missing:
        return {"applicable": False, "reason": not_applicable or f"{', '.join(missing)} did not run"}
    ours = runs["saved_model"](images)
    theirs = fed_preprocessed(runs[KERAS_EXPORT], mode)(images)
    agreement = float(np.mean(ours.argmax(axis=-1) == theirs.argmax(axis=-1)))
    difference, compared = logits_difference(ours, theirs)
    return {
        "applicable": True,
        "top1_agreement": agreement,
        "logits_relative_difference": difference,
        "classes_compared": compared,
        "passed": agreement == 1.0 and difference < MAX_LOGITS_DIFFERENCE,
    }


def check_text(check):
    """`same_function`'s answer in a line."""
    if not check["applicable"]:
        return f"not checked: {check['reason']}"
    return (
        f"{'yes' if check['passed'] else 'NO'} (top-1 agreement {100 * check['top1_agreement']:.0f} %, logits "
        f"relative difference {check['logits_relative_difference']:.1e}, must be < {MAX_LOGITS_DIFFERENCE:g}, "
        f"over the {100 * check['classes_compared']:.0f} % of classes softmax keeps in float32)"
    )


def binder(run):
    """`bind(images) -> call` of a runtime's `run(images)`; a call returns its CPU seconds."""
    return lambda images: cpu_timed(lambda: run(images))


def cpu_timed(call):
    """`call` made to return the CPU seconds this process (all its threads) spent while it ran."""

    def timed():
        start = time.process_time()
        call()
        return time.process_time() - start

    return timed


def timed_rows(binders, images, run, flops, peak):
    """The rows of every binder's call on `images`, interleaved, with ratios to REFERENCE."""
    calls = {name: bind(images) for name, bind in binders.items()}
    cpu_seconds = {}
    seconds = timing.interleaved(
        calls, warmup=run["warmup"], iterations=run["iterations"], rewarm=REWARM, returned=cpu_seconds
    )
    rows = [
        timing.row(name, seconds[name], batch_size=len(images), flops_per_image=flops[name], peak_gflops=peak)
        for name in calls
    ]
    for r in rows:
        r["cpu_ms"] = 1e3 * float(np.median(cpu_seconds[r["name"]]))
    return timing.add_ratios(rows, lambda name: REFERENCE)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"--rows {unknown} unknown; choose from {', '.join(ROWS)}")
    run = timing.settings(FLAGS, QUICK)
    timing.require_positive(run, ("batch_size", "iterations", "matmul_size", "calibration_images"))
    if not 0 <= FLAGS.latency_batch_size <= run["batch_size"]:
        raise app.UsageError(f"--latency_batch_size={FLAGS.latency_batch_size} must be in 0..--batch_size")
    threads = {"inter_op": FLAGS.saved_model_inter_op_threads, "intra_op": FLAGS.intra_op_threads}
    for flag, value in (
        ("saved_model_inter_op_threads", threads["inter_op"]),
        ("intra_op_threads", threads["intra_op"]),
    ):
        if value < 0:
            raise app.UsageError(f"--{flag}={value} must be >= 0 (0: the runtime's default)")
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
    photos = preprocess_input(sample_photos(size[0], count=16), "caffe")
    with_trained_statistics(model, photos)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(run["batch_size"], *size, 3)).astype("float32")
    calibration = rng.uniform(0, 255, size=(run["calibration_images"], *size, 3)).astype("float32")
    own_flops = 2 * count_flops(model)
    flops = dict.fromkeys(ROWS, own_flops)
    binders = keras_binders("keras_resnet", model, "caffe")
    peer, not_applicable = None, None
    if wanted & {REFERENCE, "keras_applications_predict", KERAS_EXPORT}:
        peer, not_applicable = same_weights_peer(builder, model, size, run["model"], photos)
        binders.update(keras_binders("keras_applications", peer, "caffe"))
        flops.update(dict.fromkeys((REFERENCE, "keras_applications_predict", KERAS_EXPORT), 2 * count_flops(peer)))
    source = ModelSource(model=model, preprocess_mode="caffe", name=run["model"])
    with tempfile.TemporaryDirectory() as directory:
        openers, sizes, skipped = exported_openers(source, peer, directory, calibration, wanted, threads)
        exported, runs, processes = runtime_binders(openers, FLAGS.isolate_runtimes, skipped)
        try:
            check = same_function(runs, images, "caffe", not_applicable)
            if check["applicable"] and not check["passed"]:
                skipped[KERAS_EXPORT] = f"not saved_model's function: {check_text(check)}"
                exported.pop(KERAS_EXPORT)
            if KERAS_EXPORT in exported:
                exported[KERAS_EXPORT] = fed_preprocessed(exported[KERAS_EXPORT], "caffe")
            binders.update(exported)
            binders = {name: binders[name] for name in ROWS if name in binders and name in wanted}
            peak = timing.matmul_gflops(run["matmul_size"])
            rows = timed_rows(binders, images, run, flops, peak)
            latency_rows = []
            if FLAGS.latency_batch_size:
                latency_rows = timed_rows(binders, images[: FLAGS.latency_batch_size], run, flops, peak)
        finally:
            for process in processes:
                process.close()
    for row in rows + latency_rows:
        row["file_mb"] = sizes[row["name"]] / 1e6 if row["name"] in sizes else None
    report(run, rows, latency_rows, skipped, peak, own_flops, size, tf_serving_peer(rows, latency_rows, check))


def speedup_over_keras_export(rows, field, higher_is_faster):
    """How many times faster saved_model is than keras_export_saved_model by `field` of
    `rows` (images/s: ours over theirs; a latency: theirs over ours); None unless both ran."""
    values = {r["name"]: r[field] for r in rows}
    if not {"saved_model", KERAS_EXPORT} <= set(values):
        return None
    ours, theirs = values["saved_model"], values[KERAS_EXPORT]
    return ours / theirs if higher_is_faster else theirs / ours


def tf_serving_peer(rows, latency_rows, check):
    """What a TF Serving user compares: how many times faster the exporter's SavedModel serves
    than Keras' own export, in images/s at --batch_size and in p50 latency at
    --latency_batch_size (above 1: the exporter's is faster), with the check that both compute
    one function."""
    return {
        "images_per_s_speedup": speedup_over_keras_export(rows, "images_per_s", higher_is_faster=True),
        "p50_speedup": speedup_over_keras_export(latency_rows, "p50_ms", higher_is_faster=False),
        "same_function": check,
    }


def print_tf_serving_peer(peer, batch_size):
    """The TF Serving peer's ratios and its same-function check, one line each."""
    print(
        f"\nsaved_model's speed-up over {KERAS_EXPORT}: images/s @{batch_size} "
        f"{timing._text(peer['images_per_s_speedup'], '.2f', 'x')}, "
        f"p50 @{FLAGS.latency_batch_size} {timing._text(peer['p50_speedup'], '.2f', 'x')}"
    )
    print(f"same function as saved_model: {check_text(peer['same_function'])}")


def print_side_by_side(rows, latency_rows, batch_size):
    """Each row's images/s at the main batch, p50/p99 and CPU time per call at the latency
    batch, and file size."""
    latency = {r["name"]: r for r in latency_rows}
    batch = FLAGS.latency_batch_size
    print(
        f"\n{'row':{timing.NAME_WIDTH}s} {f'img/s @{batch_size}':>11s} {f'p50 @{batch} ms':>12s} "
        f"{f'p99 @{batch} ms':>12s} {f'CPU @{batch} ms':>12s} {'file MB':>8s}"
    )
    for r in rows:
        alone = latency.get(r["name"], dict.fromkeys(("p50_ms", "p99_ms", "cpu_ms"), float("nan")))
        size = "-" if r["file_mb"] is None else f"{r['file_mb']:.1f}"
        print(
            f"{r['name']:{timing.NAME_WIDTH}s} {r['images_per_s']:>11.1f} {alone['p50_ms']:>12.1f} "
            f"{alone['p99_ms']:>12.1f} {alone['cpu_ms']:>12.1f} {size:>8s}"
        )


def report(run, rows, latency_rows, skipped, peak, own_flops, size, peer):
    """Print the tables and write --json."""
    timing.print_title(
        f"{run['model']} at {size[0]}x{size[1]}, batch {run['batch_size']}, {run['iterations']} interleaved calls per row "
        f"after {run['warmup']} warm-up; {own_flops / 2e9:.3f} GMAC per image; fp32 matmul {run['matmul_size']}^2: "
        f"{peak:.1f} GFLOP/s",
        FLAGS.quick,
    )
    timing.print_table(rows, "x keras.app")
    if latency_rows:
        print(f"\nbatch {FLAGS.latency_batch_size}:")
        timing.print_table(latency_rows, "x keras.app")
    timing.print_skipped(skipped)
    if latency_rows:
        print_side_by_side(rows, latency_rows, run["batch_size"])
    if KERAS_EXPORT in FLAGS.rows:
        print_tf_serving_peer(peer, run["batch_size"])
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=(
                "tensorflow",
                "keras",
                "onnxruntime",
                "tf2onnx",
                "onnx",
                "ai-edge-litert",
                "openvino",
                "nncf",
                "numpy",
            ),
            quick=FLAGS.quick,
            rows=rows,
            model=run["model"],
            image_size=list(size),
            batch_size=run["batch_size"],
            latency_batch_size=FLAGS.latency_batch_size,
            latency_rows=latency_rows,
            iterations=run["iterations"],
            warmup=run["warmup"],
            gmac_per_image=own_flops / 2e9,
            saved_model_inter_op_threads=FLAGS.saved_model_inter_op_threads,
            intra_op_threads=FLAGS.intra_op_threads,
            isolate_runtimes=FLAGS.isolate_runtimes,
            peak_gflops=peak,
            tf_serving_peer=peer,
            skipped=skipped,
        )


if __name__ == "__main__":
    app.run(main)
