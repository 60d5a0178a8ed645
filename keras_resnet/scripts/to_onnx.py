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

from absl import flags

from keras_resnet.export import cli
from keras_resnet.scripts import run_program

cli.define_file_flags(".onnx", "fp16/int8", "a static int8 QDQ per-channel copy")
flags.adopt_module_key_flags(cli)
flags.DEFINE_integer("opset", 17, "ONNX opset (17 or above, up to what tf2onnx writes).")
flags.DEFINE_bool("fp16", False, "Also write a float16 copy (float32 inputs and outputs) and report its error.")
FLAGS = flags.FLAGS


def run(argv):
    from keras_resnet.export.onnx import check_opset, check_output, export_onnx

    cli.exit_on_error(check_opset, FLAGS.opset)
    cli.export_file_from_flags(
        argv, check_output, export_onnx, other_copies=FLAGS.fp16, opset=FLAGS.opset, fp16=FLAGS.fp16
    )


def main():
    """`keras-resnet-export-onnx`, and `python export/to_onnx.py`."""
    run_program(__name__, run)
