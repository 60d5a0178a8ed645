"""Every export proves itself before it reports success, at float32's own noise floor.

The written artifact is run in a fresh runtime (the SavedModel in a new Python process that
does not import keras_resnet, as TF Serving would load it; ONNX in an onnxruntime
InferenceSession) on real photos and compared with the same network evaluated in float64.
A float32 network is itself only within rounding of that float64 answer, and the deeper the
net the further (about 1e-5 relative for a trained ResNet-50): so an export passes when its
distance from float64 is within FLOAT32_FACTOR times the Keras float32 model's own distance,
plus FLOAT32_FLOOR. Both distances are reported. Probabilities pass the same way, or by being
the softmax of the export's own logits within the floor: where two classes nearly tie at
large logits (an untrained net's), the softmax magnifies rounding that the logits check has
already bounded, and which copy rounds least there is chance. Reduced-precision copies (fp16,
int8) are held to bounds measured on real images: relative logits error, top-1 agreement with
the float64 net, and accuracy on held-out labelled images where there are some.

Any runtime checks the same way (`Reference`, `check_float32`, `reduced_precision_report`,
`check_reduced_precision`): give it the runtime's logits on `verification_images`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from keras_resnet.export.graph import BYTES_SIGNATURE, FLOAT_SIGNATURE, IMAGE_BYTES, IMAGES
from keras_resnet.export.stages import mark
from keras_resnet.preprocessing import preprocess_input

FLOAT32_FACTOR = 4.0
FLOAT32_FLOOR = 1e-6
BATCH_SIZES = (1, 8)
PHOTO_SEED = 0


class VerificationError(RuntimeError):
    """The artifact does not compute the Keras model's function within the tolerance."""


def relative_difference(actual, expected):
    """||actual - expected|| / ||expected|| (Frobenius), the tolerance measure of every export check."""
    actual, expected = np.asarray(actual, dtype="float64"), np.asarray(expected, dtype="float64")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def softmax(logits):
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, dtype="float64")
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def random_images(batch_size, image_size, seed):
    """Float RGB images in 0..255 with integer values, so a PNG round trip is exact."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch_size, *image_size, 3)).astype("float32")


def verification_images(count, image_size, seed=PHOTO_SEED):
    """`count` real photo crops (scikit-learn's bundled photos) of `image_size`, rounded to
    integer RGB values so a PNG round trip is exact."""
    from keras_resnet.testing import sample_photos

    height, width = image_size
    photos = sample_photos(max(height, width), count, seed)[:, :height, :width]
    return np.round(photos).astype("float32")


def float64_twin(model):
    """The same network with float64 weights and compute: the reference a float32 export is
    measured against (keras.models.clone_model with every layer's dtype set to float64)."""
    import keras

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    inputs = keras.Input(model.input_shape[1:], dtype="float64")
    twin = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    # layer by layer: one layer's float32 and float64 copies at a time, not the whole net's
    copies = {layer.name: layer for layer in twin.layers}
    for original in model.layers:
        if original.weights:
            copies[original.name].set_weights([np.asarray(w, dtype="float64") for w in original.get_weights()])
    return twin


def _head_logits(model, x, dtype, batch_size):
    """Logits of a classifier (last layer a Dense, whatever its activation) in `dtype`.

    The features run as one traced function: TensorFlow then frees each activation once read,
    where a functional model called eagerly holds every layer's output to the end of the call
    (for ResNet-152 in float64, over 2 GB at batch 4)."""
    import keras
    import tensorflow as tf

    last = model.layers[-1]
    features_model = keras.Model(model.input, last.input)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], dtype)
    features = tf.function(lambda batch: features_model(batch, training=False), input_signature=[spec])
    kernel = np.asarray(last.kernel, dtype=dtype)
    bias = np.asarray(last.bias, dtype=dtype) if last.use_bias else np.zeros((), dtype)
    logits = []
    for start in range(0, len(x), batch_size):
        logits.append(
            np.asarray(features(tf.constant(x[start : start + batch_size], dtype)), dtype=dtype) @ kernel + bias
        )
    return np.concatenate(logits)


class Reference:
    """The exported network's logits in float64 (the truth) and in Keras float32 (its own
    distance from the truth, the floor every float32 export is measured against), cached per
    batch of images so several runtimes share one float64 pass."""

    def __init__(self, source, batch_size=8):
        self.source = source
        self.batch_size = batch_size
        self._twin = None
        self._cache = {}

    def _key(self, images):
        return hashlib.sha1(np.ascontiguousarray(images, dtype="float32").tobytes()).hexdigest(), images.shape

    def logits(self, images):
        """{"float64": logits, "float32": logits} on float RGB images in 0..255."""
        images = np.asarray(images, dtype="float32")
        key = self._key(images)
        if key not in self._cache:
            source = self.source
            if self._twin is None:
                self._twin = float64_twin(source.model)
            x64 = preprocess_input(images.astype("float64"), source.preprocess_mode, source.mean)
            x32 = preprocess_input(images, source.preprocess_mode, source.mean)
            self._cache[key] = {
                "float64": _head_logits(self._twin, np.asarray(x64, dtype="float64"), "float64", self.batch_size),
                "float32": _head_logits(source.model, np.asarray(x32, dtype="float32"), "float32", self.batch_size),
            }
            mark("reference")
        return self._cache[key]


def keras_reference(source, images, batch_size=32):
    """(logits, probabilities) of the original Keras float32 model on float RGB images in 0..255."""
    x = preprocess_input(np.asarray(images, dtype="float32"), source.preprocess_mode, source.mean)
    logits = _head_logits(source.model, np.asarray(x, dtype="float32"), "float64", batch_size)
    return logits, softmax(logits)


def check_heads(outputs, *, top_k, class_names=None, atol=1e-6):
    """The top-k outputs (and class names) agree with the artifact's own probabilities
    (`atol` looser for fp16, whose TopK may run in another precision than its output)."""
    probabilities = np.asarray(outputs["probabilities"])
    expected_scores = -np.sort(-probabilities, axis=1)[:, :top_k]
    classes = np.asarray(outputs["top_k_classes"]).astype("int64")
    if classes.shape != expected_scores.shape or not (
        np.allclose(np.take_along_axis(probabilities, classes, axis=1), expected_scores, rtol=1e-5, atol=atol)
        and np.allclose(outputs["top_k_scores"], expected_scores, rtol=1e-5, atol=atol)
    ):
        raise VerificationError("top_k_classes / top_k_scores are not the top-k of the probabilities")
    if class_names is not None:
        names = np.asarray(outputs["class_names"]).astype(str)
        if not (names == np.asarray(class_names)[classes]).all():
            raise VerificationError("class_names do not match top_k_classes")


def float32_distances(logits, probabilities, reference):
    """Distances of a runtime's outputs, and of the Keras float32 model's, from float64."""
    truth, keras32 = reference["float64"], reference["float32"]
    return {
        "logits": relative_difference(logits, truth),
        "probabilities": relative_difference(probabilities, softmax(truth)),
        "keras_float32_logits": relative_difference(keras32, truth),
        "keras_float32_probabilities": relative_difference(softmax(keras32), softmax(truth)),
        "probabilities_from_own_logits": relative_difference(probabilities, softmax(logits)),
    }


def float32_bound(keras_distance, factor=FLOAT32_FACTOR, floor=FLOAT32_FLOOR):
    """How far from float64 a float32 export may be: `factor` x the Keras float32 model's own
    distance, plus `floor` (a net so shallow that Keras rounds almost nothing)."""
    return factor * keras_distance + floor


def check_float32(label, distances, factor=FLOAT32_FACTOR, floor=FLOAT32_FLOOR):
    """Raise VerificationError when logits, or probabilities that are not the softmax of those
    logits, are further from float64 than `float32_bound` of the Keras float32 model's
    distance; else return the distances."""
    for output in ("logits", "probabilities"):
        bound = float32_bound(distances[f"keras_float32_{output}"], factor, floor)
        if distances[output] <= bound:
            continue
        if output == "probabilities" and distances["probabilities_from_own_logits"] <= floor:
            continue
        own = (
            f"; {distances['probabilities_from_own_logits']:.3g} from the softmax of its own logits, above {floor:g}"
            if output == "probabilities"
            else ""
        )
        raise VerificationError(
            f"{label}: {output} differ from the float64 network by {distances[output]:.3g} (relative), above "
            f"{bound:.3g} = {factor:g} x the Keras float32 model's {distances[f'keras_float32_{output}']:.3g} "
            f"+ {floor:g}{own}"
        )
    return distances


def verify_outputs(label, outputs, reference, *, top_k, class_names=None, factor=FLOAT32_FACTOR, floor=FLOAT32_FLOOR):
    """Check one float32 runtime's named outputs (`logits`, `probabilities`, `top_k_classes`,
    `top_k_scores`, maybe `class_names`) on images whose `Reference.logits` is `reference`."""
    check_heads(outputs, top_k=top_k, class_names=class_names)
    distances = float32_distances(outputs["logits"], outputs["probabilities"], reference)
    return check_float32(label, distances, factor, floor)


def reduced_precision_report(logits, reference, labels=None):
    """A reduced-precision copy's logits against the float64 network: relative error, top-1
    agreement, and accuracy of both where `labels` are given."""
    truth = reference["float64"]
    top1, truth_top1 = np.asarray(logits).argmax(axis=1), truth.argmax(axis=1)
    report = {
        "images": int(len(truth)),
        "logits": relative_difference(logits, truth),
        "keras_float32_logits": relative_difference(reference["float32"], truth),
        "max_abs_probability": float(np.abs(softmax(logits) - softmax(truth)).max()),
        "top1_agreement": float((top1 == truth_top1).mean()),
    }
    if labels is not None:
        labels = np.asarray(labels)
        report["accuracy"] = float((top1 == labels).mean())
        report["float64_accuracy"] = float((truth_top1 == labels).mean())
    return report


def check_reduced_precision(label, report, *, max_logits=None, min_agreement=None, max_accuracy_drop=None):
    """Raise VerificationError naming the first bound `report` misses; else return it. The
    agreement and accuracy bounds apply where the report has labelled, trained-net images."""
    misses = []
    if max_logits is not None and not report["logits"] <= max_logits:
        misses.append(f"relative logits error {report['logits']:.4g} > {max_logits:g}")
    if min_agreement is not None and not report["top1_agreement"] >= min_agreement:
        misses.append(f"top-1 agreement {report['top1_agreement']:.4g} < {min_agreement:g}")
    if max_accuracy_drop is not None and "accuracy" in report:
        drop = report["float64_accuracy"] - report["accuracy"]
        if not drop <= max_accuracy_drop:
            misses.append(f"accuracy drop {drop:.4g} > {max_accuracy_drop:g}")
    if misses:
        raise VerificationError(
            f"{label} against the float64 network on {report['images']} images: {'; '.join(misses)}"
        )
    return report


# The SavedModel loaded as TF Serving loads it: its MetaGraph into a TensorFlow 1 session,
# each signature run by feeding and fetching the tensors its signature def names. With
# `repeats`, each call then runs that many times more, timed: the median seconds of each.
_RUNNER = textwrap.dedent(
    """
    import pickle, statistics, sys, time
    import tensorflow as tf

    def main(model_path, calls_path, results_path):
        with open(calls_path, "rb") as f:
            request = pickle.load(f)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        with graph.as_default():
            signatures = tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], model_path).signature_def
        results, seconds = [], []
        for signature, inputs in request["calls"]:
            try:
                definition = signatures[signature]
                feeds = {definition.inputs[name].name: value for name, value in inputs.items()}
                fetches = {name: tensor.name for name, tensor in definition.outputs.items()}
                results.append(session.run(fetches, feeds))
            except (tf.errors.OpError, KeyError, ValueError, TypeError) as error:
                results.append(f"{type(error).__name__}: {error}")
                seconds.append(None)
                continue
            times = []
            for _ in range(request["repeats"]):
                start = time.perf_counter()
                session.run(fetches, feeds)
                times.append(time.perf_counter() - start)
            seconds.append(statistics.median(times) if times else None)
        imported = sorted(m for m in sys.modules if m.split(".")[0] == "keras_resnet")
        with open(results_path, "wb") as f:
            pickle.dump({"results": results, "seconds": seconds, "imported": imported}, f)

    main(*sys.argv[1:])
    """
)


def _run_in_new_process(model_path, calls, repeats, timeout, environment=None):
    """The runner's answer for [(signature name, {input name: array})] on the SavedModel at
    `model_path`, in a new Python process that imports TensorFlow and not keras_resnet, its
    environment this one's with `environment`'s variables set (None: removed). Raises
    VerificationError if that process dies or imported keras_resnet."""
    with tempfile.TemporaryDirectory() as scratch:
        calls_path, results_path = os.path.join(scratch, "calls.pkl"), os.path.join(scratch, "results.pkl")
        with open(calls_path, "wb") as f:
            pickle.dump({"calls": list(calls), "repeats": repeats}, f)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), **(environment or {})}
        env = {name: value for name, value in env.items() if value is not None}
        process = subprocess.run(
            [sys.executable, "-c", _RUNNER, os.path.abspath(model_path), calls_path, results_path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=scratch,
        )
        if process.returncode != 0 or not os.path.isfile(results_path):
            raise VerificationError(
                f"loading {model_path!r} in a new process failed (exit {process.returncode}):\n{process.stderr[-3000:]}"
            )
        with open(results_path, "rb") as f:
            answer = pickle.load(f)
    if answer["imported"]:
        raise VerificationError(f"loading the SavedModel imported {answer['imported'][:3]}: it must stand alone")
    return answer


def run_signatures(model_path, calls, timeout=600, environment=None):
    """Run [(signature name, {input name: array})] on a SavedModel loaded as TF Serving loads
    it, in a new process (`_run_in_new_process`, `environment` as there). Each result is a
    dict of outputs, or the error text the signature raised."""
    return _run_in_new_process(model_path, calls, 0, timeout, environment)["results"]


def signature_seconds(model_path, calls, environment, repeats=5, timeout=3600):
    """Median seconds of each of [(signature name, {input name: array})] on a SavedModel loaded
    as TF Serving loads it, in a new process with the server's `environment` (as
    _run_in_new_process), after one untimed call each: what a server of it spends per request
    on this machine. Raises VerificationError if a call fails."""
    answer = _run_in_new_process(model_path, calls, repeats, timeout, environment)
    for (signature, _), result in zip(calls, answer["results"]):
        if isinstance(result, str):
            raise VerificationError(f"{signature} failed in the loaded SavedModel: {result}")
    return answer["seconds"]


def encode_png(image):
    """PNG bytes of a float RGB image with integer values in 0..255 (lossless)."""
    import tensorflow as tf

    return tf.io.encode_png(tf.cast(tf.convert_to_tensor(image), tf.uint8)).numpy()


def centre_crop(images, image_size):
    """The centre `image_size` window of a batch of images, as the bytes signature crops."""
    top, left = ((images.shape[1] - image_size[0]) // 2, (images.shape[2] - image_size[1]) // 2)
    return images[:, top : top + image_size[0], left : left + image_size[1]]


def verification_set(graph, count):
    """(whole photos, their centre views): `count` photo crops of the size whose centre view
    needs no resizing (the shorter side at the graph's resize), so the bytes signature's
    window is exactly the net's input and the check needs no second resize implementation."""
    whole = verification_images(count, (graph.resize, graph.resize))
    return whole, centre_crop(whole, graph.image_size)


def _first(reference, count):
    return {key: logits[:count] for key, logits in reference.items()}


def _log_distances(log, label, distances):
    log(
        f"  {label}: logits {distances['logits']:.3g} from float64 "
        f"(Keras float32 {distances['keras_float32_logits']:.3g}), probabilities {distances['probabilities']:.3g} "
        f"(Keras float32 {distances['keras_float32_probabilities']:.3g})"
    )


def verify_saved_model(path, graph, reference=None, *, batch_sizes=BATCH_SIZES, log=print, **bound):
    """Both signatures of the SavedModel at `path`, loaded in a new process, on real photos at
    each batch size (PNG-encoded at the size whose centre view is the net's input for the
    bytes signature), against the float64 network. Returns {"signature@batch": distances}."""
    mark("convert")  # the SavedModel is written
    reference = reference or Reference(graph.source)
    whole, crops = verification_set(graph, max(batch_sizes))
    encoded = np.array([encode_png(image) for image in whole], dtype=object)
    cases = []
    for batch_size in batch_sizes:
        cases.append((f"{FLOAT_SIGNATURE}@{batch_size}", batch_size, (FLOAT_SIGNATURE, {IMAGES: crops[:batch_size]})))
        cases.append(
            (f"{BYTES_SIGNATURE}@{batch_size}", batch_size, (BYTES_SIGNATURE, {IMAGE_BYTES: encoded[:batch_size]}))
        )
    results = run_signatures(path, [call for _, _, call in cases])
    expected = reference.logits(crops)  # after the load: its process and the float64 twin never coexist
    report = {}
    for (label, batch_size, _), outputs in zip(cases, results):
        if isinstance(outputs, str):
            raise VerificationError(f"{label} failed in the loaded SavedModel: {outputs}")
        report[label] = verify_outputs(
            f"SavedModel {label}",
            outputs,
            _first(expected, batch_size),
            top_k=graph.top_k,
            class_names=graph.class_names,
            **bound,
        )
        _log_distances(log, f"SavedModel {label}", report[label])
    mark("verify")
    return report


def onnx_outputs(session, images):
    """Named outputs of an onnxruntime session on float RGB images in 0..255."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: np.asarray(images, dtype="float32")})))


def onnx_session(path, intra_op_threads=0):
    """An onnxruntime CPU session of the model file at `path`, its operators split over
    `intra_op_threads` threads (0: onnxruntime's default, one per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def verify_onnx(path, graph, reference=None, *, batch_sizes=BATCH_SIZES, log=print, **bound):
    """The ONNX model at `path` in onnxruntime on real photos at each batch size, against the
    float64 network. Returns {"batch<n>": distances}."""
    reference = reference or Reference(graph.source)
    session = onnx_session(path)
    _, images = verification_set(graph, max(batch_sizes))
    expected = reference.logits(images)
    report = {}
    for batch_size in batch_sizes:
        label = f"ONNX {os.path.basename(path)} batch {batch_size}"
        outputs = onnx_outputs(session, images[:batch_size])
        report[f"batch{batch_size}"] = verify_outputs(
            label, outputs, _first(expected, batch_size), top_k=graph.top_k, **bound
        )
        _log_distances(log, label, report[f"batch{batch_size}"])
    mark("verify")
    return report
