"""Export a model to OpenVINO IR (.xml + .bin), verified in OpenVINO's CPU runtime before it appears.

    python export/to_openvino.py --model_dir runs/demo --output runs/demo/export/openvino/resnet20.xml --int8
    python export/to_openvino.py --model resnet50 --weights r50.weights.h5 --output r50.xml

The IR takes float RGB 0..255 `images` [batch, H, W, 3] (dynamic batch) with the
preprocessing inside, and returns `logits`, `probabilities`, `top_k_classes`, `top_k_scores`,
float32 weights. Compile it with {"INFERENCE_PRECISION_HINT": "f32"} for float32 answers:
OpenVINO's CPU plugin otherwise computes in bfloat16 on CPUs that have it (the printout says
how far that lands). --int8 also writes <output>.int8.xml/.bin (NNCF post-training
quantization, calibrated on real training images) and prints its error against a float64
evaluation of the network and its test accuracy beside float32's. Exits non-zero, leaving no
file at the target, when an input is bad, another export to the same output runs, or a check fails.
"""

from absl import app, flags, logging

from keras_resnet.export import cli

cli.define_source_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string("output", None, "The .xml file to write (its .bin and the int8 copy go beside it).", required=True)
flags.DEFINE_bool(
    "int8", False, "Also write an NNCF int8 copy calibrated on --calibration_count training images of --dataset."
)
flags.DEFINE_integer("calibration_count", 300, "Training images for int8 calibration.")
flags.DEFINE_integer(
    "eval_count", 1000, "Test images on which int8 is compared with float32 (accuracy and top-1 agreement)."
)
flags.DEFINE_integer(
    "top_k", None, "How many classes top_k_classes / top_k_scores return (default: 5, or all if fewer)."
)
flags.DEFINE_bool("overwrite", False, "Replace existing output files (and remove an earlier int8 copy not rewritten).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # the converters log every step at INFO
    from keras_resnet.export.calibration import source_images
    from keras_resnet.export.openvino import check_output, export_openvino

    cli.exit_on_error(check_output, FLAGS.output, FLAGS.overwrite)
    source = cli.exit_on_error(cli.source_from_flags)
    images = (None, None, None)
    if FLAGS.int8:
        images = cli.exit_on_error(source_images, source, FLAGS.calibration_count, FLAGS.eval_count)
    calibration_images, eval_images, eval_labels = images
    cli.exit_on_error(
        export_openvino,
        source,
        FLAGS.output,
        int8=FLAGS.int8,
        calibration_images=calibration_images,
        eval_images=eval_images,
        eval_labels=eval_labels,
        top_k=FLAGS.top_k,
        overwrite=FLAGS.overwrite,
    )


if __name__ == "__main__":
    app.run(main)
