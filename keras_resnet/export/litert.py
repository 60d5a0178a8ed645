"""LiteRT (TFLite) export: float32, fp16, dynamic-range int8 and full-integer int8 `.tflite`
files, each run in the LiteRT interpreter (ai-edge-litert, XNNPACK) before it appears.

The file's one signature, `serving_default`, is the SavedModel's float signature: float RGB
images in 0..255 named `images` [batch, H, W, 3] (any batch: the interpreter resizes), the
run's preprocessing and the folded net inside, outputs `logits`, `probabilities`,
`top_k_classes`, `top_k_scores`. Two rewrites of the other exports do not suit LiteRT and are
left out here: a max pool with its zero padding merged (no TFLite builtin takes explicit
padding) and the bytes signature (decoding an image and resizing it are no TFLite builtins).

- fp16: float16 weights, dequantized to float32 at load (XNNPACK computes in float32).
- dynamic_int8: int8 weights, activations quantized on the fly per call.
- int8: full integer: every op int8, activation ranges calibrated on real training images;
  float32 input and output, quantized and dequantized inside the file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from keras_resnet.export import publish, variants, verify
from keras_resnet.export.graph import FLOAT_SIGNATURE, IMAGES, ServingGraph
from keras_resnet.export.stages import mark

SUFFIX = ".tflite"
VARIANTS = ("fp16", "dynamic_int8", "int8")


@dataclasses.dataclass(frozen=True)
class LiteRTExport:
    """Paths of the verified `.tflite` files ({tag: path}) and what each check measured."""

    paths: dict
    differences: dict
    reports: dict
    accuracy: dict | None = None


def converter(saved_model_dir, tag, calibration_images=None):
    """A TFLiteConverter of the float signature set up for `tag` (fp32 or one of VARIANTS)."""
    import tensorflow as tf

    convert = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[FLOAT_SIGNATURE])
    if tag == "fp32":
        return convert
    convert.optimizations = [tf.lite.Optimize.DEFAULT]
    if tag == "fp16":
        convert.target_spec.supported_types = [tf.float16]
    elif tag == "int8":
        images = np.asarray(calibration_images, dtype="float32")
        convert.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
        convert.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return convert


def convert(graph, tags, calibration_images=None):
    """{tag: .tflite bytes} of the graph's float signature for each tag."""
    with tempfile.TemporaryDirectory() as directory:
        saved_model_dir = graph.save_float_signature(os.path.join(directory, "float_signature"))
        converted = {tag: converter(saved_model_dir, tag, calibration_images).convert() for tag in tags}
    mark("convert")
    return converted


def runner(path, num_threads=None):
    """`images -> {output: array}` of the .tflite file at `path` in the LiteRT interpreter
    (XNNPACK; `num_threads` None: one per core)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
    signature = interpreter.get_signature_runner(FLOAT_SIGNATURE)

    def run(images):
        return signature(**{IMAGES: np.asarray(images, dtype="float32")})

    return run


def verify_litert(path, graph, reference=None, *, batch_sizes=verify.BATCH_SIZES, log=print, **bound):
    """The float32 file at `path` in the LiteRT interpreter on real photos at each batch
    size, against the float64 network. Returns {"batch<n>": distances}."""
    label = f"LiteRT {os.path.basename(path)}"
    return variants.verify_float32(label, runner(path), graph, reference, batch_sizes=batch_sizes, log=log, **bound)


def write(graph, staged, *, calibration_images=None):
    """Write every requested copy to its staging path in `staged` ({tag: path})."""
    for tag, data in convert(graph, list(staged), calibration_images).items():
        with open(staged[tag], "wb") as f:
            f.write(data)


FORMAT = publish.Format("LiteRT", write, verify_litert, runner, suffix=SUFFIX, variants=VARIANTS)
family = FORMAT.family
check_output = FORMAT.check_output


def export_litert(
    source,
    output_path,
    *,
    fp16=False,
    dynamic_int8=False,
    int8=False,
    top_k=None,
    overwrite=False,
    log=print,
    **checks,
):
    """Export `source` to `output_path` (float32 .tflite), plus `*.fp16.tflite`,
    `*.dynamic_int8.tflite`, `*.int8.tflite` if asked.

    float32 is verified in the LiteRT interpreter against the float64 network on photos at
    batch 1 and 8. int8 is calibrated on `calibration_images` (real training images). The
    copies are compared with the float64 network on `eval_images` (held-out, with
    `eval_labels` their accuracy beside float32's; else the calibration images) and must meet
    the ONNX copies' bounds (`int8_min_agreement=0` only for nets that know none of the
    images); `checks`: these and the other keywords of publish.publish. The files appear
    only once all passed; one export per output path at a time.
    """
    tags = ["fp32"] + [tag for tag, wanted in zip(VARIANTS, (fp16, dynamic_int8, int8)) if wanted]
    make_graph = lambda: ServingGraph(source, top_k=top_k, merge_pools=False)  # noqa: E731
    result = publish.export_file(FORMAT, make_graph, output_path, tags, overwrite=overwrite, log=log, **checks)
    return LiteRTExport(result.paths, result.differences, result.reports, result.accuracy)
