"""LiteRT (TFLite) export: the .tflite files run in the LiteRT interpreter (ai-edge-litert,
XNNPACK), read back here without keras_resnet's runner, against the Keras model and a
float64 evaluation; a failed check leaves no file."""

import os

import numpy as np
import pytest

pytest.importorskip(
    "ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'keras-resnet[serve-extra]')"
)

from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from export_helpers import keras_outputs, trained_source  # noqa: E402

from keras_resnet.export import litert, verify  # noqa: E402
from keras_resnet.testing import sample_photos  # noqa: E402

OUTPUTS = ["logits", "probabilities", "top_k_classes", "top_k_scores"]


def run_tflite(path, images):
    """The file's serving_default signature in a fresh LiteRT interpreter."""
    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(images=np.asarray(images, dtype="float32"))


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    source = trained_source("resnet20")
    path = str(tmp_path_factory.mktemp("litert") / "resnet20.tflite")
    lines = []
    return source, litert.export_litert(source, path, log=lines.append), "\n".join(lines)


def test_float32_file_matches_keras_at_any_batch(resnet20, rel_diff):
    source, result, printed = resnet20
    path = result.paths["fp32"]
    interpreter = Interpreter(model_path=path)
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["images"] and sorted(signature["outputs"]) == sorted(OUTPUTS)
    photos = sample_photos(32, 5, seed=7)
    for batch in (1, 5):
        outputs = run_tflite(path, photos[:batch])
        logits, probabilities = keras_outputs(source, photos[:batch])
        assert outputs["logits"].shape == (batch, 10)
        assert rel_diff(outputs["logits"], logits) <= 1e-5
        assert rel_diff(outputs["probabilities"], probabilities) <= 1e-5
        np.testing.assert_array_equal(outputs["top_k_classes"], np.argsort(-probabilities, axis=1)[:, :5])
    assert "from float64" in printed and path in printed and set(result.differences) == {"batch1", "batch8"}


def test_a_target_that_cannot_be_written_is_refused_first(tmp_path, resnet20):
    with pytest.raises(ValueError, match="must end in .tflite"):
        litert.check_output(str(tmp_path / "model.onnx"), overwrite=False)
    existing = tmp_path / "model.int8.tflite"
    existing.write_bytes(b"old")
    with pytest.raises(ValueError, match="exists"):
        litert.check_output(str(tmp_path / "model.tflite"), overwrite=False)
    with pytest.raises(ValueError, match="int8 needs calibration_images"):
        litert.export_litert(resnet20[0], str(tmp_path / "other.tflite"), int8=True)


def test_a_failed_check_leaves_no_file(tmp_path, resnet20):
    with pytest.raises(verify.VerificationError, match="float64"):
        litert.export_litert(resnet20[0], str(tmp_path / "strict.tflite"), factor=0.0, floor=0.0, log=lambda _: None)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_resnet50_float32_and_int8_run_in_litert(tmp_path, rel_diff):
    """The stem's max pool keeps its own padding here (LiteRT has no explicit-padding pool)."""
    source = trained_source("resnet50", mode="caffe")
    photos = sample_photos(224, 32, seed=3)
    result = litert.export_litert(
        source, str(tmp_path / "r50.tflite"), int8=True, calibration_images=photos, int8_min_agreement=0.0
    )
    test = sample_photos(224, 4, seed=11)
    logits, probabilities = keras_outputs(source, test)
    float32 = run_tflite(result.paths["fp32"], test)
    assert rel_diff(float32["logits"], logits) <= 1e-4 and rel_diff(float32["probabilities"], probabilities) <= 1e-4
    int8 = run_tflite(result.paths["int8"], test)
    print(f"ResNet-50 LiteRT int8 vs Keras: logits {rel_diff(int8['logits'], logits):.3g}")
    assert rel_diff(int8["logits"], logits) <= 0.3
    assert np.abs(int8["probabilities"] - probabilities).max() <= 0.05
    weights = [d["dtype"] for d in Interpreter(model_path=result.paths["int8"]).get_tensor_details()]
    assert weights.count(np.int8) > 50  # 53 conv kernels and the fc, quantized
