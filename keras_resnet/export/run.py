"""Export a training run dir to both formats, checked, and say how to serve it (`make demo`)."""

from __future__ import annotations

import dataclasses
import os

from keras_resnet import evaluation
from keras_resnet.export import calibration, onnx, saved_model, sources, tf_serving, verify

EVAL_COUNT = 1000


@dataclasses.dataclass(frozen=True)
class RunExport:
    """The verified artifacts of one run."""

    saved_model: saved_model.SavedModelExport
    onnx: onnx.OnnxExport


def export_run(
    model_dir,
    output_dir=None,
    *,
    model_name=None,
    version=None,
    opset=onnx.MIN_OPSET,
    fp16=False,
    int8=True,
    calibration_count=onnx.CALIBRATION_COUNT,
    eval_count=EVAL_COUNT,
    log=print,
):
    """Export the newest checkpoint of `model_dir` under `output_dir` (default
    `<model_dir>/export`): `saved_model/<name>/<version>/` + `saved_model/models.config` for
    TF Serving, and `onnx/<name>.onnx` (+ `.int8.onnx` calibrated on the run's training images,
    never those it held out, with accuracy against float32 on the test split, else the run's
    evaluation split). Every artifact is verified against the same float64
    evaluation of the network before it appears."""
    source = sources.from_run_dir(model_dir, name=model_name)
    output_dir = output_dir or os.path.join(model_dir, "export")
    base_path = os.path.join(output_dir, "saved_model")
    onnx_path = os.path.join(output_dir, "onnx", f"{source.name}.onnx")
    saved_model.check_target(base_path, source.name, version, overwrite=False)
    onnx.check_opset(opset)
    calibration_images = eval_images = eval_labels = None
    if int8 and source.dataset is None:
        log(f"no data set named in {model_dir}/config.json: skipping int8 (it needs real calibration images)")
        int8 = False
    if source.dataset is not None and (int8 or fp16):
        evaluation.run_data(model_dir)  # the files the run held out are still those it listed
        eval_images, eval_labels = calibration.eval_images(source, eval_count)
    if int8:
        calibration_images = calibration.calibration_images(source, calibration_count)
    reference = verify.Reference(source)
    exported_saved_model = saved_model.export_saved_model(
        source, base_path, version=version, reference=reference, log=log
    )
    exported_onnx = onnx.export_onnx(
        source,
        onnx_path,
        opset=opset,
        fp16=fp16,
        int8=int8,
        calibration_images=calibration_images,
        eval_images=eval_images,
        eval_labels=eval_labels,
        overwrite=True,
        reference=reference,
        log=log,
    )
    log(
        f"Artifacts of {model_dir}:\n  SavedModel {exported_saved_model.path}\n  models.config {exported_saved_model.models_config}"
    )
    for path in (exported_onnx.path, exported_onnx.fp16_path, exported_onnx.int8_path):
        if path:
            log(f"  ONNX {path}")
    log(tf_serving.serving_instructions(base_path, source.name))
    return RunExport(exported_saved_model, exported_onnx)
