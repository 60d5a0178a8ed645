"""Export a model as a TF Serving SavedModel, verified in a new process before it appears.

    python export/to_saved_model.py --model_dir runs/demo --base_path /srv/models
    python export/to_saved_model.py --model resnet50 --weights r50.weights.h5 --labels classes.txt --base_path /srv/models
    python export/to_saved_model.py --keras_file net.keras --preprocess_mode tf --base_path /srv/models --version 3 --overwrite

Writes <base_path>/<model_name>/<version>/ (signatures serving_default: float RGB 0..255
[batch, H, W, 3]; serve_image_bytes: encoded JPEG/PNG [batch]; warm-up records in
assets.extra/) and <base_path>/models.config. Exits non-zero, leaving no version dir, when an
input is bad, another export of the model name is running, the new version would serve
another task than the newest one (other classes, input size, signatures or preprocessing;
--overwrite or a new --model_name to go ahead), or the exported signatures are further from
a float64 evaluation of the network than float32 rounding explains.
"""

from absl import flags

from keras_resnet.export import cli
from keras_resnet.scripts import run_program

cli.define_source_flags()
cli.define_export_flags(
    "Replace an existing version dir, or add a version that serves another task than the newest one "
    "(without it, both are errors)."
)
flags.adopt_module_key_flags(cli)
flags.DEFINE_string(
    "base_path",
    None,
    "TF Serving's model base path: the SavedModel goes to <base_path>/<model_name>/<version>/.",
    required=True,
)
flags.DEFINE_string("version", None, "Integer version dir (default: one above the highest existing version, or 1).")
flags.DEFINE_float(
    "crop_fraction",
    None,
    "serve_image_bytes: the centre crop's share of the shorter side (default 1.0 for nets of 64 pixels or less, else 0.875: 224 of 256).",
)
flags.DEFINE_integer(
    "max_pixels",
    50_000_000,
    "serve_image_bytes refuses an image with more pixels than this, read from its header before decoding.",
)
flags.DEFINE_string(
    "serving_base",
    "/models",
    "Where base_path is mounted for TF Serving, used in models.config (default: the container's /models).",
)
flags.DEFINE_bool(
    "batching",
    False,
    "Also write <base_path>/batching_parameters.txt for TF Serving's --enable_batching, chosen from latencies "
    "measured here at batch 1..64 (serve on a machine like this one), with warm-up requests at each allowed size.",
)
flags.DEFINE_string(
    "version_label", None, "Label the new version so in models.config (e.g. stable); clients ask for it by name."
)
FLAGS = flags.FLAGS


def check_target():
    """The flags that say where the version goes, before a model that may be large is loaded."""
    from keras_resnet.export.saved_model import check_base_path, parse_version
    from keras_resnet.export.tf_serving import check_label

    if FLAGS.version is not None:
        parse_version(FLAGS.version)
    check_base_path(FLAGS.base_path)
    if FLAGS.version_label is not None:
        check_label(FLAGS.version_label)


def export(source):
    from keras_resnet.export.saved_model import export_saved_model
    from keras_resnet.export.tf_serving import serving_instructions

    result = export_saved_model(
        source,
        FLAGS.base_path,
        version=FLAGS.version,
        overwrite=FLAGS.overwrite,
        top_k=FLAGS.top_k,
        crop_fraction=FLAGS.crop_fraction,
        max_pixels=FLAGS.max_pixels,
        serving_base=FLAGS.serving_base,
        batching=FLAGS.batching,
        version_label=FLAGS.version_label,
    )
    print(f"models.config: {result.models_config}")
    print(serving_instructions(FLAGS.base_path, source.name))


def run(argv):
    cli.export_from_flags(argv, check_target, export)


def main():
    """`keras-resnet-export-saved-model`, and `python export/to_saved_model.py`."""
    run_program(__name__, run)
