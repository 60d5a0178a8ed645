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

from keras_resnet.export import staging, variants, verify
from keras_resnet.export.graph import FLOAT_SIGNATURE, IMAGES, ServingGraph

SUFFIX = ".tflite"
VARIANTS = ("fp16", "dynamic_int8", "int8")


@dataclasses.dataclass(frozen=True)
class LiteRTExport:
    """Paths of the verified `.tflite` files ({tag: path}) and what each check measured."""

    paths: dict
    differences: dict
    reports: dict
    accuracy: dict | None = None


def family(path):
    """{tag: path} of every file an export to `path` may write."""
    return staging.family(path, SUFFIX, VARIANTS)


def check_output(path, overwrite):
    """Refuse, before any model is loaded, a target that is not a .tflite path in a writable
    directory, or whose files exist without overwrite."""
    staging.check_targets(path, SUFFIX, lambda path: family(path).values(), overwrite)


def _float_signature_dir(graph, directory):
    """A SavedModel in `directory` holding only the float signature: the converter names the
    .tflite signature, its input and its outputs after it."""
    import tensorflow as tf

    function = tf.function(graph.numeric_outputs, input_signature=[graph.images_spec()])
    tf.saved_model.save(tf.Module(), directory, signatures={FLOAT_SIGNATURE: function.get_concrete_function()})
    return directory


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
        saved_model_dir = _float_signature_dir(graph, os.path.join(directory, "float_signature"))
        return {tag: converter(saved_model_dir, tag, calibration_images).convert() for tag in tags}


def runner(path, num_threads=None):
    """`images -> {output: array}` of the .tflite file at `path` in the LiteRT interpreter
    (XNNPACK; `num_threads` None: one per core)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
    signature = interpreter.get_signature_runner(FLOAT_SIGNATURE)

    def run(images):
        return signature(**{IMAGES: np.asarray(images, dtype="float32")})

    return run


def verify_litert(path, graph, reference=None, *, batch_sizes=verify.BATCH_SIZES, name=None, log=print, **bound):
    """The float32 file at `path` (printed as `name`) in the LiteRT interpreter on real photos
    at each batch size, against the float64 network. Returns {"batch<n>": distances}."""
    label = f"LiteRT {name or os.path.basename(path)}"
    return variants.verify_float32(label, runner(path), graph, reference, batch_sizes=batch_sizes, log=log, **bound)


def export_litert(
    source,
    output_path,
    *,
    fp16=False,
    dynamic_int8=False,
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
    """Export `source` to `output_path` (float32 .tflite), plus `*.fp16.tflite`,
    `*.dynamic_int8.tflite`, `*.int8.tflite` if asked.

    float32 is verified in the LiteRT interpreter against the float64 network on photos at
    batch 1 and 8 (`bound`: verify.check_float32's factor and floor). int8 is calibrated on
    `calibration_images` (real training images). The copies are compared with the float64
    network on `eval_images` (held-out, with `eval_labels` their accuracy beside float32's;
    else the calibration images) and must meet the ONNX copies' bounds (`int8_min_agreement=0`
    only for nets that know none of the images). The files appear only once all passed; one
    export per output path at a time.
    """
    check_output(output_path, overwrite)
    if int8 and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 needs calibration_images: a few hundred real training images (--dataset)")
    graph = ServingGraph(source, top_k=top_k, merge_pools=False)
    reference = reference or verify.Reference(source)
    tags = ["fp32"] + [tag for tag, wanted in zip(VARIANTS, (fp16, dynamic_int8, int8)) if wanted]
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    with staging.lock(output_path):
        staging.remove_leftovers(directory, [os.path.basename(p) for p in family(output_path).values()], log)
        check_output(output_path, overwrite)
        with staging.discarded_on_failure({}) as staged:
            for tag, data in convert(graph, tags, calibration_images).items():
                staged[tag] = staging.staging_file(family(output_path)[tag])
                with open(staged[tag], "wb") as f:
                    f.write(data)
            differences = verify_litert(
                staged["fp32"], graph, reference, name=os.path.basename(output_path), log=log, **bound
            )
            log("LiteRT float32 within float32's rounding of the float64 network")
            images, labels, where = variants.comparison_images(graph, calibration_images, eval_images, eval_labels)
            runs = {tag: runner(path) for tag, path in staged.items()}
            reports, accuracies = variants.check_all(
                "LiteRT", runs, graph, reference, images, labels, where, int8_min_agreement, log
            )
            published = staging.publish(staged, family(output_path), overwrite, log)
    for tag, path in published.items():
        log(f"LiteRT {tag}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return LiteRTExport(published, differences, reports, accuracies)
