"""The TF Serving SavedModel: its signatures as TF Serving calls them, in a process that does
not import keras_resnet, against the Keras model; saved_model_cli; warm-up; versions;
atomicity; bad input."""

import io
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_resnet
from keras_resnet.export import saved_model, sources, verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.training import saved_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = [f"digit {i}" for i in range(10)]
TOP_K = 5


def make_run_dir(path, with_checkpoint=True):
    """A model dir exactly as the saved_run contract (and the trainer) lays it out."""
    model = keras_resnet.get_builder("resnet20")()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)]
            )
    mean = rng.uniform(60, 140, (32, 32, 3)).astype("float32")
    config = {
        "model": "resnet20",
        "model_kwargs": {},
        "preprocessing": {"mode": "pixel_mean", "mean_file": saved_run.MEAN_FILE},
        "class_names": CLASS_NAMES,
    }
    saved_run.write_config(str(path), config, pixel_mean=mean)
    if with_checkpoint:
        checkpoint = tf.train.Checkpoint(model=model, optimizer=keras.optimizers.SGD(), step=tf.Variable(0))
        tf.train.CheckpointManager(
            checkpoint, os.path.join(str(path), saved_run.CHECKPOINT_SUBDIR), max_to_keep=1
        ).save()
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
    model, mean = make_run_dir(root / "run")
    # crop_fraction 0.875 (ImageNet's 224 of 256) so the bytes path's centre crop is exercised:
    # a 37x37 image keeps its size (round(32 / 0.875) = 37) and loses 2 pixels each side.
    source = sources.from_run_dir(str(root / "run"))
    result = saved_model.export_saved_model(source, str(root / "models"), crop_fraction=0.875, log=lambda _: None)
    return {"root": root, "model": model, "mean": mean, "result": result, "base": str(root / "models")}


def centre_32(images):
    return np.asarray(images)[:, 2:34, 2:34]


# The calls TF Serving would make, run where keras_resnet is not importable-by-accident:
# the script imports TensorFlow only and reports what it imported.
SERVING_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    calls = pickle.load(open(sys.argv[2], "rb"))
    results = {}
    for key, signature, name, value in calls:
        try:
            out = loaded.signatures[signature](**{name: tf.constant(value)})
            results[key] = {k: v.numpy() for k, v in out.items()}
        except tf.errors.InvalidArgumentError as error:
            results[key] = "InvalidArgumentError: " + error.message
    results["imported"] = sorted(m for m in sys.modules if m.startswith("keras_resnet"))
    pickle.dump(results, open(sys.argv[3], "wb"))
    """
)


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Outputs of the SavedModel's signatures in a fresh Python process, with their inputs."""
    rng = np.random.default_rng(7)
    floats = {b: rng.uniform(0, 255, (b, 32, 32, 3)).astype("float32") for b in (1, 8)}
    pixels = rng.integers(0, 256, (2, 37, 37, 3))
    png = [encoded(p, "PNG") for p in pixels]
    jpeg = [encoded(p, "JPEG", quality=90) for p in pixels]
    # PNG pixels come from PIL, a second decoder; JPEG decoders differ by design (TF's default
    # integer-fast DCT, as the data pipeline decodes), so the JPEG pixels are TF's decode.
    jpeg_pixels = np.stack([tf.io.decode_jpeg(d, channels=3).numpy().astype("float32") for d in jpeg])
    big = encoded(rng.integers(0, 256, (40, 50, 3)), "PNG")
    calls = [
        *[(f"float{b}", "serving_default", "images", x) for b, x in floats.items()],
        ("png", "serve_image_bytes", "image_bytes", np.array(png, dtype=object)),
        ("png_pixels", "serving_default", "images", centre_32([decoded(d) for d in png])),
        ("jpeg", "serve_image_bytes", "image_bytes", np.array(jpeg, dtype=object)),
        ("jpeg_pixels", "serving_default", "images", centre_32(jpeg_pixels)),
        ("not_an_image", "serve_image_bytes", "image_bytes", np.array([b"this is not an image"], dtype=object)),
        ("after_error", "serve_image_bytes", "image_bytes", np.array([big], dtype=object)),
    ]
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


def test_a_string_that_is_not_an_image_is_an_error_not_a_crash(served):
    assert served["outputs"]["not_an_image"].startswith("InvalidArgumentError")
    after = served["outputs"]["after_error"]
    assert after["probabilities"].shape == (1, 10) and after["top_k_classes"].shape == (1, TOP_K)


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
    assert "ReadVariableOp" not in ops and "VarHandleOp" not in ops  # weights frozen: oneDNN caches them


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
    source = sources.from_run_dir(str(exported["root"] / "run"))
    second = saved_model.export_saved_model(source, exported["base"], log=lambda _: None)
    assert second.version == 2 and os.path.isfile(os.path.join(second.path, "saved_model.pb"))
    before = sorted(os.listdir(os.path.join(exported["base"], "resnet20")))
    with pytest.raises(ValueError, match="overwrite"):
        saved_model.export_saved_model(source, exported["base"], version=1, log=lambda _: None)
    assert sorted(os.listdir(os.path.join(exported["base"], "resnet20"))) == before == ["1", "2"]


def test_failed_verification_leaves_no_version_dir(exported, tmp_path, monkeypatch):
    def fail_after_writing(path, graph, **kwargs):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))  # the files were written
        raise verify.VerificationError("injected failure")

    monkeypatch.setattr(verify, "verify_saved_model", fail_after_writing)
    base = tmp_path / "models"
    with pytest.raises(verify.VerificationError, match="injected"):
        saved_model.export_saved_model(
            sources.from_run_dir(str(exported["root"] / "run")), str(base), log=lambda _: None
        )
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
    fingerprint = open(os.path.join(version_dir, "fingerprint.pb"), "rb").read()
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
    assert open(os.path.join(version_dir, "fingerprint.pb"), "rb").read() != fingerprint
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
    "height, width, size, fraction, expected",
    [
        (480, 640, 224, 0.875, (256, 341)),
        (640, 480, 224, 0.875, (341, 256)),
        (32, 32, 32, 1.0, (32, 32)),
        (40, 50, 32, 1.0, (32, 40)),
    ],
)
def test_bytes_path_resizes_the_shorter_side_for_its_centre_crop(height, width, size, fraction, expected):
    from keras_resnet.export.graph import resized_shape

    assert tuple(int(v) for v in resized_shape(height, width, (size, size), fraction)) == expected
