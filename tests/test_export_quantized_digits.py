"""A ResNet-20 trained on the digits, exported to LiteRT (float32, fp16, dynamic-range and
full-integer int8) and OpenVINO (float32, NNCF int8): each file in its own runtime, its test
accuracy on the 360 held-out digits beside float32's."""

import keras
import pytest

import keras_resnet
from keras_resnet.data import load_arrays
from keras_resnet.export import calibration, sources
from keras_resnet.preprocessing import preprocess_input

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    """(source, calibration images, test images, test labels): a ResNet-20 trained briefly on
    the digits (about 98 % test accuracy) and real images of its data set."""
    keras.utils.set_random_seed(0)
    images, labels = load_arrays("digits", "train")
    mean = images.astype("float32").mean(axis=0)
    model = keras_resnet.get_builder("resnet20")()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = preprocess_input(images.astype("float32"), "pixel_mean", mean)
    model.fit(x, labels, batch_size=32, epochs=2, verbose=0)
    source = sources.ModelSource(model, "pixel_mean", mean, name="resnet20", dataset="digits")
    return source, *calibration.source_images(source, 300, 1000)


def test_litert_int8_keeps_float32s_accuracy(digits, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from keras_resnet.export import litert

    source, calibration_images, test_images, test_labels = digits
    lines = []
    result = litert.export_litert(
        source,
        str(tmp_path / "r20.tflite"),
        fp16=True,
        dynamic_int8=True,
        int8=True,
        calibration_images=calibration_images,
        eval_images=test_images,
        eval_labels=test_labels,
        log=lines.append,
    )
    accuracy = result.accuracy
    print(f"digits ResNet-20 LiteRT test accuracy: {accuracy}")
    assert len(test_labels) == 360 and accuracy["fp32"] == accuracy["keras_float32"] > 0.9
    for tag in ("fp16", "dynamic_int8", "int8"):
        assert abs(accuracy[tag] - accuracy["fp32"]) <= 0.01, tag
    assert result.reports["int8"]["top1_agreement"] >= 0.95
    assert any("test accuracy" in line and "int8" in line and "fp32" in line for line in lines)


def test_openvino_int8_keeps_float32s_accuracy(digits, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed")
    pytest.importorskip("nncf", reason="nncf is not installed: OpenVINO int8 needs it")
    from keras_resnet.export import openvino

    source, calibration_images, test_images, test_labels = digits
    result = openvino.export_openvino(
        source,
        str(tmp_path / "r20.xml"),
        int8=True,
        calibration_images=calibration_images,
        eval_images=test_images,
        eval_labels=test_labels,
        log=lambda _: None,
    )
    accuracy = result.accuracy
    print(f"digits ResNet-20 OpenVINO test accuracy: {accuracy}")
    assert accuracy["fp32"] == accuracy["keras_float32"] > 0.9
    assert abs(accuracy["int8"] - accuracy["fp32"]) <= 0.02
    assert result.reports["int8"]["top1_agreement"] >= 0.95
