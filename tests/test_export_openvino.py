"""OpenVINO export: the IR (.xml + .bin) compiled by OpenVINO's CPU plugin, read back here
without keras_resnet's runner, against the Keras model and a float64 evaluation; the
default (bfloat16 where the CPU has it) precision reported; a failed check leaves no file."""

import os

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'keras-resnet[serve-extra]')")

from export_helpers import keras_outputs, trained_source  # noqa: E402

from keras_resnet.export import openvino as ov_export  # noqa: E402
from keras_resnet.export import verify  # noqa: E402
from keras_resnet.testing import sample_photos  # noqa: E402

OUTPUTS = {"logits", "probabilities", "top_k_classes", "top_k_scores"}


def run_ir(path, images):
    """The IR's outputs by name, compiled for the CPU in float32."""
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled([np.asarray(images, dtype="float32")])
    return {output.get_any_name(): results[output] for output in compiled.outputs}


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    source = trained_source("resnet20")
    path = str(tmp_path_factory.mktemp("openvino") / "resnet20.xml")
    lines = []
    return source, ov_export.export_openvino(source, path, log=lines.append), "\n".join(lines)


def test_float32_ir_matches_keras_at_any_batch(resnet20, rel_diff):
    source, result, printed = resnet20
    path = result.paths["fp32"]
    assert os.path.isfile(path[: -len(".xml")] + ".bin")
    model = ov.Core().read_model(path)
    assert {output.get_any_name() for output in model.outputs} == OUTPUTS
    assert model.inputs[0].get_any_name() == "images" and model.inputs[0].get_partial_shape()[0].is_dynamic
    assert all(node.get_element_type() != ov.Type.f16 for node in model.get_ops() if node.get_type_name() == "Constant")
    photos = sample_photos(32, 5, seed=7)
    for batch in (1, 5):
        outputs = run_ir(path, photos[:batch])
        logits, probabilities = keras_outputs(source, photos[:batch])
        assert rel_diff(outputs["logits"], logits) <= 1e-5
        assert rel_diff(outputs["probabilities"], probabilities) <= 1e-5
        np.testing.assert_array_equal(outputs["top_k_classes"], np.argsort(-probabilities, axis=1)[:, :5])
    assert result.default_precision["precision"] in ("f32", "bf16", "f16") and "default CPU precision" in printed


def test_a_target_that_cannot_be_written_is_refused_first(tmp_path):
    with pytest.raises(ValueError, match="must end in .xml"):
        ov_export.check_output(str(tmp_path / "model.bin"), overwrite=False)
    (tmp_path / "model.bin").write_bytes(b"old")
    with pytest.raises(ValueError, match="exists"):
        ov_export.check_output(str(tmp_path / "model.xml"), overwrite=False)


def test_a_failed_check_leaves_no_file(tmp_path, resnet20):
    with pytest.raises(verify.VerificationError, match="float64"):
        ov_export.export_openvino(resnet20[0], str(tmp_path / "strict.xml"), factor=0.0, floor=0.0, log=lambda _: None)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_resnet50_float32_and_int8_run_in_openvino(tmp_path, rel_diff):
    pytest.importorskip("nncf", reason="nncf is not installed: OpenVINO int8 needs it (pip install nncf)")
    source = trained_source("resnet50", mode="caffe")
    photos = sample_photos(224, 32, seed=3)
    result = ov_export.export_openvino(
        source, str(tmp_path / "r50.xml"), int8=True, calibration_images=photos, int8_min_agreement=0.0
    )
    test = sample_photos(224, 4, seed=11)
    logits, probabilities = keras_outputs(source, test)
    float32 = run_ir(result.paths["fp32"], test)
    assert rel_diff(float32["logits"], logits) <= 1e-4 and rel_diff(float32["probabilities"], probabilities) <= 1e-4
    int8 = run_ir(result.paths["int8"], test)
    print(f"ResNet-50 OpenVINO int8 vs Keras: logits {rel_diff(int8['logits'], logits):.3g}")
    assert rel_diff(int8["logits"], logits) <= 0.3
    assert np.abs(int8["probabilities"] - probabilities).max() <= 0.1
    ops = [node.get_type_name() for node in ov.Core().read_model(result.paths["int8"]).get_ops()]
    assert ops.count("FakeQuantize") > 50  # the inputs of 53 convs and the fc
