"""ONNX export: onnxruntime against the Keras model on ResNet-20 and ResNet-50 at batch 1, 3
and 8, a really dynamic batch axis, onnx.checker, fp16, and bad input."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
from model_helpers import randomize

import keras_resnet
from keras_resnet.export import onnx as onnx_export
from keras_resnet.export import sources, verify
from keras_resnet.preprocessing import preprocess_input

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ["logits", "probabilities", "top_k_classes", "top_k_scores"]


def random_bn_model(name, seed):
    return randomize(keras_resnet.get_builder(name)(), seed)


def keras_logits(model, mode, images):
    x = preprocess_input(np.asarray(images, dtype="float32"), mode)
    features = np.asarray(keras.Model(model.input, model.layers[-1].input)(x, training=False), dtype="float64")
    return features @ np.asarray(model.layers[-1].kernel, dtype="float64") + np.asarray(model.layers[-1].bias)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", params=[("resnet20", "torch"), ("resnet50", "caffe")], ids=["resnet20", "resnet50"])
def exported(request, tmp_path_factory):
    """One conversion per net for the whole module (ResNet-50's takes a while)."""
    name, mode = request.param
    model = random_bn_model(name, seed=5)
    names = tuple(f"class {i}" for i in range(model.output_shape[-1]))
    path = str(tmp_path_factory.mktemp(name) / f"{name}.onnx")
    result = onnx_export.export_onnx(
        sources.ModelSource(model, mode, class_names=names, name=name), path, log=lambda _: None
    )
    return {"model": model, "mode": mode, "path": path, "result": result, "names": names}


def test_onnxruntime_matches_keras_at_batch_1_3_8_in_one_session(exported, rel_diff):
    session = onnxruntime.InferenceSession(exported["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == OUTPUTS
    size = exported["model"].input_shape[1]
    rng = np.random.default_rng(11)
    for batch in (1, 3, 8):
        images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
        logits, probabilities, classes, scores = session.run(OUTPUTS, {"images": images})
        expected = keras_logits(exported["model"], exported["mode"], images)
        assert logits.shape == (batch, exported["model"].output_shape[-1])
        assert rel_diff(logits, expected) <= 1e-5
        assert (classes[:, 0] == expected.argmax(axis=1)).all() and scores.shape == (batch, 5)


def test_the_file_passes_the_checker_with_a_symbolic_batch_axis(exported):
    onnx.checker.check_model(exported["path"], full_check=True)
    model = onnx.load(exported["path"])
    assert model.opset_import[0].version == 17
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        assert dim.dim_param == "batch" and not dim.HasField("dim_value")
    metadata = {p.key: p.value for p in model.metadata_props}
    assert (
        json.loads(metadata["class_names"]) == list(exported["names"]) and metadata["preprocessing"] == exported["mode"]
    )


def test_the_export_verified_itself(exported):
    assert set(exported["result"].differences) == {"batch1", "batch8"}
    assert max(max(d.values()) for d in exported["result"].differences.values()) <= 1e-5


def test_fp16_runs_and_reports_its_error(tmp_path):
    model = random_bn_model("resnet20", seed=6)
    path = str(tmp_path / "r20.onnx")
    lines = []
    result = onnx_export.export_onnx(sources.ModelSource(model, "tf"), path, fp16=True, log=lines.append)
    half = onnx.load(result.fp16_path)
    assert onnx.TensorProto.FLOAT16 in {tensor.data_type for tensor in half.graph.initializer}
    session = onnxruntime.InferenceSession(result.fp16_path, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    logits = session.run(["logits"], {"images": images})[0]
    assert logits.dtype == np.float32
    error = np.linalg.norm(logits - keras_logits(model, "tf", images)) / np.linalg.norm(
        keras_logits(model, "tf", images)
    )
    assert 0 < error <= onnx_export.FP16_RTOL
    assert 0 < result.fp16_report["logits"] <= onnx_export.FP16_RTOL
    assert any("fp16 vs Keras" in line for line in lines)


@pytest.mark.parametrize("opset", [16, 99, "17", None])
def test_unknown_opset_is_a_clear_error_writing_nothing(opset, tmp_path):
    with pytest.raises(ValueError, match="opset=.* is not supported; allowed: 17"):
        onnx_export.export_onnx(
            sources.ModelSource(random_bn_model("resnet20", 0), "tf"), str(tmp_path / "m.onnx"), opset=opset
        )
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_overwrite_and_int8_needs_real_images(tmp_path):
    source = sources.ModelSource(random_bn_model("resnet20", 0), "tf")
    (tmp_path / "m.onnx").write_bytes(b"old")
    with pytest.raises(ValueError, match="overwrite"):
        onnx_export.export_onnx(source, str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="calibration_images"):
        onnx_export.export_onnx(source, str(tmp_path / "new.onnx"), int8=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"] and (tmp_path / "m.onnx").read_bytes() == b"old"


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    def fail(path, graph, **kwargs):
        assert os.path.getsize(path) > 0  # the model was written before the check
        raise verify.VerificationError("injected failure")

    monkeypatch.setattr(verify, "verify_onnx", fail)
    with pytest.raises(verify.VerificationError, match="injected"):
        onnx_export.export_onnx(sources.ModelSource(random_bn_model("resnet20", 0), "tf"), str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_command_line_exports_at_the_chosen_opset(tmp_path):
    target = str(tmp_path / "r20.onnx")
    done = run_cli(
        "export/to_onnx.py", "--model", "resnet20", "--preprocess_mode", "tf", "--output", target, "--opset", "18"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert onnx.load(target).opset_import[0].version == 18
    session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
    assert session.run(["probabilities"], {"images": np.zeros((2, 32, 32, 3), "float32")})[0].shape == (2, 10)
    helped = run_cli("export/to_onnx.py", "--help")
    for flag in (
        "--model_dir",
        "--keras_file",
        "--output",
        "--opset",
        "--fp16",
        "--int8",
        "--calibration_count",
        "--dataset",
    ):
        assert flag in helped.stdout
