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

from absl import flags

from keras_resnet.export import cli
from keras_resnet.scripts import run_program

cli.define_file_flags(".xml", "int8", "an NNCF int8 copy")
flags.adopt_module_key_flags(cli)


def run(argv):
    from keras_resnet.export.openvino import check_output, export_openvino

    cli.export_file_from_flags(argv, check_output, export_openvino)


def main():
    """`keras-resnet-export-openvino`, and `python export/to_openvino.py`."""
    run_program(__name__, run)
