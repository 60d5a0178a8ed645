"""Export a model to ONNX (tf2onnx), verified in onnxruntime before it appears.

    python export/to_onnx.py --model_dir runs/demo --output runs/demo/resnet20.onnx --int8 --fp16
    python export/to_onnx.py --model resnet50 --weights r50.weights.h5 --output r50.onnx --opset 18

The graph takes float RGB 0..255 `images` [batch, H, W, 3] (dynamic batch) with the
preprocessing inside, and returns `logits`, `probabilities`, `top_k_classes`, `top_k_scores`;
the class names are in the model's metadata (metadata_props `class_names`, a JSON list).
--fp16 / --int8 also write <output>.fp16.onnx / <output>.int8.onnx (int8: static QDQ,
per-channel, calibrated on real training images) and print their error against a float64
evaluation of the network, and test accuracy where the data set has a test split. Exits
non-zero, leaving no file at the target, when an input is bad, another export to the same
output runs, or a check fails.
"""

from absl import app, flags, logging

from keras_resnet.export import cli
from keras_resnet.scripts import run_program

cli.define_source_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string("output", None, "The .onnx file to write (fp16/int8 copies go beside it).", required=True)
flags.DEFINE_integer("opset", 17, "ONNX opset (17 or above, up to what tf2onnx writes).")
flags.DEFINE_bool("fp16", False, "Also write a float16 copy (float32 inputs and outputs) and report its error.")
flags.DEFINE_bool(
    "int8",
    False,
    "Also write a static int8 QDQ per-channel copy calibrated on --calibration_count training images of --dataset.",
)
flags.DEFINE_integer("calibration_count", 300, "Training images for int8 calibration.")
flags.DEFINE_integer(
    "eval_count",
    1000,
    "Test images on which fp16/int8 are compared with the float64 network (accuracy and top-1 agreement).",
)
flags.DEFINE_integer(
    "top_k", None, "How many classes top_k_classes / top_k_scores return (default: 5, or all if fewer)."
)
flags.DEFINE_bool(
    "overwrite", False, "Replace existing output files (and remove an earlier export's fp16/int8 copies not rewritten)."
)
FLAGS = flags.FLAGS


def _real_images(source):
    """(calibration images, eval images, eval labels) from the model's data set, or Nones."""
    from keras_resnet.export.calibration import source_images

    if FLAGS.int8 or (FLAGS.fp16 and source.dataset is not None):
        return source_images(source, FLAGS.calibration_count, FLAGS.eval_count)
    return None, None, None


def run(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # the converters log every step at INFO
    from keras_resnet.export.onnx import check_opset, check_output, export_onnx

    cli.exit_on_error(check_opset, FLAGS.opset)
    cli.exit_on_error(check_output, FLAGS.output, FLAGS.overwrite, FLAGS.fp16, FLAGS.int8)
    source = cli.exit_on_error(cli.source_from_flags)
    calibration_images, eval_images, eval_labels = cli.exit_on_error(_real_images, source)
    cli.exit_on_error(
        export_onnx,
        source,
        FLAGS.output,
        opset=FLAGS.opset,
        fp16=FLAGS.fp16,
        int8=FLAGS.int8,
        calibration_images=calibration_images,
        eval_images=eval_images,
        eval_labels=eval_labels,
        top_k=FLAGS.top_k,
        overwrite=FLAGS.overwrite,
    )


def main():
    """`keras-resnet-export-onnx`, and `python export/to_onnx.py`."""
    run_program(__name__, run)
