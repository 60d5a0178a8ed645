"""Export a model to LiteRT (TFLite), verified in the LiteRT interpreter before it appears.

    python export/to_litert.py --model_dir runs/demo --output runs/demo/export/litert/resnet20.tflite --int8
    python export/to_litert.py --model resnet50 --weights r50.weights.h5 --output r50.tflite --fp16 --dynamic_int8

The file's signature `serving_default` takes float RGB 0..255 `images` [batch, H, W, 3] (any
batch) with the preprocessing inside, and returns `logits`, `probabilities`, `top_k_classes`,
`top_k_scores`. --fp16 / --dynamic_int8 / --int8 also write <output>.fp16.tflite (float16
weights), <output>.dynamic_int8.tflite (int8 weights, activations quantized per call) and
<output>.int8.tflite (full integer, calibrated on real training images; float input and
output), and print their error against a float64 evaluation of the network and the test
accuracy of every file where the data set has a test split. Exits non-zero, leaving no file at
the target, when an input is bad, another export to the same output runs, or a check fails.
"""

from absl import flags

from keras_resnet.export import cli
from keras_resnet.scripts import run_program

cli.define_file_flags(".tflite", "fp16/dynamic_int8/int8", "a full-integer int8 copy")
flags.adopt_module_key_flags(cli)
flags.DEFINE_bool("fp16", False, "Also write a copy with float16 weights and report its error.")
flags.DEFINE_bool("dynamic_int8", False, "Also write a copy with int8 weights (dynamic-range quantization).")
FLAGS = flags.FLAGS


def run(argv):
    from keras_resnet.export.litert import check_output, export_litert

    cli.export_file_from_flags(
        argv,
        check_output,
        export_litert,
        other_copies=FLAGS.fp16 or FLAGS.dynamic_int8,
        fp16=FLAGS.fp16,
        dynamic_int8=FLAGS.dynamic_int8,
    )


def main():
    """`keras-resnet-export-litert`, and `python export/to_litert.py`."""
    run_program(__name__, run)
