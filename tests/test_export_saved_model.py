"""The TF Serving SavedModel: its signatures as TF Serving calls them, in a process that does
not import keras_resnet, against the Keras model and the evaluation pipeline's centre view;
bad requests answered with errors; saved_model_cli; warm-up; versions; atomicity; one
exporter at a time; leftovers of killed exports; bad input."""

import dataclasses
import glob
import io
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from export_helpers import read_only_dir
from PIL import Image

import keras_resnet
from keras_resnet import run_dir
from keras_resnet.export import calibration, saved_model, sources, tf_serving, verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics
from keras_resnet.training.config import write_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = [f"digit {i}" for i in range(10)]
TOP_K = 5


def make_run_dir(path, with_checkpoint=True):
    """A model dir exactly as the trainer lays it out (keras_resnet.run_dir)."""
    model = keras_resnet.get_builder("resnet20")()
    mean = np.random.default_rng(0).uniform(60, 140, (32, 32, 3)).astype("float32")
    with_trained_statistics(model, preprocess_input(sample_photos(32, 16, seed=3), "pixel_mean", mean), seed=0)
    config = {
        "model": "resnet20",
        "model_kwargs": {},
        "preprocessing": {"mode": "pixel_mean"},
        "class_names": CLASS_NAMES,
    }
    write_run(str(path), config, pixel_mean=mean)
    if with_checkpoint:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=keras.optimizers.SGD(), step=tf.Variable(0))
        tf.train.CheckpointManager(checkpoint, os.path.join(str(path), run_dir.CHECKPOINT_SUBDIR), max_to_keep=1).save()
    return model, mean


def keras_outputs(model, mean, images):
    """(logits, probabilities) of the Keras model on RGB 0..255 images, computed here."""
    x = preprocess_input(np.asarray(images, dtype="float32"), "pixel_mean", mean)
    features = np.asarray(keras.Model(model.input, model.layers[-1].input)(x, training=False), dtype="float64")
    logits = features @ np.asarray(model.layers[-1].kernel, dtype="float64") + np.asarray(model.layers[-1].bias)
    return logits, np.asarray(model(x, training=False))


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype="uint8")).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype="float32")


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run dir, its Keras model and pixel mean, and its SavedModel export (version 1)."""
    root = tmp_path_factory.mktemp("saved_model")
    model, mean = make_run_dir(root / "resnet20")
    # crop_fraction 0.875 (ImageNet's 224 of 256) so the bytes path's centre crop is exercised:
    # a 37x37 image keeps its size (round(32 / 0.875) = 37) and loses 2 pixels each side.
    source = sources.from_run_dir(str(root / "resnet20"))
    lines = []
    result = saved_model.export_saved_model(source, str(root / "models"), crop_fraction=0.875, log=lines.append)
    return {
        "root": root,
        "run": str(root / "resnet20"),
        "model": model,
        "mean": mean,
        "result": result,
        "base": str(root / "models"),
        "printed": "\n".join(lines),
    }


def centre_32(images):
    return np.asarray(images)[:, 2:34, 2:34]


# The calls TF Serving would make, run where keras_resnet is not importable-by-accident:
# the script imports TensorFlow only and reports what it imported, and the peak memory
# (maxrss) after each call.
SERVING_SCRIPT = textwrap.dedent(
    """
    import pickle, resource, sys
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    calls = pickle.load(open(sys.argv[2], "rb"))
    results, peak_mb = {}, {}
    for key, signature, name, value in calls:
        try:
            out = loaded.signatures[signature](**{name: tf.constant(value)})
            results[key] = {k: v.numpy() for k, v in out.items()}
        except tf.errors.InvalidArgumentError as error:
            results[key] = "InvalidArgumentError: " + error.message
        peak_mb[key] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["imported"] = sorted(m for m in sys.modules if m.startswith("keras_resnet"))
    results["peak_mb"] = peak_mb
    pickle.dump(results, open(sys.argv[3], "wb"))
    """
)


def one_nan_pixel():
    """A batch of two black images, the second with one NaN channel value."""
    images = np.zeros((2, 32, 32, 3), "float32")
    images[1, 20, 7, 2] = np.nan
    return images


# Requests TF Serving could receive that the signatures must refuse, each with the words
# its error must carry; after each one the same process serves a good request.
BAD_REQUESTS = {
    "rank3": ("serving_default", "images", np.zeros((32, 32, 3), "float32"), "got shape] [32 32 3]"),
    "rank5": ("serving_default", "images", np.zeros((1, 1, 32, 32, 3), "float32"), "got shape] [1 1 32 32 3]"),
    "empty": ("serving_default", "images", np.zeros((0, 32, 32, 3), "float32"), "got shape] [0 32 32 3]"),
    "one_channel": ("serving_default", "images", np.zeros((2, 32, 32, 1), "float32"), "got shape] [2 32 32 1]"),
    "nan": ("serving_default", "images", np.full((1, 32, 32, 3), np.nan, "float32"), "NaN or Inf"),
    "inf": ("serving_default", "images", np.full((1, 32, 32, 3), np.inf, "float32"), "NaN or Inf"),
    "one_nan_pixel": ("serving_default", "images", one_nan_pixel(), "NaN or Inf"),
    "scalar_bytes": ("serve_image_bytes", "image_bytes", np.array(b"abc", dtype=object), "got shape] []"),
    "empty_bytes": ("serve_image_bytes", "image_bytes", np.zeros((0,), dtype=object), "got shape] [0]"),
    "not_an_image": ("serve_image_bytes", "image_bytes", np.array([b"not an image"], dtype=object), "not a JPEG"),
}


def huge_png():
    """A 10000 x 10000 PNG of a few hundred KB: 300 MB of RGB if decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (10000, 10000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Outputs of the SavedModel's signatures in a fresh Python process, with their inputs."""
    rng = np.random.default_rng(7)
    floats = {b: rng.uniform(0, 255, (b, 32, 32, 3)).astype("float32") for b in (1, 8)}
    pixels = rng.integers(0, 256, (2, 37, 37, 3))
    png = [encoded(p, "PNG") for p in pixels]
    jpeg = [encoded(p, "JPEG", quality=90) for p in pixels]
    # PNG and JPEG pixels come from PIL, a second decoder (the served graph decodes a JPEG
    # whole with libjpeg's accurate DCT, as PIL does).
    big = encoded(rng.integers(0, 256, (40, 50, 3)), "PNG")
    good = ("serving_default", "images", floats[1])
    calls = [
        *[(f"float{b}", "serving_default", "images", x) for b, x in floats.items()],
        ("png", "serve_image_bytes", "image_bytes", np.array(png, dtype=object)),
        ("png_pixels", "serving_default", "images", centre_32([decoded(d) for d in png])),
        ("jpeg", "serve_image_bytes", "image_bytes", np.array(jpeg, dtype=object)),
        ("jpeg_pixels", "serving_default", "images", centre_32([decoded(d) for d in jpeg])),
        ("after_error", "serve_image_bytes", "image_bytes", np.array([big], dtype=object)),
        ("photos", "serve_image_bytes", "image_bytes", np.array(photo_files(), dtype=object)),
        ("before_huge", *good),
        ("huge", "serve_image_bytes", "image_bytes", np.array([huge_png()], dtype=object)),
    ]
    for key, (signature, name, value, _) in BAD_REQUESTS.items():
        calls += [(key, signature, name, value), (f"after_{key}", *good)]
    scratch = tmp_path_factory.mktemp("served")
    with open(scratch / "calls.pkl", "wb") as f:
        pickle.dump(calls, f)
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVING_SCRIPT,
            exported["result"].path,
            str(scratch / "calls.pkl"),
            str(scratch / "out.pkl"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(scratch),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(scratch / "out.pkl", "rb") as f:
        return {"inputs": floats, "outputs": pickle.load(f)}


def photo_files():
    """A JPEG of 375x500 and a PNG of 500x333 made from scikit-learn's photos."""
    from sklearn.datasets import load_sample_images

    temple, flower = load_sample_images().images
    portrait = np.asarray(Image.fromarray(flower).resize((333, 500), Image.BILINEAR))
    return [encoded(temple[:375, :500], "JPEG", quality=90), encoded(portrait, "PNG")]


def test_signatures_in_a_fresh_process_give_the_keras_outputs(exported, served, rel_diff):
    assert served["outputs"]["imported"] == []
    for batch, images in served["inputs"].items():
        out = served["outputs"][f"float{batch}"]
        logits, probabilities = keras_outputs(exported["model"], exported["mean"], images)
        assert out["probabilities"].shape == (batch, 10)
        assert rel_diff(out["probabilities"], probabilities) <= 1e-5
        assert rel_diff(out["logits"], logits) <= 1e-5
        best = np.argsort(-probabilities, axis=1)[:, :TOP_K]
        np.testing.assert_allclose(
            out["top_k_scores"], np.take_along_axis(probabilities, best, axis=1), rtol=1e-5, atol=1e-7
        )
        assert (out["class_names"].astype(str) == np.asarray(CLASS_NAMES)[out["top_k_classes"]]).all()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bytes_signature_agrees_with_float_signature_on_decoded_cropped_pixels(served, fmt, rel_diff):
    from_bytes, from_pixels = served["outputs"][fmt], served["outputs"][f"{fmt}_pixels"]
    assert rel_diff(from_bytes["logits"], from_pixels["logits"]) <= 1e-5
    assert (from_bytes["top_k_classes"] == from_pixels["top_k_classes"]).all()


@pytest.mark.parametrize("request_name", sorted(BAD_REQUESTS))
def test_a_bad_request_is_an_error_naming_it_and_the_server_lives_on(served, request_name):
    answer = served["outputs"][request_name]
    assert isinstance(answer, str) and answer.startswith("InvalidArgumentError"), answer
    assert BAD_REQUESTS[request_name][3] in answer, answer
    assert served["outputs"][f"after_{request_name}"]["probabilities"].shape == (1, 10)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(served):
    answer, peak = served["outputs"]["huge"], served["outputs"]["peak_mb"]
    assert isinstance(answer, str) and "[10000] [x] [10000]" in answer and "50000000 pixels" in answer, answer
    assert peak["huge"] - peak["before_huge"] < 200  # decoded, the image alone would take 300 MB
    after = served["outputs"]["after_error"]
    assert after["probabilities"].shape == (1, 10) and after["top_k_classes"].shape == (1, TOP_K)


def test_bytes_signature_serves_the_evaluation_pipelines_centre_view(exported, served, tmp_path, rel_diff):
    """The same JPEG (375x500) and PNG (500x333) through the data pipeline's evaluation
    (class folders, centre view) and through serve_image_bytes give the same logits."""
    jpeg, png = photo_files()
    for label, (name, data) in enumerate([("temple.jpg", jpeg), ("flower.png", png)]):
        (tmp_path / "validation" / f"class{label}").mkdir(parents=True)
        (tmp_path / "validation" / f"class{label}" / name).write_bytes(data)
    pixels, labels = calibration.dataset_images("imagenet", "validation", 2, data_dir=str(tmp_path), image_size=32)
    expected, _ = keras_outputs(exported["model"], exported["mean"], pixels[np.argsort(labels)])
    assert rel_diff(served["outputs"]["photos"]["logits"], expected) <= 1e-4


def test_saved_model_cli_lists_both_signatures(exported):
    process = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
            "show",
            "--all",
            "--dir",
            exported["result"].path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.returncode == 0, process.stderr[-2000:]
    text = process.stdout
    signatures = {name: block for name, block in (part.split("']", 1) for part in text.split("signature_def['")[1:])}
    expected_inputs = {
        "serving_default": ("images", "DT_FLOAT", "(-1, 32, 32, 3)"),
        "serve_image_bytes": ("image_bytes", "DT_STRING", "(-1)"),
    }
    for name, (input_name, dtype, shape) in expected_inputs.items():
        block = signatures[name]
        assert f"inputs['{input_name}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}" in block
        for output, out_dtype, out_shape in [
            ("probabilities", "DT_FLOAT", "(-1, 10)"),
            ("logits", "DT_FLOAT", "(-1, 10)"),
            ("top_k_classes", "DT_INT32", "(-1, 5)"),
            ("top_k_scores", "DT_FLOAT", "(-1, 5)"),
            ("class_names", "DT_STRING", "(-1, 5)"),
        ]:
            assert f"outputs['{output}'] tensor_info:\n        dtype: {out_dtype}\n        shape: {out_shape}" in block
        assert "Method name is: tensorflow/serving/predict" in block
    ops = text.split("contains the following ops:")[1].split("\n")[0]
    assert "Conv2D" in ops and "FusedBatchNorm" not in ops  # BN folded into the convs
    # The weights live once, in the checkpoint TF Serving restores: a session copies a graph's
    # constants into each signature's executor.
    assert "VarHandleOp" in ops
    version = exported["result"].path
    weights = sum(os.path.getsize(path) for path in glob.glob(os.path.join(version, "variables", "variables.data-*")))
    assert os.path.getsize(os.path.join(version, "saved_model.pb")) < weights / 4


def test_warmup_records_parse_as_prediction_logs_naming_existing_signatures(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported["result"].path, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    signatures = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert signatures == {"serving_default", "serve_image_bytes"}
    loaded = tf.saved_model.load(exported["result"].path)
    for log in logs:
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert loaded.signatures[request.model_spec.signature_name](**inputs)["probabilities"].shape == (1, 10)


def test_models_config_lists_the_model_for_the_container_path(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(exported["base"], "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("resnet20", "/models/resnet20", "tensorflow")


def test_second_export_is_version_2_and_existing_version_needs_overwrite(exported):
    source = sources.from_run_dir(str(exported["run"]))
    second = saved_model.export_saved_model(source, exported["base"], crop_fraction=0.875, log=lambda _: None)
    assert second.version == 2 and os.path.isfile(os.path.join(second.path, "saved_model.pb"))
    before = sorted(os.listdir(os.path.join(exported["base"], "resnet20")))
    with pytest.raises(ValueError, match="overwrite"):
        saved_model.export_saved_model(source, exported["base"], version=1, log=lambda _: None)
    assert sorted(os.listdir(os.path.join(exported["base"], "resnet20"))) == before == ["1", "2"]


def test_a_new_version_serving_another_task_is_refused_naming_the_difference(exported):
    model_base = os.path.join(exported["base"], "resnet20")
    before = sorted(os.listdir(model_base))
    other = sources.ModelSource(exported["model"], "tf", class_names=tuple(CLASS_NAMES), name="resnet20")
    with pytest.raises(
        ValueError, match=r"serves a different model \(preprocessing.mode: \"pixel_mean\" there, \"tf\""
    ):
        saved_model.export_saved_model(other, exported["base"], crop_fraction=0.875, log=lambda _: None)
    fewer = sources.ModelSource(exported["model"], "pixel_mean", exported["mean"], name="resnet20")
    with pytest.raises(ValueError, match=r"class_names: .*digit 0.* there, null here.*--model_name"):
        saved_model.export_saved_model(fewer, exported["base"], top_k=3, crop_fraction=0.875, log=lambda _: None)
    assert sorted(os.listdir(model_base)) == before


def test_an_export_that_differs_from_the_network_fails(exported):
    """The exported version's outputs against the network with one weight changed, and with
    another preprocessing: the float64 comparison tells both apart from rounding."""
    from keras_resnet.export.graph import ServingGraph

    weights = exported["model"].get_weights()
    kernel = next(i for i, w in enumerate(weights) if w.ndim == 4)
    weights[kernel][0, 0, 0, 0] += 0.05
    changed = keras.models.clone_model(exported["model"])
    changed.set_weights(weights)
    graph = ServingGraph(sources.from_run_dir(exported["run"]), crop_fraction=0.875)
    _, crops = verify.verification_set(graph, 4)
    (outputs,) = verify.run_signatures(exported["result"].path, [("serving_default", {"images": crops})])
    same = verify.Reference(graph.source).logits(crops)
    assert verify.verify_outputs("same", outputs, same, top_k=TOP_K, class_names=CLASS_NAMES)["logits"] < 1e-5
    for source in (
        sources.ModelSource(changed, "pixel_mean", exported["mean"]),
        sources.ModelSource(exported["model"], "pixel_mean", exported["mean"] + 2.0),
    ):
        with pytest.raises(verify.VerificationError, match="differ from the float64 network by .* Keras float32"):
            verify.verify_outputs("changed", outputs, verify.Reference(source).logits(crops), top_k=TOP_K)


def test_near_tied_classes_of_an_untrained_net_do_not_fail_a_faithful_export():
    """Logits of an untrained net's scale (std 1e5) with two classes 0.5 apart: an export
    within float32 rounding of the float64 logits, whose probabilities are numpy's float32
    softmax of them, passes although the tie magnifies its probability error far past the
    Keras copy's; a head that is not the softmax of those logits still fails."""
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1e5, (8, 10))
    truth[0, 1] = truth[0].max() + 0.5
    truth[0, 2] = truth[0, 1] - 0.5
    exported_logits = (truth * (1 + rng.normal(0, 3e-7, truth.shape))).astype("float32")
    shifted = np.exp(exported_logits - exported_logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    reference = {"float64": truth, "float32": truth.astype("float32")}
    distances = verify.float32_distances(exported_logits, probabilities, reference)
    assert distances["probabilities"] > 100 * verify.float32_bound(distances["keras_float32_probabilities"])
    assert verify.check_float32("faithful", distances) is distances
    tempered = np.exp((exported_logits - exported_logits.max(axis=1, keepdims=True)) / 1.5)
    tempered /= tempered.sum(axis=1, keepdims=True)
    with pytest.raises(verify.VerificationError, match="probabilities differ .* from the softmax of its own logits"):
        verify.check_float32("tempered", verify.float32_distances(exported_logits, tempered, reference))


def test_latencies_are_timed_in_the_loaded_saved_model_and_a_failing_call_is_named(exported):
    """What --batching measures: each call's median over its timed repeats, in a new process
    that loads the version as TF Serving does in the printed environment; a call the signature
    refuses is an error."""
    server = tf_serving.SERVER_ENVIRONMENT
    gray = lambda size: {"images": np.full((size, 32, 32, 3), 128.0, dtype="float32")}  # noqa: E731
    seconds = verify.signature_seconds(
        exported["result"].path, [("serving_default", gray(1)), ("serving_default", gray(4))], server
    )
    assert len(seconds) == 2 and all(value > 0 for value in seconds)
    too_large = {"images": np.full((1, 40, 40, 3), 128.0, dtype="float32")}
    with pytest.raises(verify.VerificationError, match="serving_default failed in the loaded SavedModel"):
        verify.signature_seconds(exported["result"].path, [("serving_default", too_large)], server, repeats=1)


def test_the_served_environment_answers_as_the_exports_check_does(exported):
    """The server runs with oneDNN's kernel cache on (SERVER_ENVIRONMENT), the export's check
    with it off: on real photos both processes give the same logits, so the check vouches for
    what is served."""
    photos = verify.verification_images(8, (32, 32))
    calls = [("serving_default", {"images": photos[:size]}) for size in (1, 8)]
    checked = verify.run_signatures(exported["result"].path, calls)
    served = verify.run_signatures(exported["result"].path, calls, environment=tf_serving.SERVER_ENVIRONMENT)
    for ours, theirs in zip(checked, served):
        assert not isinstance(theirs, str), theirs
        np.testing.assert_allclose(theirs["logits"], ours["logits"], rtol=1e-5, atol=1e-5)
        assert (theirs["top_k_classes"] == ours["top_k_classes"]).all()


def test_failed_verification_leaves_no_version_dir(exported, tmp_path, monkeypatch):
    def fail_after_writing(path, graph, *args, **kwargs):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))  # the files were written
        raise verify.VerificationError("injected failure")

    monkeypatch.setattr(saved_model, "FORMAT", dataclasses.replace(saved_model.FORMAT, verify=fail_after_writing))
    base = tmp_path / "models"
    with pytest.raises(verify.VerificationError, match="injected"):
        saved_model.export_saved_model(sources.from_run_dir(exported["run"]), str(base), log=lambda _: None)
    assert not base.exists()


def test_run_dir_without_checkpoint_is_a_clear_error(tmp_path):
    make_run_dir(tmp_path / "run", with_checkpoint=False)
    with pytest.raises(ValueError, match="no checkpoint"):
        sources.from_run_dir(str(tmp_path / "run"))


@pytest.mark.parametrize("version", ["abc", "1.5", "-2", 0, True])
def test_version_must_be_a_positive_integer(version, exported, tmp_path):
    with pytest.raises(ValueError, match="version"):
        saved_model.export_saved_model(
            sources.ModelSource(exported["model"], "tf"), str(tmp_path / "models"), version=version
        )
    assert not (tmp_path / "models").exists()


def test_base_path_that_is_a_file_is_refused(exported, tmp_path):
    target = tmp_path / "models"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match="is a file"):
        saved_model.export_saved_model(sources.ModelSource(exported["model"], "tf"), str(target))
    assert target.read_text() == "not a directory"


def test_command_line_rejects_a_non_integer_version_writing_nothing(tmp_path):
    process = run_cli(
        "export/to_saved_model.py", "--model", "resnet20", "--base_path", str(tmp_path / "m"), "--version", "v2"
    )
    assert process.returncode != 0 and "version='v2' is not an integer" in process.stderr
    assert not (tmp_path / "m").exists()


def test_command_line_replaces_a_version_only_with_overwrite(exported, tmp_path):
    """Runs after the tests reading version 1: it replaces it from a .keras file of the model."""
    keras_file = str(tmp_path / "net.keras")
    exported["model"].save(keras_file)
    version_dir = exported["result"].path
    versions = sorted(os.listdir(os.path.join(exported["base"], "resnet20")))
    served_graph = open(os.path.join(version_dir, "saved_model.pb"), "rb").read()
    replaced = run_cli(
        "export/to_saved_model.py",
        "--keras_file",
        keras_file,
        "--model_name",
        "resnet20",
        "--preprocess_mode",
        "tf",
        "--base_path",
        exported["base"],
        "--version",
        "1",
        "--overwrite",
        "--top_k",
        "3",
    )
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert open(os.path.join(version_dir, "saved_model.pb"), "rb").read() != served_graph
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    assert signature(images=tf.zeros([2, 32, 32, 3]))["top_k_classes"].shape == (2, 3)
    assert (
        "docker run" in replaced.stdout and sorted(os.listdir(os.path.join(exported["base"], "resnet20"))) == versions
    )


def test_help_explains_every_flag():
    process = run_cli("export/to_saved_model.py", "--help")
    for flag in (
        "--model_dir",
        "--keras_file",
        "--model",
        "--weights",
        "--base_path",
        "--version",
        "--overwrite",
        "--labels",
        "--crop_fraction",
    ):
        assert flag in process.stdout


@pytest.mark.parametrize(
    "fmt, height, width",
    [(fmt, 375, 500) for fmt in ("JPEG", "PNG", "GIF", "BMP")]
    + [("PNG", 1, 70000), ("BMP", 70000, 1), ("GIF", 500, 333)],
)
def test_the_pixel_limit_reads_each_formats_header(fmt, height, width):
    """encoded_shape on files PIL wrote, without decoding them."""
    from keras_resnet.export.graph import encoded_shape

    data = encoded(np.zeros((height, width, 3), "uint8"), fmt)
    assert [int(v) for v in encoded_shape(tf.constant(data))] == [height, width]
    assert [int(v) for v in encoded_shape(tf.constant(b"RIFF....WEBPVP8 "))] == [-1, -1]


# A process that takes an export's lock as an exporter does, makes its staging dir, says so
# and waits: killed with SIGKILL, it leaves what a killed export leaves.
HOLDER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from keras_resnet.export import staging
    with staging.lock(sys.argv[1]):
        os.makedirs(sys.argv[1], exist_ok=True)
        print(staging.staging_dir(sys.argv[2]), flush=True)
        time.sleep(600)
    """
)


def start_holder(target, version_dir):
    env = {**os.environ, "PYTHONPATH": REPO}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, target, version_dir], stdout=subprocess.PIPE, text=True, env=env
    )
    return holder, holder.stdout.readline().strip()


@pytest.mark.slow
def test_a_second_export_of_the_same_model_is_refused_and_a_killed_ones_leftovers_go(exported, tmp_path):
    source = sources.from_run_dir(exported["run"])
    base = tmp_path / "models"
    base.mkdir()
    holder, leftover = start_holder(str(base / "resnet20"), str(base / "resnet20" / "1"))
    try:
        assert os.path.isdir(leftover)
        with pytest.raises(ValueError, match=rf"another export to .* is running \(process {holder.pid}\)"):
            saved_model.export_saved_model(source, str(base), log=lambda _: None)
        assert os.listdir(base / "resnet20") == [os.path.basename(leftover)]  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lines = []
    result = saved_model.export_saved_model(source, str(base), log=lines.append)
    assert sorted(os.listdir(base / "resnet20")) == ["1"] and result.version == 1
    assert any("leftover" in line and leftover in line for line in lines)


def test_the_float64_comparison_is_printed(exported):
    printed = exported["printed"]
    for signature in ("serving_default@1", "serving_default@8", "serve_image_bytes@1", "serve_image_bytes@8"):
        assert f"SavedModel {signature}: logits" in printed
    assert "from float64 (Keras float32" in printed


def test_a_read_only_base_path_fails_before_the_model_is_loaded(tmp_path):
    """A base path under a read-only directory (a read-only mount where the test runs as root,
    whom permissions do not stop)."""
    with read_only_dir(str(tmp_path / "readonly")) as base:
        process = run_cli(
            "export/to_saved_model.py",
            "--model_dir",
            str(tmp_path / "absent"),
            "--base_path",
            os.path.join(base, "models"),
        )
        assert process.returncode == 1, process.stderr[-2000:]
        assert re.search(rf"cannot write under '{base}' \(.+\): choose a writable --base_path", process.stderr)
        assert "absent" not in process.stderr  # refused before the model dir was even looked at
        assert os.listdir(base) == []


def test_a_released_graph_refuses_to_write_again_and_keeps_the_source_network(exported, tmp_path):
    """Once an export's files are written its folded net is dropped (the checks read the files
    and the source), so a second write through it is an error that says why."""
    from keras_resnet.export.graph import ServingGraph

    graph = ServingGraph(sources.ModelSource(exported["model"], "tf"))
    graph.release()
    with pytest.raises(RuntimeError, match="released once the export's files were written"):
        graph.save_float_signature(str(tmp_path / "again"))
    assert not (tmp_path / "again").exists()
    assert graph.source.model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 10)
