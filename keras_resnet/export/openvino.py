"""OpenVINO export: IR (`model.xml` + `model.bin`) of the serving graph, float32 and (with
NNCF) int8, each run in OpenVINO's CPU runtime before it appears.

The IR is the SavedModel's float signature converted by `openvino.convert_model`: float RGB
images in 0..255 named `images` [batch, H, W, 3] (dynamic batch), the run's preprocessing and
the folded net inside, outputs `logits`, `probabilities`, `top_k_classes`, `top_k_scores`.
Weights are stored in float32 (`save_model` would halve them to float16 by default).

OpenVINO's CPU plugin computes in bfloat16 by default on CPUs that have it (AVX512_BF16,
AMX): compile with `{"INFERENCE_PRECISION_HINT": "f32"}` for float32 answers, as the check
here does; the printout says how far the default precision lands from the float64 network.
int8 is NNCF's post-training quantization (`nncf.quantize`, calibrated on real training
images; softmax and top-k stay float).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from keras_resnet.export import publish, variants, verify
from keras_resnet.export.graph import NUMERIC_OUTPUTS, ServingGraph
from keras_resnet.export.stages import mark

SUFFIX = ".xml"
VARIANTS = ("int8",)
FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclasses.dataclass(frozen=True)
class OpenVINOExport:
    """Paths of the verified IR files ({tag: .xml path}, each with its .bin beside) and what
    each check measured."""

    paths: dict
    differences: dict
    reports: dict
    default_precision: dict
    accuracy: dict | None = None


def weights_path(xml_path):
    """The .bin file OpenVINO reads beside `xml_path`."""
    return f"{xml_path[: -len(SUFFIX)]}.bin"


def convert(graph):
    """The graph's float signature as an openvino.Model, inputs and outputs named as it names
    them, the outputs in its order (logits, probabilities, top_k_classes, top_k_scores)."""
    import openvino

    with tempfile.TemporaryDirectory() as directory:
        model = openvino.convert_model(graph.save_float_signature(os.path.join(directory, "float_signature")))
    result_of = {output.get_any_name(): result for output, result in zip(model.outputs, model.get_results())}
    results = [result_of[name] for name in NUMERIC_OUTPUTS]
    mark("convert")
    return openvino.Model(results, model.get_parameters(), model.get_friendly_name())


def quantize(model, calibration_images, batch_size=1):
    """NNCF's post-training int8 of `model`, calibrated on real images (float RGB 0..255)."""
    try:
        import nncf
    except ImportError as error:
        raise ValueError("OpenVINO int8 needs NNCF: pip install nncf") from error
    images = np.asarray(calibration_images, dtype="float32")
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(images))


def runner(path, config=None):
    """`images -> {output: array}` of the IR at `path` compiled for OpenVINO's CPU plugin
    (`config` None: float32 compute)."""
    import openvino

    compiled = openvino.Core().compile_model(path, "CPU", FLOAT32 if config is None else config)
    request = compiled.create_infer_request()
    names = {output: output.get_any_name() for output in compiled.outputs}

    def run(images):
        results = request.infer([np.asarray(images, dtype="float32")])
        return {name: np.asarray(results[output]) for output, name in names.items()}

    return run


def verify_openvino(path, graph, reference=None, *, batch_sizes=verify.BATCH_SIZES, log=print, **bound):
    """The float32 IR at `path` on OpenVINO's CPU in float32 on real photos at each batch
    size, against the float64 network, and what the CPU's default precision computes there.
    Returns {"batch<n>": distances, "default_precision": default_precision_report}."""
    label = f"OpenVINO {os.path.basename(path)}"
    report = variants.verify_float32(label, runner(path), graph, reference, batch_sizes=batch_sizes, log=log, **bound)
    default = default_precision_report(path, graph, reference or verify.Reference(graph.source))
    log(
        f"  OpenVINO's default CPU precision here is {default['precision']}: logits {default['logits']:.3g} "
        f"from float64 (compile with {FLOAT32} for float32)"
    )
    return {**report, "default_precision": default}


def default_precision_report(path, graph, reference):
    """What OpenVINO's CPU computes with no precision hint (bfloat16 where the CPU has it):
    its precision and relative logits distance from the float64 network on 8 photos."""
    import openvino

    compiled = openvino.Core().compile_model(path, "CPU")
    _, images = verify.verification_set(graph, 8)
    logits = runner(path, config={})(images)["logits"]
    return {
        "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        "logits": verify.relative_difference(logits, reference.logits(images)["float64"]),
    }


def write(graph, staged, *, calibration_images=None):
    """Write every requested IR to its staging path in `staged` ({tag: .xml path})."""
    import openvino

    model = convert(graph)
    for tag, path in staged.items():
        ir = model if tag == "fp32" else quantize(model, calibration_images)
        openvino.save_model(ir, path, compress_to_fp16=False)


FORMAT = publish.Format(
    "OpenVINO",
    write,
    verify_openvino,
    runner,
    files=lambda xml: (weights_path(xml), xml),
    suffix=SUFFIX,
    variants=VARIANTS,
    note=" (the IR's .bin goes beside it)",
)
family = FORMAT.family
check_output = FORMAT.check_output


def export_openvino(source, output_path, *, int8=False, top_k=None, overwrite=False, log=print, **checks):
    """Export `source` to `output_path` (.xml, its .bin beside), plus `*.int8.xml` if asked.

    float32 is verified on OpenVINO's CPU in float32 against the float64 network on photos at
    batch 1 and 8. int8 (NNCF) is calibrated on `calibration_images` and compared with the
    float64 network on `eval_images` (held-out, with `eval_labels` its accuracy beside
    float32's; else the calibration images) within the ONNX int8 bounds; `checks`: these and
    the other keywords of publish.publish. The files appear only once all passed.
    """
    tags = ["fp32", "int8"] if int8 else ["fp32"]
    make_graph = lambda: ServingGraph(source, top_k=top_k)  # noqa: E731
    result = publish.export_file(FORMAT, make_graph, output_path, tags, overwrite=overwrite, log=log, **checks)
    differences = dict(result.differences)
    default = differences.pop("default_precision")
    return OpenVINOExport(result.paths, differences, result.reports, default, result.accuracy)
