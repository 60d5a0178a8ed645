"""ONNX export of nets with a trained net's statistics: onnxruntime against the Keras model on
ResNet-20 (and ResNet-50, slow) at batch 1, 3 and 8, a really dynamic batch axis,
onnx.checker, the metadata, fp16, an export that differs failing, all-or-nothing files, one
exporter at a time, and bad input."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

import keras_resnet
from keras_resnet.export import onnx as onnx_export
from keras_resnet.export import sources, staging, variants, verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ["logits", "probabilities", "top_k_classes", "top_k_scores"]


def trained_model(name, mode, seed):
    """A registered net with a trained net's BN statistics on photos preprocessed by `mode`."""
    model = keras_resnet.get_builder(name)()
    photos = sample_photos(model.input_shape[1], 16, seed=seed)
    return with_trained_statistics(model, preprocess_input(photos, mode), seed=seed)


def keras_logits(model, mode, images):
    x = preprocess_input(np.asarray(images, dtype="float32"), mode)
    features = np.asarray(keras.Model(model.input, model.layers[-1].input)(x, training=False), dtype="float64")
    return features @ np.asarray(model.layers[-1].kernel, dtype="float64") + np.asarray(model.layers[-1].bias)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(
    scope="module",
    params=[("resnet20", "torch"), pytest.param(("resnet50", "caffe"), marks=pytest.mark.slow)],
    ids=["resnet20", "resnet50"],
)
def exported(request, tmp_path_factory):
    """One conversion per net for the whole module (ResNet-50's takes a while)."""
    name, mode = request.param
    model = trained_model(name, mode, seed=5)
    names = tuple(f"class {i}" for i in range(model.output_shape[-1]))
    path = str(tmp_path_factory.mktemp(name) / f"{name}.onnx")
    source = sources.ModelSource(model, mode, class_names=names, name=name)
    lines = []
    result = onnx_export.export_onnx(source, path, log=lines.append)
    return {"model": model, "mode": mode, "path": path, "result": result, "names": names, "printed": lines}


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
    assert json.loads(metadata["class_names"]) == list(exported["names"])
    assert metadata["preprocessing"] == exported["mode"] and metadata["top_k"] == "5"
    assert json.loads(metadata["image_size"]) == list(exported["model"].input_shape[1:3])


def test_the_export_verified_itself_against_float64_and_printed_it(exported):
    differences = exported["result"].differences
    assert set(differences) == {"batch1", "batch8"}
    for distances in differences.values():
        assert 0 < distances["keras_float32_logits"] < 1e-4
        assert distances["logits"] <= verify.float32_bound(distances["keras_float32_logits"])
    printed = "\n".join(exported["printed"])
    assert "batch 8: logits" in printed and "from float64 (Keras float32" in printed


def test_an_export_that_differs_from_the_network_fails(exported):
    """The exported file against the network with one kernel weight changed by 0.05."""
    from keras_resnet.export.graph import ServingGraph

    weights = exported["model"].get_weights()
    kernel = next(i for i, w in enumerate(weights) if w.ndim == 4)
    weights[kernel][1, 1, 0, 0] += 0.05
    changed = keras.models.clone_model(exported["model"])
    changed.set_weights(weights)
    graph = ServingGraph(sources.ModelSource(changed, exported["mode"]))
    with pytest.raises(verify.VerificationError, match="differ from the float64 network by"):
        verify.verify_onnx(exported["path"], graph, log=lambda _: None)


def test_fp16_runs_and_reports_its_error(tmp_path):
    model = trained_model("resnet20", "tf", seed=6)
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
    assert 0 < error <= variants.FP16_MAX_LOGITS
    assert 0 < result.fp16_report["logits"] <= variants.FP16_MAX_LOGITS
    assert any("fp16 vs the float64 network on 32 photos" in line for line in lines)


@pytest.mark.parametrize("opset", [16, 99, "17", None])
def test_unknown_opset_is_a_clear_error_writing_nothing(opset, tmp_path):
    with pytest.raises(ValueError, match="opset=.* is not supported; allowed: 17"):
        onnx_export.export_onnx(
            sources.ModelSource(trained_model("resnet20", "tf", 0), "tf"), str(tmp_path / "m.onnx"), opset=opset
        )
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_overwrite_and_int8_needs_real_images(tmp_path):
    source = sources.ModelSource(trained_model("resnet20", "tf", 0), "tf")
    (tmp_path / "m.onnx").write_bytes(b"old")
    with pytest.raises(ValueError, match="overwrite"):
        onnx_export.export_onnx(source, str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="calibration_images"):
        onnx_export.export_onnx(source, str(tmp_path / "new.onnx"), int8=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"] and (tmp_path / "m.onnx").read_bytes() == b"old"


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    def fail(path, graph, *args, **kwargs):
        assert os.path.getsize(path) > 0  # the model was written before the check
        raise verify.VerificationError("injected failure")

    monkeypatch.setattr(onnx_export, "FORMAT", dataclasses.replace(onnx_export.FORMAT, verify=fail))
    with pytest.raises(verify.VerificationError, match="injected"):
        onnx_export.export_onnx(sources.ModelSource(trained_model("resnet20", "tf", 0), "tf"), str(tmp_path / "m.onnx"))
    assert os.listdir(tmp_path) == []


def test_command_line_exports_at_the_chosen_opset(tmp_path):
    """From weights with a trained net's statistics: an untrained net's near one-hot softmax puts
    the probabilities check at the edge of float32 rounding, by chance of its initialisation."""
    target, weights = str(tmp_path / "r20.onnx"), str(tmp_path / "r20.weights.h5")
    trained_model("resnet20", "tf", 0).save_weights(weights)
    done = run_cli(
        "export/to_onnx.py",
        *("--model", "resnet20", "--weights", weights, "--preprocess_mode", "tf"),
        *("--output", target, "--opset", "18"),
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
        "--int8_min_agreement",
        "--dataset",
    ):
        assert flag in helped.stdout
    refused = run_cli("export/to_onnx.py", "--model", "resnet20", "--output", target, "--int8_min_agreement", "1.5")
    assert (
        refused.returncode != 0
        and "--int8_min_agreement=1.5: 1.5 is not a number in the range [0.0, 1.0]" in refused.stderr
    )


def onnx_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".onnx"))


@pytest.mark.slow
def test_a_failed_int8_check_leaves_nothing_and_overwrite_drops_stale_copies(tmp_path):
    """All of m.onnx, m.fp16.onnx, m.int8.onnx or none; a rerun works; --overwrite without
    --fp16 removes the earlier m.fp16.onnx; a killed export's staging dir goes."""
    source = sources.ModelSource(trained_model("resnet20", "tf", 7), "tf")
    target = str(tmp_path / "m.onnx")
    photos = sample_photos(32, 32, seed=8)
    with pytest.raises(verify.VerificationError, match="ONNX int8 .* top-1 agreement .* < 1.01"):
        onnx_export.export_onnx(
            source, target, fp16=True, int8=True, calibration_images=photos, int8_min_agreement=1.01, log=print
        )
    assert os.listdir(tmp_path) == []
    result = onnx_export.export_onnx(source, target, fp16=True, log=print)
    assert onnx_files(tmp_path) == ["m.fp16.onnx", "m.onnx"] and result.fp16_path == str(tmp_path / "m.fp16.onnx")
    os.unlink(target)  # the fp16 copy of a model no longer there would sit beside the new one
    with pytest.raises(ValueError, match="m.fp16.onnx' exists"):
        onnx_export.export_onnx(source, target, log=print)
    leftover = staging.staging_dir(str(tmp_path / "m.onnx"))  # as a killed export leaves it
    other = staging.staging_dir(str(tmp_path / "other.onnx"))  # another target's: not ours to remove
    lines = []
    onnx_export.export_onnx(source, target, overwrite=True, log=lines.append)
    assert onnx_files(tmp_path) == ["m.onnx"] and os.path.isdir(other)
    assert not os.path.exists(leftover) and any("m.fp16.onnx: an earlier export's fp16 copy" in x for x in lines)


def test_a_second_export_to_the_same_file_is_refused(tmp_path):
    target = str(tmp_path / "m.onnx")
    with staging.lock(target):
        with pytest.raises(ValueError, match=rf"another export to .*m.onnx' is running \(process {os.getpid()}\)"):
            onnx_export.export_onnx(sources.ModelSource(trained_model("resnet20", "tf", 0), "tf"), target)
    assert onnx_files(tmp_path) == []


def test_a_read_only_output_directory_is_refused_before_any_model_is_loaded(tmp_path):
    if os.geteuid() == 0:
        read_only = "/proc/keras_resnet_test"  # root writes anywhere else; proc refuses new files
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        read_only = str(tmp_path / "ro")
    with pytest.raises(ValueError, match="cannot write under .*: choose a writable --output"):
        onnx_export.check_output(os.path.join(read_only, "m.onnx"), overwrite=False)
