"""The folded serving model written as an ONNX graph directly, node for node, with the onnx
package: what tf2onnx makes of the same network (Conv, Relu, Add, MaxPool, GlobalAveragePool,
Gemm, Softmax, TopK), without tracing, freezing and re-optimising a TensorFlow graph, so an
export holds the weights about once instead of a few dozen times (BENCHMARKS.md, "Export
cost").

Inside, tensors are NCHW, as ONNX's Conv wants them: the float RGB images [batch, H, W, 3] in
0..255 get the preprocessing's offset added (its order and scale are in the first conv,
folding.py), then one Transpose. Every layer class the writer knows is a row of `LAYERS`; a
model with any other layer is `Unsupported`, and the exporter converts it with tf2onnx.
"""

from __future__ import annotations

import numpy as np

from keras_resnet.export.graph import IMAGES

BATCH_AXIS = "batch"
TO_NCHW = (0, 3, 1, 2)


class Unsupported(ValueError):
    """The model has a layer (or a layer setting) the direct writer does not write."""


def _inbound_layers(layer_config):
    """Names of the layers whose outputs a layer's one call reads, in argument order (from
    the public model.get_config())."""
    names = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                names.append(value["config"]["keras_history"][0])
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    nodes = layer_config["inbound_nodes"]
    if len(nodes) > 1:
        raise Unsupported(f"layer {layer_config['name']!r} is called {len(nodes)} times")
    for node in nodes:
        walk(node["args"])
        walk(node["kwargs"])
    return names


def _endpoints(history):
    """Layer names of a functional config's `input_layers` / `output_layers` (one
    [name, node, tensor] triple, or a list of them)."""
    if history and isinstance(history[0], str):
        return [history[0]]
    return [triple[0] for triple in history]


def same_pads(size, kernel, stride, dilation=1):
    """(before, after) of TensorFlow's "same" padding of one spatial axis of static `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Writer:
    """Nodes and initializers of the graph being written; `alias` maps a layer name to the
    tensor that holds its output (a layer that computes nothing is an alias of its input)."""

    def __init__(self):
        import onnx

        self.onnx = onnx
        self.nodes, self.initializers, self.alias = [], [], {}
        self.pending_pads = {}  # conv layer name -> (top, bottom, left, right) of a merged ZeroPadding2D
        self.consumers = {}  # layer name -> the layers that read its output

    def constant(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], name=output, **attributes))
        return output

    def tensor(self, name):
        return self.alias.get(name, name)


def _activation(writer, name, activation, x):
    """The layer's own activation after `x`: nothing for linear, a Relu for relu."""
    if activation in ("linear", None):
        return x
    if activation == "relu":
        return writer.node("Relu", [x], f"{name}/relu")
    raise Unsupported(f"layer {name!r} has activation {activation!r}")


def _spatial_shape(layer):
    _, height, width, _ = layer.input.shape
    if height is None or width is None:
        raise Unsupported(f"layer {layer.name!r} has no static input size")
    return height, width


def _conv(writer, layer, inputs, out):
    config = layer.get_config()
    if config["data_format"] != "channels_last" or config.get("groups", 1) != 1:
        raise Unsupported(f"Conv2D {layer.name!r}: only channels_last, ungrouped convs")
    kernel = np.asarray(layer.kernel, dtype="float32")
    height, width = kernel.shape[:2]
    strides, dilations = tuple(config["strides"]), tuple(config["dilation_rate"])
    if config["padding"] == "same":
        (top, bottom), (left, right) = (
            same_pads(size, k, s, d)
            for size, k, s, d in zip(_spatial_shape(layer), (height, width), strides, dilations)
        )
    else:
        top = bottom = left = right = 0
    extra = writer.pending_pads.pop(layer.name, (0, 0, 0, 0))
    pads = [top + extra[0], left + extra[2], bottom + extra[1], right + extra[3]]
    names = [writer.constant(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if layer.use_bias:
        names.append(writer.constant(f"{layer.name}/bias", np.asarray(layer.bias, dtype="float32")))
    conv_out = out if config["activation"] in ("linear", None) else f"{out}/conv"
    writer.node(
        "Conv", [inputs[0], *names], conv_out,
        kernel_shape=[height, width], strides=list(strides), dilations=list(dilations), pads=pads, group=1,
    )  # fmt: skip
    return _activation(writer, out, config["activation"], conv_out) if conv_out != out else out


def _zero_padding(writer, layer, inputs, out):
    (top, bottom), (left, right) = layer.padding
    if layer.data_format != "channels_last":
        raise Unsupported(f"ZeroPadding2D {layer.name!r}: only channels_last")
    readers = writer.consumers.get(layer.name, [])
    if len(readers) == 1 and type(readers[0]).__name__ == "Conv2D" and readers[0].padding == "valid":
        writer.pending_pads[readers[0].name] = (top, bottom, left, right)  # the conv pads, no copy made
        writer.alias[layer.name] = inputs[0]
        return None
    pads = writer.constant(f"{layer.name}/pads", np.array([0, 0, top, left, 0, 0, bottom, right], "int64"))
    return writer.node("Pad", [inputs[0], pads], out, mode="constant")


def _batch_norm(writer, layer, inputs, out):
    if layer.axis not in (-1, 3):
        raise Unsupported(f"BatchNormalization {layer.name!r} over axis {layer.axis}")
    mean = np.asarray(layer.moving_mean, dtype="float32")
    names = [
        writer.constant(f"{layer.name}/{key}", np.asarray(value, dtype="float32"))
        for key, value in (
            ("scale", layer.gamma if layer.scale else np.ones_like(mean)),
            ("bias", layer.beta if layer.center else np.zeros_like(mean)),
            ("mean", mean),
            ("variance", layer.moving_variance),
        )
    ]
    return writer.node("BatchNormalization", [inputs[0], *names], out, epsilon=float(layer.epsilon))


def _activation_layer(writer, layer, inputs, out):
    name = getattr(layer.activation, "__name__", None)
    if name == "linear":
        writer.alias[layer.name] = inputs[0]
        return None
    if name != "relu":
        raise Unsupported(f"Activation {layer.name!r}: {name!r}")
    return writer.node("Relu", inputs, out)


def _relu_layer(writer, layer, inputs, out):
    config = layer.get_config()
    if config.get("max_value") is not None or config.get("negative_slope", 0) or config.get("threshold", 0):
        raise Unsupported(f"ReLU {layer.name!r} with a max value, slope or threshold")
    return writer.node("Relu", inputs, out)


def _add(writer, layer, inputs, out):
    return writer.node("Add" if len(inputs) == 2 else "Sum", inputs, out)


def _max_pool(writer, layer, inputs, out, pads=None):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise Unsupported(f"{type(layer).__name__} {layer.name!r}: only channels_last")
    window, strides = tuple(layer.pool_size), tuple(layer.strides)
    if pads is None and layer.padding == "same":
        (top, bottom), (left, right) = (
            same_pads(size, k, s) for size, k, s in zip(_spatial_shape(layer), window, strides)
        )
        pads = (top, bottom, left, right)
    top, bottom, left, right = pads or (0, 0, 0, 0)
    # ONNX's MaxPool ignores padded cells, as TensorFlow's -inf padding does
    return writer.node(
        "MaxPool", inputs, out, kernel_shape=list(window), strides=list(strides), pads=[top, left, bottom, right]
    )


def _padded_max_pool(writer, layer, inputs, out):
    (top, bottom), (left, right) = layer.padding
    return _max_pool(writer, layer, inputs, out, pads=(top, bottom, left, right))


def _global_pool(op):
    def write(writer, layer, inputs, out):
        if layer.data_format != "channels_last" or layer.keepdims:
            raise Unsupported(f"{type(layer).__name__} {layer.name!r}: only channels_last without keepdims")
        pooled = writer.node(op, inputs, f"{out}/pooled")
        return writer.node("Flatten", [pooled], out, axis=1)

    return write


def _dense(writer, layer, inputs, out):
    if len(layer.input.shape) != 2:
        raise Unsupported(f"Dense {layer.name!r} on a rank-{len(layer.input.shape)} input")
    kernel = writer.constant(f"{layer.name}/kernel", np.asarray(layer.kernel, dtype="float32"))
    names = [inputs[0], kernel]
    if layer.use_bias:
        names.append(writer.constant(f"{layer.name}/bias", np.asarray(layer.bias, dtype="float32")))
    activation = getattr(layer.activation, "__name__", None)
    gemm_out = out if activation == "linear" else f"{out}/gemm"
    writer.node("Gemm", names, gemm_out)
    return _activation(writer, out, activation, gemm_out) if gemm_out != out else out


def _zero_pad_shortcut(writer, layer, inputs, out):
    if layer.data_format != "channels_last":
        raise Unsupported(f"ZeroPadShortcut {layer.name!r}: only channels_last")
    x = inputs[0]
    if layer.stride > 1:
        slice_inputs = [
            writer.constant(f"{layer.name}/{key}", np.array(value, "int64"))
            for key, value in (
                ("starts", [0, 0]), ("ends", [np.iinfo("int64").max] * 2), ("axes", [2, 3]), ("steps", [layer.stride] * 2)
            )
        ]  # fmt: skip
        x = writer.node("Slice", [x, *slice_inputs], f"{out}/subsampled")
    extra = layer.filters - layer.input.shape[-1]
    if extra:
        pads = writer.constant(f"{layer.name}/pads", np.array([0, 0, 0, 0, 0, extra, 0, 0], "int64"))
        return writer.node("Pad", [x, pads], out, mode="constant")
    writer.alias[layer.name] = x
    return None


# Keras layer class name -> how it is written: f(writer, layer, input tensor names, output name).
LAYERS = {
    "Conv2D": _conv,
    "BatchNormalization": _batch_norm,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "Add": _add,
    "MaxPooling2D": _max_pool,
    "PaddedMaxPooling2D": _padded_max_pool,
    "GlobalAveragePooling2D": _global_pool("GlobalAveragePool"),
    "GlobalMaxPooling2D": _global_pool("GlobalMaxPool"),
    "Dense": _dense,
    "ZeroPadShortcut": _zero_pad_shortcut,
    "ZeroPadding2D": _zero_padding,
}


def check_supported(model):
    """Raise Unsupported naming the first layer the writer does not know."""
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in LAYERS and kind != "InputLayer":
            raise Unsupported(f"layer {layer.name!r} is a {kind}, which the direct ONNX writer does not write")


def _value_info(name, elem_type, dims):
    import onnx

    return onnx.helper.make_tensor_value_info(name, elem_type, [BATCH_AXIS, *dims])


def model_proto(folded, input_offset, *, top_k, opset):
    """The onnx.ModelProto of the folded float32 model `folded` (folding.serving_model) after
    adding `input_offset` (an [H, W, 3] image; None, a preprocessing that did not fold, is
    Unsupported) to float RGB images in 0..255: outputs `logits`, `probabilities` (softmax),
    `top_k_classes` (int32) and `top_k_scores`, each with the batch axis `batch`."""
    import onnx

    if input_offset is None:
        raise Unsupported("its preprocessing does not fold into its first conv")
    check_supported(folded)
    config = folded.get_config()
    ends = [_endpoints(config[key]) for key in ("input_layers", "output_layers")]
    if [len(names) for names in ends] != [1, 1]:
        raise Unsupported("the model must have one input and one output")
    (input_name,), (output_name,) = ends
    layers = {layer.name: layer for layer in folded.layers}
    inbound = {c["name"]: _inbound_layers(c) for c in config["layers"]}
    writer = _Writer()
    for name, sources in inbound.items():
        for source in sources:
            writer.consumers.setdefault(source, []).append(layers[name])
    x = IMAGES
    if np.any(input_offset):
        x = writer.node("Add", [x, writer.constant("input_offset", np.asarray(input_offset, "float32"))], "offset")
    writer.alias[input_name] = writer.node("Transpose", [x], "images_nchw", perm=list(TO_NCHW))
    for layer_config in config["layers"]:
        name = layer_config["name"]
        if name == input_name:
            continue
        layer = layers[name]
        inputs = [writer.tensor(source) for source in inbound[name]]
        LAYERS[type(layer).__name__](writer, layer, inputs, name)
    if writer.pending_pads:
        raise Unsupported(f"padding merged into convs that were not written: {sorted(writer.pending_pads)}")
    last = writer.tensor(output_name)
    classes = int(folded.output_shape[-1])
    writer.node("Identity", [last], "logits")
    writer.node("Softmax", ["logits"], "probabilities", axis=-1)
    k = writer.constant("top_k", np.array([top_k], "int64"))
    writer.nodes.append(
        onnx.helper.make_node("TopK", ["probabilities", k], ["top_k_scores", "top_k_indices"], name="top_k", axis=-1)
    )
    writer.node("Cast", ["top_k_indices"], "top_k_classes", to=onnx.TensorProto.INT32)
    height, width = folded.input_shape[1:3]
    float32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        writer.nodes,
        "keras_resnet",
        [_value_info(IMAGES, float32, [height, width, 3])],
        [
            _value_info("logits", float32, [classes]),
            _value_info("probabilities", float32, [classes]),
            _value_info("top_k_classes", onnx.TensorProto.INT32, [top_k]),
            _value_info("top_k_scores", float32, [top_k]),
        ],
        initializer=writer.initializers,
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    return onnx.helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
        producer_name="keras_resnet",
    )
