"""Standard deviations of the layer responses of trained runs, as Fig. 7 (section 4.2).

    python train/responses.py --model_dir runs/plain20 --model_dir runs/resnet20 \
        --model_dir runs/plain56 --model_dir runs/resnet56 --output fig7.png

A response is a 3x3 layer's output after BN, before the ReLU or the addition, on the run's
own test images (validation for ImageNet-like sets) with the run's newest checkpoint. The
figure shows each run's stds in layer order and sorted by magnitude; plain nets dashed,
residual nets solid.
"""

from absl import flags

from keras_resnet.scripts import run_program
from keras_resnet.training import cli

flags.DEFINE_multi_string("model_dir", None, "A training run dir; repeat the flag for each run.", required=True)
flags.DEFINE_string("output", None, "Where to write the figure (.png, .pdf or .svg).", required=True)
flags.DEFINE_integer("max_images", None, "Measure on the first this many test images; default: all of them.")
flags.DEFINE_integer("batch_size", 100, "Images per forward pass.")
flags.DEFINE_string("table", None, "Also write the table of per-run stds (markdown) here; it is always printed.")
flags.DEFINE_bool(
    "log_scale", False, "A logarithmic std axis (the paper's is linear), for stds of very different sizes."
)
flags.DEFINE_string("title", None, "Figure title; default: what is measured, on how many images.")
FLAGS = flags.FLAGS


def run():
    from keras_resnet.training import analysis

    analysis.check_output(FLAGS.output)
    analysis.check_trained_runs(FLAGS.model_dir)
    responses = [analysis.run_responses(d, FLAGS.batch_size, FLAGS.max_images) for d in FLAGS.model_dir]
    figure = analysis.plot_responses(responses, FLAGS.title, FLAGS.log_scale)
    analysis.save_figure_and_table(figure, FLAGS.output, analysis.responses_table(responses), FLAGS.table)


def main():
    """`keras-resnet-responses`, and `python train/responses.py`."""
    run_program(__name__, cli.absl_main(run))
