"""Training and test error of several runs in the manner of Figs. 4 and 6, and their final
errors as Tables 2 and 6 (section 4.2).

    python train/compare.py --runs runs/plain20,runs/plain56,runs/resnet20,runs/resnet56 --output fig6.png
    python train/compare.py --runs runs/plain20,runs/resnet20 --output fig.png --table errors.md --max_error 20

Each run dir's metrics.jsonl gives its curves and its config.json the model's name; plain nets
are drawn on the left, residual nets on the right, training error thin and test error bold.
"""

from absl import flags

from keras_resnet.scripts import run_program
from keras_resnet.training import cli

flags.DEFINE_list("runs", None, "Training run dirs to compare, comma-separated.", required=True)
flags.DEFINE_string("output", None, "Where to write the figure (.png, .pdf or .svg).", required=True)
flags.DEFINE_string("table", None, "Also write the table of final errors (markdown) here; it is always printed.")
flags.DEFINE_float("max_error", None, "Top of the error axis in % (Fig. 6 shows 0-20); default: the largest error.")
flags.DEFINE_string("title", None, "Figure title; default: what the line styles mean.")
FLAGS = flags.FLAGS


def run():
    from keras_resnet.training import analysis

    analysis.check_output(FLAGS.output)
    runs = [analysis.read_run(model_dir) for model_dir in FLAGS.runs]
    figure = analysis.plot_error_curves(runs, FLAGS.title, FLAGS.max_error)
    analysis.save_figure_and_table(figure, FLAGS.output, analysis.errors_table(runs), FLAGS.table)


def main():
    """`keras-resnet-compare`, and `python train/compare.py`."""
    run_program(__name__, cli.absl_main(run))
