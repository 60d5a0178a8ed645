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
import shutil

import numpy as np

from keras_resnet.export import staging, variants, verify
from keras_resnet.export.graph import ServingGraph

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


def family(path):
    """{tag: .xml path} of every IR an export to `path` may write."""
    return staging.family(path, SUFFIX, VARIANTS)


def _files(path):
    """Every file an export to `path` may write: each IR's .xml and its .bin."""
    return [file for xml in family(path).values() for file in (xml, weights_path(xml))]


def check_output(path, overwrite):
    """Refuse, before any model is loaded, a target that is not a .xml path in a writable
    directory, or whose files exist without overwrite."""
    staging.check_targets(path, SUFFIX, _files, overwrite, " (the IR's .bin goes beside it)")


def convert(graph):
    """The graph's float signature as an openvino.Model, inputs and outputs named as it names them."""
    import openvino
    import tensorflow as tf

    return openvino.convert_model(tf.function(graph.numeric_outputs, input_signature=[graph.images_spec()]))


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


def verify_openvino(path, graph, reference=None, *, batch_sizes=verify.BATCH_SIZES, name=None, log=print, **bound):
    """The float32 IR at `path` (printed as `name`) on OpenVINO's CPU in float32 on real
    photos at each batch size, against the float64 network. Returns {"batch<n>": distances}."""
    label = f"OpenVINO {name or os.path.basename(path)}"
    return variants.verify_float32(label, runner(path), graph, reference, batch_sizes=batch_sizes, log=log, **bound)


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


def _stage(graph, tags, staged_dir, output_path, calibration_images):
    """Write every requested IR into `staged_dir`; {tag: staged .xml path}."""
    import openvino

    model = convert(graph)
    staged = {}
    for tag in tags:
        staged[tag] = os.path.join(staged_dir, os.path.basename(family(output_path)[tag]))
        ir = model if tag == "fp32" else quantize(model, calibration_images)
        openvino.save_model(ir, staged[tag], compress_to_fp16=False)
    return staged


def export_openvino(
    source,
    output_path,
    *,
    int8=False,
    calibration_images=None,
    eval_images=None,
    eval_labels=None,
    top_k=None,
    overwrite=False,
    int8_min_agreement=variants.INT8_MIN_AGREEMENT,
    reference=None,
    log=print,
    **bound,
):
    """Export `source` to `output_path` (.xml, its .bin beside), plus `*.int8.xml` if asked.

    float32 is verified on OpenVINO's CPU in float32 against the float64 network on photos at
    batch 1 and 8 (`bound`: verify.check_float32's factor and floor). int8 (NNCF) is
    calibrated on `calibration_images` and compared with the float64 network on
    `eval_images` (held-out, with `eval_labels` its accuracy beside float32's; else the
    calibration images) within the ONNX int8 bounds. The files appear only once all passed.
    """
    check_output(output_path, overwrite)
    if int8 and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 needs calibration_images: a few hundred real training images (--dataset)")
    graph = ServingGraph(source, top_k=top_k)
    reference = reference or verify.Reference(source)
    tags = ["fp32", "int8"] if int8 else ["fp32"]
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    with staging.lock(output_path):
        staging.remove_leftovers(directory, [os.path.basename(output_path)], log)
        check_output(output_path, overwrite)
        staged_dir = staging.staging_dir(output_path)
        try:
            staged = _stage(graph, tags, staged_dir, output_path, calibration_images)
            name = os.path.basename(output_path)
            differences = verify_openvino(staged["fp32"], graph, reference, name=name, log=log, **bound)
            log("OpenVINO float32 within float32's rounding of the float64 network")
            default = default_precision_report(staged["fp32"], graph, reference)
            log(
                f"  OpenVINO's default CPU precision here is {default['precision']}: logits {default['logits']:.3g} "
                f"from float64 (compile with {FLOAT32} for float32)"
            )
            images, labels, where = variants.comparison_images(graph, calibration_images, eval_images, eval_labels)
            runs = {tag: runner(xml) for tag, xml in staged.items()}
            reports, accuracies = variants.check_all(
                "OpenVINO", runs, graph, reference, images, labels, where, int8_min_agreement, log
            )
            published = staging.publish(
                staged, family(output_path), overwrite, log, files=lambda xml: (weights_path(xml), xml)
            )
        finally:
            shutil.rmtree(staged_dir, ignore_errors=True)
    for tag, path in published.items():
        size = os.path.getsize(path) + os.path.getsize(weights_path(path))
        log(f"OpenVINO {tag}: {path} + {os.path.basename(weights_path(path))} ({size / 1e6:.1f} MB)")
    return OpenVINOExport(published, differences, reports, default, accuracies)
