"""ONNX export, with optional fp16 and static int8 (QDQ, per-channel) copies.

The graph is written directly from the folded network (onnx_graph.py), or converted by
tf2onnx for a network with a layer the writer does not know. It is the SavedModel's
`serving_default`: float RGB images in 0..255 named
`images` with a dynamic batch axis, the run's preprocessing and the BN-folded net inside,
outputs `logits`, `probabilities`, `top_k_classes`, `top_k_scores`. The class names are not
an output (ONNX Runtime has no string outputs on every platform) but metadata: `class_names`
in the model's metadata_props, a JSON list, with `preprocessing`, `input`, `image_size` and
`top_k`. Every file is written beside its target, checked (onnx.checker, then onnxruntime
against the float64 network) and only when all requested files passed are they renamed into
place: a failed check leaves no file at the target.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from keras_resnet.export import onnx_graph, publish, verify
from keras_resnet.export.graph import IMAGES, ServingGraph
from keras_resnet.export.stages import mark

MIN_OPSET = 17
CALIBRATION_COUNT = 300
VARIANTS = ("fp16", "int8")
FLOAT_HEAD_OPS = ("Softmax", "TopK")


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """Paths of the verified ONNX files and what each check measured."""

    path: str
    differences: dict
    fp16_path: str | None = None
    fp16_report: dict | None = None
    int8_path: str | None = None
    int8_report: dict | None = None
    accuracy: dict | None = None


def supported_opsets():
    """Opsets this tf2onnx can write, from MIN_OPSET (the oldest opset the exporter supports) up."""
    from tf2onnx import constants

    return tuple(range(MIN_OPSET, max(constants.OPSET_TO_IR_VERSION) + 1))


def check_opset(opset):
    """The opset as an int, or a ValueError naming the supported ones."""
    allowed = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in allowed:
        raise ValueError(f"opset={opset!r} is not supported; allowed: {', '.join(map(str, allowed))}")
    return opset


def _name_batch_axes(model_proto):
    """Give every graph input's and output's first axis the one symbolic name `batch`."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = onnx_graph.BATCH_AXIS


# tf2onnx's optimizer passes rewrite every node's protobuf once per pass; under the upb
# protobuf runtime (the default) each rewrite keeps the old copy of its weights in the
# message's arena, so a conversion holds about two dozen copies of the weights at its end.
# Python's own protobuf runtime frees them: the conversion runs in a child process under it
# (BENCHMARKS.md, "Export cost").
_CONVERTER = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tf2onnx

    def main(graph_path, names_path, opset, onnx_path):
        graph_def = tf.compat.v1.GraphDef()
        with open(graph_path, "rb") as f:
            graph_def.ParseFromString(f.read())
        with open(names_path) as f:
            names = json.load(f)
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=names["inputs"],
            output_names=names["outputs"],
            opset=int(opset),
            tensors_to_rename=names["rename"],
        )
        with open(onnx_path, "wb") as f:
            f.write(model_proto.SerializeToString())

    main(*sys.argv[1:])
    """
)


def frozen_graph_def(function, spec):
    """(GraphDef, input names, output names, {tensor: output name}) of the tf.function `function`
    at `spec`, its variables constants and its calls inlined, as tf2onnx's from_function freezes."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = function.get_concrete_function(*spec)
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    inputs = [tensor.name for tensor in frozen.inputs]
    outputs = [tensor.name for tensor in frozen.outputs]
    rename = dict(zip(inputs, [s.name for s in spec]))
    rename.update({tensor.name: key for key, tensor in concrete.structured_outputs.items()})
    return frozen.graph.as_graph_def(add_shapes=True), inputs, outputs, rename


def run_converter(graph_def, inputs, outputs, rename, opset, timeout=3600):
    """The ONNX ModelProto tf2onnx writes for the frozen `graph_def`, converted in a child
    process under Python's protobuf runtime (see _CONVERTER)."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        graph_path, names_path = os.path.join(scratch, "graph.pb"), os.path.join(scratch, "names.json")
        onnx_path = os.path.join(scratch, "model.onnx")
        with open(graph_path, "wb") as f:
            f.write(graph_def.SerializeToString())
        with open(names_path, "w") as f:
            json.dump({"inputs": inputs, "outputs": outputs, "rename": rename}, f)
        env = {
            **os.environ,
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
        process = subprocess.run(
            [sys.executable, "-c", _CONVERTER, graph_path, names_path, str(opset), onnx_path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=scratch,
        )
        if process.returncode != 0 or not os.path.isfile(onnx_path):
            raise RuntimeError(f"tf2onnx failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
        return onnx.load(onnx_path)


def tf2onnx_proto(graph, opset):
    """The serving graph's numeric outputs converted by tf2onnx (frozen, in a child process)."""
    frozen = frozen_graph_def(graph.numeric_function(), [graph.images_spec()])
    gc.collect()  # the traced function: only its frozen GraphDef goes to the converter
    mark("freeze")
    model_proto = run_converter(*frozen, opset)
    del frozen
    gc.collect()
    _name_batch_axes(model_proto)
    return model_proto


def convert(graph, opset, log=print):
    """The serving graph as a checked onnx.ModelProto, metadata describing its preprocessing:
    written directly from the folded network (onnx_graph), or by tf2onnx for a network with a
    layer the direct writer does not know."""
    import onnx

    try:
        model_proto = onnx_graph.model_proto(graph.folded, graph.input_offset, top_k=graph.top_k, opset=opset)
    except onnx_graph.Unsupported as reason:
        log(f"ONNX: the network is converted by tf2onnx: {reason}")
        model_proto = tf2onnx_proto(graph, opset)
    metadata = {
        "preprocessing": graph.source.preprocess_mode,
        "input": "float32 RGB [batch, H, W, 3] in 0..255, preprocessing inside the graph",
        "image_size": json.dumps(list(graph.image_size)),
        "class_names": json.dumps(list(graph.class_names) if graph.class_names is not None else None),
        "keras_resnet_record": graph.source.record_text(),
        "top_k": str(graph.top_k),
    }
    onnx.helper.set_model_props(model_proto, metadata)
    onnx.checker.check_model(model_proto, full_check=True)
    mark("convert")
    return model_proto


def _isolate_outputs(model_proto):
    """A copy whose graph outputs each come from their own Identity node: onnxconverter-common's
    keep_io_types mistypes an output that other nodes also read (probabilities feeds TopK)."""
    import onnx

    isolated = onnx.ModelProto()
    isolated.CopyFrom(model_proto)
    graph = isolated.graph
    for output in graph.output:
        inner = f"{output.name}_inner"
        for node in graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [output.name], name=f"{output.name}_output"))
    return isolated


def to_fp16(model_proto):
    """float16 weights and compute, float32 inputs and outputs (onnxconverter-common)."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as error:
        raise ValueError("fp16 needs onnxconverter-common: pip install 'keras-resnet[export]'") from error
    half = float16.convert_float_to_float16(_isolate_outputs(model_proto), keep_io_types=True)
    onnx.checker.check_model(half)
    mark("fp16")
    return half


def calibration_reader(images, batch_size=8):
    """An onnxruntime CalibrationDataReader over float RGB images in 0..255, one batch per
    `get_next`; `set_range` selects batches, so the calibrator can take them a few at a time
    (`CalibStridedMinMax`)."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        def __init__(self):
            self._batches = [{IMAGES: images[i : i + batch_size]} for i in range(0, len(images), batch_size)]
            self.set_range(0, len(self._batches))

        def __len__(self):
            return len(self._batches)

        def set_range(self, start_index, end_index):
            self._next = iter(self._batches[start_index:end_index])

        def get_next(self):
            return next(self._next, None)

    return ImageReader()


def to_int8(fp32_path, int8_path, calibration_images):
    """Static int8 ONNX: QDQ, per-channel int8 weights, uint8 activations, ranges calibrated
    (min/max) on real images; `quant_pre_process` first folds and infers shapes (ONNX's own
    inference: the shapes of a CNN need no symbolic solver). Softmax and TopK stay float, so
    probabilities are not rounded to 1/255 steps."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f"{int8_path[: -len('.onnx')]}.prepared.onnx"  # beside it, cleaned with it
    try:
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        float_heads = [node.name for node in onnx.load(prepared).graph.node if node.op_type in FLOAT_HEAD_OPS]
        quantize_static(
            prepared,
            int8_path,
            calibration_reader(np.asarray(calibration_images, dtype="float32")),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_heads,
            # ranges merged batch by batch: min/max calibration otherwise holds every
            # intermediate tensor of every calibration image until the end (GBs at 224x224)
            extra_options={"CalibStridedMinMax": 1},
        )
    finally:
        if os.path.exists(prepared):
            os.unlink(prepared)
    mark("int8")


def _write_proto(model_proto, path):
    with open(path, "wb") as f:
        f.write(model_proto.SerializeToString())


def write(graph, staged, *, calibration_images=None, opset=MIN_OPSET, log=print):
    """Write every requested copy to its staging path in `staged` ({tag: path})."""
    model_proto = convert(graph, opset, log)
    _write_proto(model_proto, staged["fp32"])
    if "fp16" in staged:
        _write_proto(to_fp16(model_proto), staged["fp16"])
    if "int8" in staged:
        to_int8(staged["fp32"], staged["int8"], calibration_images)


def runner(path):
    """`images -> {output: array}` of the ONNX file at `path` in onnxruntime."""
    session = verify.onnx_session(path)
    return lambda images: verify.onnx_outputs(session, images)


FORMAT = publish.Format("ONNX", write, verify.verify_onnx, runner, suffix=".onnx", variants=VARIANTS)
family = FORMAT.family
check_output = FORMAT.check_output


def export_onnx(
    source,
    output_path,
    *,
    opset=MIN_OPSET,
    fp16=False,
    int8=False,
    top_k=None,
    overwrite=False,
    log=print,
    **checks,
):
    """Export `source` to `output_path` (float32), plus `*.fp16.onnx` / `*.int8.onnx` if asked.

    float32 is verified in onnxruntime against the float64 network on photos at batch 1 and
    8. int8 is calibrated on `calibration_images` (real training images). fp16 and int8 are
    compared with the float64 network on `eval_images` (held-out real images, with
    `eval_labels` their accuracy; else the calibration images) and must meet their bounds
    (`int8_min_agreement=0` only for untrained nets, whose near-tied logits make agreement
    meaningless); `checks`: these and the other keywords of publish.publish. The files
    appear only once all passed; one export per output path at a time.
    """
    check_opset(opset)
    tags = ["fp32"] + [tag for tag, wanted in (("fp16", fp16), ("int8", int8)) if wanted]
    result = publish.export_file(
        FORMAT,
        lambda: ServingGraph(source, top_k=top_k),
        output_path,
        tags,
        overwrite=overwrite,
        log=log,
        write_options={"opset": opset, "log": log},
        **checks,
    )
    return OnnxExport(
        result.paths["fp32"],
        result.differences,
        fp16_path=result.paths.get("fp16"),
        fp16_report=result.reports.get("fp16"),
        int8_path=result.paths.get("int8"),
        int8_report=result.reports.get("int8"),
        accuracy=result.accuracy,
    )
