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

from absl import app, flags, logging

from keras_resnet.export import cli

cli.define_source_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string(
    "output", None, "The .tflite file to write (the reduced-precision copies go beside it).", required=True
)
flags.DEFINE_bool("fp16", False, "Also write a copy with float16 weights and report its error.")
flags.DEFINE_bool("dynamic_int8", False, "Also write a copy with int8 weights (dynamic-range quantization).")
flags.DEFINE_bool(
    "int8",
    False,
    "Also write a full-integer int8 copy calibrated on --calibration_count training images of --dataset.",
)
flags.DEFINE_integer("calibration_count", 300, "Training images for int8 calibration.")
flags.DEFINE_integer(
    "eval_count", 1000, "Test images on which the copies are compared with float32 (accuracy and top-1 agreement)."
)
flags.DEFINE_integer(
    "top_k", None, "How many classes top_k_classes / top_k_scores return (default: 5, or all if fewer)."
)
flags.DEFINE_bool("overwrite", False, "Replace existing output files (and remove earlier copies not rewritten).")
FLAGS = flags.FLAGS


def _real_images(source):
    """(calibration images, test images, test labels) when a copy is asked for and the
    model's data set is known (int8 needs it), else Nones."""
    from keras_resnet.export.calibration import source_images

    if FLAGS.int8 or ((FLAGS.fp16 or FLAGS.dynamic_int8) and source.dataset is not None):
        return source_images(source, FLAGS.calibration_count, FLAGS.eval_count)
    return None, None, None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # the converters log every step at INFO
    from keras_resnet.export.litert import check_output, export_litert

    cli.exit_on_error(check_output, FLAGS.output, FLAGS.overwrite)
    source = cli.exit_on_error(cli.source_from_flags)
    calibration_images, eval_images, eval_labels = cli.exit_on_error(_real_images, source)
    cli.exit_on_error(
        export_litert,
        source,
        FLAGS.output,
        fp16=FLAGS.fp16,
        dynamic_int8=FLAGS.dynamic_int8,
        int8=FLAGS.int8,
        calibration_images=calibration_images,
        eval_images=eval_images,
        eval_labels=eval_labels,
        top_k=FLAGS.top_k,
        overwrite=FLAGS.overwrite,
    )


if __name__ == "__main__":
    app.run(main)
