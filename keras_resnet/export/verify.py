"""Every export proves itself before it reports success.

The written artifact is run in a fresh runtime (the SavedModel in a new Python process that
does not import keras_resnet, as TF Serving would load it; ONNX in an onnxruntime
InferenceSession) and compared with the original, unfolded Keras model.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from keras_resnet.export.graph import BYTES_SIGNATURE, FLOAT_SIGNATURE, IMAGE_BYTES, IMAGES
from keras_resnet.preprocessing import preprocess_input

FLOAT32_RTOL = 1e-5
BATCH_SIZES = (1, 8)


class VerificationError(RuntimeError):
    """The artifact does not compute the Keras model's function within the tolerance."""


def relative_difference(actual, expected):
    """||actual - expected|| / ||expected|| (Frobenius), the tolerance measure of every export check."""
    actual, expected = np.asarray(actual, dtype="float64"), np.asarray(expected, dtype="float64")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def random_images(batch_size, image_size, seed):
    """Float RGB images in 0..255 with integer values, so a PNG round trip is exact."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch_size, *image_size, 3)).astype("float32")


def keras_reference(source, images, batch_size=32):
    """(logits, probabilities) of the original Keras model on float RGB images in 0..255."""
    import keras

    model = source.model
    last = model.layers[-1]
    features_model = keras.Model(model.input, last.input)
    kernel = np.asarray(last.kernel, dtype="float64")
    bias = np.asarray(last.bias, dtype="float64") if last.use_bias else 0.0
    logits = []
    for start in range(0, len(images), batch_size):
        x = preprocess_input(
            np.asarray(images[start : start + batch_size], dtype="float32"), source.preprocess_mode, source.mean
        )
        features = np.asarray(features_model(x, training=False), dtype="float64")
        logits.append(features @ kernel + bias)
    logits = np.concatenate(logits)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, shifted / shifted.sum(axis=1, keepdims=True)


_RUNNER = textwrap.dedent(
    """
    import pickle, sys
    import tensorflow as tf

    def main(model_path, calls_path, results_path):
        with open(calls_path, "rb") as f:
            calls = pickle.load(f)
        loaded = tf.saved_model.load(model_path)
        results = []
        for signature, inputs in calls:
            try:
                fn = loaded.signatures[signature]
                outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
                results.append({k: v.numpy() for k, v in outputs.items()})
            except (tf.errors.OpError, KeyError, ValueError, TypeError) as error:
                results.append(f"{type(error).__name__}: {error}")
        imported = sorted(m for m in sys.modules if m.split(".")[0] == "keras_resnet")
        with open(results_path, "wb") as f:
            pickle.dump({"results": results, "imported": imported}, f)

    main(*sys.argv[1:])
    """
)


def run_signatures(model_path, calls, timeout=600):
    """Run [(signature name, {input name: array})] on a SavedModel in a new Python process that
    imports TensorFlow and not keras_resnet. Each result is a dict of outputs, or the error text the signature
    raised. Raises VerificationError if that process dies or imported keras_resnet."""
    with tempfile.TemporaryDirectory() as scratch:
        calls_path, results_path = os.path.join(scratch, "calls.pkl"), os.path.join(scratch, "results.pkl")
        with open(calls_path, "wb") as f:
            pickle.dump(list(calls), f)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
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
    return answer["results"]


def compare(outputs, reference_logits, reference_probabilities, *, top_k, class_names=None, atol=1e-7):
    """Relative differences of an artifact's logits and probabilities from the Keras model's,
    after checking that its top-k outputs (and class names) agree with its own probabilities
    within `atol` (looser for fp16, whose TopK may run in another precision than its output)."""
    probabilities = np.asarray(outputs["probabilities"])
    expected_scores = -np.sort(-probabilities, axis=1)[:, :top_k]
    classes = np.asarray(outputs["top_k_classes"]).astype("int64")
    if classes.shape != expected_scores.shape or not (
        np.allclose(np.take_along_axis(probabilities, classes, axis=1), expected_scores, rtol=1e-6, atol=atol)
        and np.allclose(outputs["top_k_scores"], expected_scores, rtol=1e-6, atol=atol)
    ):
        raise VerificationError("top_k_classes / top_k_scores are not the top-k of the probabilities")
    if class_names is not None:
        names = np.asarray(outputs["class_names"]).astype(str)
        if not (names == np.asarray(class_names)[classes]).all():
            raise VerificationError("class_names do not match top_k_classes")
    return {
        "logits": relative_difference(outputs["logits"], reference_logits),
        "probabilities": relative_difference(probabilities, reference_probabilities),
    }


def encode_png(image):
    """PNG bytes of a float RGB image with integer values in 0..255 (lossless)."""
    import tensorflow as tf

    return tf.io.encode_png(tf.cast(tf.convert_to_tensor(image), tf.uint8)).numpy()


def _check_within(label, differences, rtol):
    """Raise VerificationError naming the worst output when any difference exceeds rtol."""
    worst = max(differences, key=differences.get)
    if not differences[worst] <= rtol:
        raise VerificationError(
            f"{label}: {worst} differs from the Keras model by {differences[worst]:.3g} (relative), above {rtol:g}"
        )


def uncropped_size(image_size, crop_fraction):
    """The image size the bytes signature crops without resizing: its centre crop is the net's
    input, so the check needs no second resize implementation."""
    return tuple(int(round(size / crop_fraction)) for size in image_size)


def centre_crop(images, image_size):
    """The centre `image_size` window of a batch of images, as the bytes signature crops."""
    top, left = ((images.shape[1] - image_size[0]) // 2, (images.shape[2] - image_size[1]) // 2)
    return images[:, top : top + image_size[0], left : left + image_size[1]]


def verify_saved_model(path, graph, *, rtol=FLOAT32_RTOL, batch_sizes=BATCH_SIZES, seed=0):
    """Both signatures of the SavedModel at `path`, loaded in a new process, against the Keras
    model on random images at each batch size (PNG-encoded for the bytes signature, the Keras
    model seeing their centre crop). Returns {"signature@batch": differences}."""
    uncropped = uncropped_size(graph.image_size, graph.crop_fraction)
    cases = []
    for index, batch_size in enumerate(batch_sizes):
        images = random_images(batch_size, graph.image_size, seed + index)
        cases.append((f"{FLOAT_SIGNATURE}@{batch_size}", images, (FLOAT_SIGNATURE, {IMAGES: images})))
        whole = random_images(batch_size, uncropped, seed + 100 + index)
        encoded = np.array([encode_png(image) for image in whole], dtype=object)
        cases.append(
            (
                f"{BYTES_SIGNATURE}@{batch_size}",
                centre_crop(whole, graph.image_size),
                (BYTES_SIGNATURE, {IMAGE_BYTES: encoded}),
            )
        )
    results = run_signatures(path, [call for _, _, call in cases])
    report = {}
    for (label, images, _), outputs in zip(cases, results):
        if isinstance(outputs, str):
            raise VerificationError(f"{label} failed in the loaded SavedModel: {outputs}")
        logits, probabilities = keras_reference(graph.source, images)
        report[label] = compare(outputs, logits, probabilities, top_k=graph.top_k, class_names=graph.class_names)
        _check_within(f"SavedModel {label}", report[label], rtol)
    return report


def onnx_outputs(session, images):
    """Named outputs of an onnxruntime session on float RGB images in 0..255."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: np.asarray(images, dtype="float32")})))


def onnx_session(path):
    """An onnxruntime CPU session of the model file at `path`."""
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def verify_onnx(path, graph, *, rtol=FLOAT32_RTOL, batch_sizes=BATCH_SIZES, seed=0):
    """The ONNX model at `path` in onnxruntime against the Keras model, on random images at
    each batch size. Returns {"batch<n>": differences}."""
    session = onnx_session(path)
    report = {}
    for index, batch_size in enumerate(batch_sizes):
        batch = random_images(batch_size, graph.image_size, seed + index)
        logits, probabilities = keras_reference(graph.source, batch)
        outputs = onnx_outputs(session, batch)
        differences = compare(outputs, logits, probabilities, top_k=graph.top_k)
        report[f"batch{len(batch)}"] = differences
        _check_within(f"ONNX {os.path.basename(path)} batch {len(batch)}", differences, rtol)
    return report
