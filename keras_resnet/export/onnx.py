"""ONNX export through tf2onnx, with optional fp16 and static int8 (QDQ, per-channel) copies.

The ONNX graph is the SavedModel's `serving_default`: float RGB images in 0..255 named
`images` with a dynamic batch axis, the run's preprocessing and the BN-folded net inside,
outputs `logits`, `probabilities`, `top_k_classes`, `top_k_scores`. Each file is written
beside its target, checked (onnx.checker, then onnxruntime against the Keras model) and only
then renamed into place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile

import numpy as np

from keras_resnet.export import verify
from keras_resnet.export.graph import IMAGES, ServingGraph

MIN_OPSET = 17
FP16_RTOL = 1e-2
INT8_MIN_AGREEMENT = 0.95
CALIBRATION_COUNT = 300
BATCH_AXIS = "batch"
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


def variant_path(path, tag):
    """`model.onnx` -> `model.int8.onnx`: where the fp16 / int8 copy of `path` goes."""
    return f"{path[: -len('.onnx')]}.{tag}.onnx"


def check_output(path, overwrite, fp16=False, int8=False):
    """Refuse a target that is not a .onnx path in a directory, or exists without overwrite."""
    if not str(path).endswith(".onnx"):
        raise ValueError(f"output path {path!r} must end in .onnx")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is a file, not a directory")
    targets = [path] + [variant_path(path, tag) for tag, wanted in (("fp16", fp16), ("int8", int8)) if wanted]
    for target in targets:
        if os.path.isdir(target):
            raise ValueError(f"{target!r} is a directory")
        if os.path.exists(target) and not overwrite:
            raise ValueError(f"{target!r} exists: pass overwrite=True (--overwrite) to replace it")


def _name_batch_axes(model_proto):
    """Give every graph input's and output's first axis the one symbolic name `batch`."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_AXIS


def convert(graph, opset):
    """The serving graph as a checked onnx.ModelProto, metadata describing its preprocessing."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = [graph.images_spec()]
    function = tf.function(graph.numeric_outputs, input_signature=spec)
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    _name_batch_axes(model_proto)
    metadata = {
        "preprocessing": graph.source.preprocess_mode,
        "input": "float32 RGB [batch, H, W, 3] in 0..255, preprocessing inside the graph",
        "image_size": json.dumps(list(graph.image_size)),
        "class_names": json.dumps(list(graph.class_names) if graph.class_names is not None else None),
        "keras_resnet_record": graph.source.record_text(),
    }
    onnx.helper.set_model_props(model_proto, metadata)
    onnx.checker.check_model(model_proto, full_check=True)
    return model_proto


def _staging_path(target):
    """A hidden temporary .onnx file beside `target` (same file system: rename is atomic)."""
    fd, path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    return path


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
    return half


def calibration_reader(images, batch_size=32):
    """An onnxruntime CalibrationDataReader over float RGB images in 0..255."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{IMAGES: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

        def get_next(self):
            return next(self._batches, None)

    return ImageReader()


def to_int8(fp32_path, int8_path, calibration_images):
    """Static int8 ONNX: QDQ, per-channel int8 weights, uint8 activations, ranges calibrated
    (min/max) on real images; `quant_pre_process` first folds and infers shapes (ONNX's own
    inference: the shapes of a CNN need no symbolic solver). Softmax and TopK stay float, so
    probabilities are not rounded to 1/255 steps."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = _staging_path(int8_path)
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
        )
    finally:
        os.unlink(prepared)


def accuracy_report(paths, images, labels, graph):
    """Top-1 accuracy of each ONNX file and of the Keras model on labelled images, and the
    top-1 agreement of each file with the Keras model."""
    logits, _ = verify.keras_reference(graph.source, images)
    keras_top1 = logits.argmax(axis=1)
    report = {"images": int(len(labels)), "keras_accuracy": float((keras_top1 == labels).mean())}
    for tag, path in paths.items():
        top1 = verify.onnx_outputs(verify.onnx_session(path), images)["logits"].argmax(axis=1)
        report[f"{tag}_accuracy"] = float((top1 == labels).mean())
        report[f"{tag}_agreement_with_keras"] = float((top1 == keras_top1).mean())
    return report


def _reduced_precision_report(path, graph, images):
    """Differences from the Keras model on real (or random) images, and top-1 agreement."""
    logits, probabilities = verify.keras_reference(graph.source, images)
    outputs = verify.onnx_outputs(verify.onnx_session(path), images)
    differences = verify.compare(outputs, logits, probabilities, top_k=graph.top_k, atol=1e-2)
    differences["max_abs_probability"] = float(np.abs(outputs["probabilities"] - probabilities).max())
    differences["top1_agreement"] = float((outputs["logits"].argmax(axis=1) == logits.argmax(axis=1)).mean())
    differences["images"] = int(len(images))
    return differences


def bounds(int8_min_agreement=INT8_MIN_AGREEMENT):
    """The looser bound each reduced-precision copy must meet against the Keras model."""
    return {
        "fp16": ("logits", lambda value: value <= FP16_RTOL, f"relative logits difference <= {FP16_RTOL:g}"),
        "int8": (
            "top1_agreement",
            lambda value: value >= int8_min_agreement,
            f"top-1 agreement >= {int8_min_agreement:g}",
        ),
    }


def _bounded_report(tag, path, graph, images, bound):
    """The report of the `tag` copy at `path`, or a VerificationError when it misses `bound`."""
    report = _reduced_precision_report(path, graph, images)
    key, within, text = bound
    if not within(report[key]):
        raise verify.VerificationError(f"{tag}: {key} = {report[key]:.4g} against the Keras model; needs {text}")
    return report


def _publish(write, target, check, log, label):
    """`write(staged path)`, `check(staged path)`, then rename onto `target` (world-readable);
    nothing is left at `target` or beside it when either fails."""
    staged = _staging_path(target)
    try:
        write(staged)
        report = check(staged)
        os.chmod(staged, 0o644)
        os.replace(staged, target)
    except BaseException:
        if os.path.exists(staged):
            os.unlink(staged)
        raise
    log(f"{label}: {target}")
    return report


def _writer(model_proto):
    """A `write(path)` saving `model_proto`."""

    def write(path):
        with open(path, "wb") as f:
            f.write(model_proto.SerializeToString())

    return write


def _export_variant(tag, write, output_path, graph, images, where, log, label, bound):
    """Write, check against `bound` and publish the `tag` copy of `output_path`; print its report."""
    target = variant_path(output_path, tag)
    check = functools.partial(_bounded_report, tag, graph=graph, images=images, bound=bound)
    report = _publish(write, target, check, log, f"{label} checked ({bound[2]})")
    log(f"  {tag} vs Keras on {where}: {_describe(report)}")
    return target, report


def _comparison_images(graph, calibration_images, eval_images):
    """(images, description) on which fp16/int8 are compared: held-out test images if given,
    else the calibration images, else random ones."""
    if eval_images is not None:
        return eval_images, "test images"
    if calibration_images is not None:
        return calibration_images, "calibration images"
    return verify.random_images(32, graph.image_size, 0), "random images"


def export_onnx(
    source,
    output_path,
    *,
    opset=MIN_OPSET,
    fp16=False,
    int8=False,
    calibration_images=None,
    eval_images=None,
    eval_labels=None,
    top_k=5,
    overwrite=False,
    rtol=verify.FLOAT32_RTOL,
    int8_min_agreement=INT8_MIN_AGREEMENT,
    log=print,
):
    """Export `source` to `output_path` (float32), plus `*.fp16.onnx` / `*.int8.onnx` if asked.

    float32 is verified in onnxruntime against the Keras model on random images at batch 1
    and 8 within `rtol`. int8 is calibrated on `calibration_images` (real training images).
    fp16 and int8 are compared with the Keras model on `eval_images` (held-out real images;
    else the calibration images) and must meet their `bounds` (`int8_min_agreement=0` only
    for untrained nets, whose near-tied logits make agreement meaningless); `eval_labels` adds the test
    accuracy of every file beside the Keras model's. Each file appears only once it passed.
    """
    check_opset(opset)
    check_output(output_path, overwrite, fp16, int8)
    if int8 and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 needs calibration_images: a few hundred real training images (--dataset)")
    graph = ServingGraph(source, top_k=top_k)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    model_proto = convert(graph, opset)
    check = functools.partial(verify.verify_onnx, graph=graph, rtol=rtol)
    label = f"ONNX opset {opset} verified in onnxruntime (relative difference <= {rtol:g})"
    result = {"path": output_path, "differences": _publish(_writer(model_proto), output_path, check, log, label)}
    images, where = _comparison_images(graph, calibration_images, eval_images)
    variant = functools.partial(
        _export_variant, output_path=output_path, graph=graph, images=images, where=where, log=log
    )
    variant_bounds = bounds(int8_min_agreement)
    if fp16:
        label = "ONNX fp16 (float16 inside, float32 inputs and outputs)"
        result["fp16_path"], result["fp16_report"] = variant(
            "fp16", _writer(to_fp16(model_proto)), label=label, bound=variant_bounds["fp16"]
        )
    if int8:
        write = functools.partial(to_int8, output_path, calibration_images=calibration_images)
        label = f"ONNX int8 (static QDQ, per-channel, {len(calibration_images)} calibration images)"
        result["int8_path"], result["int8_report"] = variant("int8", write, label=label, bound=variant_bounds["int8"])
    if eval_images is not None and eval_labels is not None:
        paths = {
            "fp32": output_path,
            **{tag: result[f"{tag}_path"] for tag in ("fp16", "int8") if f"{tag}_path" in result},
        }
        result["accuracy"] = accuracy_report(paths, eval_images, np.asarray(eval_labels), graph)
        log(f"  test accuracy: {_describe(result['accuracy'])}")
    return OnnxExport(**result)


def _describe(report):
    """`key value, ...` with floats to 4 significant digits, for the printed reports."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items())
