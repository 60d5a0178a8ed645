"""The ONNX graph written directly from the folded network, against tf2onnx's conversion of
the same serving graph: the same compute ops, one for one, and onnxruntime's outputs of both
files on photos through nets with a trained net's statistics (every shortcut option, plain
nets, the CIFAR and ImageNet stems, keras.applications' ResNet50); a network with a layer
the writer does not know is converted by tf2onnx, and says so."""

from collections import Counter

import keras
import numpy as np
import onnx
import onnxruntime
import pytest

import keras_resnet
from keras_resnet.export import onnx as onnx_export
from keras_resnet.export import onnx_graph, sources, verify
from keras_resnet.export.graph import ServingGraph
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics

# ops that compute: each must appear as often in both files (tf2onnx writes a Dense as MatMul
# and Add, the writer as one Gemm; a Flatten or Squeeze, Identity and Transpose only move data)
COMPUTE_OPS = ("Conv", "Relu", "MaxPool", "GlobalAveragePool", "Softmax", "TopK", "Slice", "Pad")


def trained(model, mode, seed=0):
    photos = sample_photos(model.input_shape[1], 16, seed=seed)
    return with_trained_statistics(model, preprocess_input(photos, mode), seed=seed)


def outputs(model_proto, images):
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return verify.onnx_outputs(session, images)


def ops(model_proto):
    counts = Counter(node.op_type for node in model_proto.graph.node)
    return {op: counts[op] for op in COMPUTE_OPS}


def compare_with_tf2onnx(model, mode):
    """(direct file, tf2onnx's file, onnxruntime outputs of each) on 8 photos."""
    graph = ServingGraph(sources.ModelSource(model, mode))
    direct = onnx_graph.model_proto(graph.folded, graph.input_offset, top_k=graph.top_k, opset=onnx_export.MIN_OPSET)
    converted = onnx_export.tf2onnx_proto(graph, onnx_export.MIN_OPSET)
    onnx.checker.check_model(direct, full_check=True)
    images = verify.verification_set(graph, 8)[1]
    return direct, converted, outputs(direct, images), outputs(converted, images)


NETS = [
    ("resnet20", {}, "caffe"),  # CIFAR stem, option A shortcuts (strided slice and channel pad)
    ("plain20", {}, "torch"),  # no shortcuts, per-channel std folded into the first conv
    ("resnet18", {"input_shape": (32, 32, 3)}, "caffe"),  # ImageNet stem: merged pool padding
    ("resnet50", {"input_shape": (64, 64, 3), "shortcut": "C"}, "unit"),  # projections everywhere, no offset
    ("resnet34", {"input_shape": (32, 32, 3), "shortcut": "A"}, "tf"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,mode", NETS, ids=[n[0] + "-" + n[2] for n in NETS])
def test_the_direct_graph_computes_what_tf2onnx_writes_op_for_op(name, kwargs, mode):
    model = trained(keras_resnet.get_builder(name)(**kwargs), mode)
    direct, converted, ours, theirs = compare_with_tf2onnx(model, mode)
    assert ops(direct) == ops(converted), (ops(direct), ops(converted))
    assert [o.name for o in direct.graph.output] == [o.name for o in converted.graph.output]
    for key in ("logits", "probabilities", "top_k_scores"):
        assert verify.relative_difference(ours[key], theirs[key]) < 1e-6, key
    assert ours["top_k_classes"].dtype == theirs["top_k_classes"].dtype
    np.testing.assert_array_equal(ours["top_k_classes"], theirs["top_k_classes"])


@pytest.mark.slow
def test_keras_applications_resnet50_writes_as_tf2onnx_converts_it():
    model = trained(keras.applications.ResNet50(weights=None), "caffe")
    direct, converted, ours, theirs = compare_with_tf2onnx(model, "caffe")
    assert ops(direct) == ops(converted)
    assert verify.relative_difference(ours["logits"], theirs["logits"]) < 1e-6


def test_the_direct_graph_is_nchw_inside_with_nhwc_images_and_a_batch_axis():
    model = trained(keras_resnet.get_builder("resnet20")(), "caffe")
    graph = ServingGraph(sources.ModelSource(model, "caffe"))
    proto = onnx_graph.model_proto(graph.folded, graph.input_offset, top_k=3, opset=onnx_export.MIN_OPSET)
    images = proto.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert (images.name, dims) == ("images", ["batch", 32, 32, 3])
    transposes = [node for node in proto.graph.node if node.op_type == "Transpose"]
    assert len(transposes) == 1 and list(transposes[0].attribute[0].ints) == [0, 3, 1, 2]
    photos = verify.verification_set(graph, 3)[1]
    got = outputs(proto, photos)
    expected = verify.Reference(graph.source).logits(photos)
    assert verify.relative_difference(got["logits"], expected["float64"]) < 1e-5
    assert got["top_k_classes"].shape == (3, 3)


@pytest.mark.slow
def test_a_layer_the_writer_does_not_know_is_converted_by_tf2onnx(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.Activation("sigmoid")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    lines = []
    exported = onnx_export.export_onnx(sources.ModelSource(model, "caffe"), str(tmp_path / "m.onnx"), log=lines.append)
    assert any("converted by tf2onnx" in line and "sigmoid" in line for line in lines), lines
    ops_written = {node.op_type for node in onnx.load(exported.path).graph.node}
    assert "Conv" in ops_written and "Gemm" not in ops_written  # tf2onnx's MatMul, not the writer's Gemm
