"""Top-1/top-5 error of a trained network with the paper's test views, as in Table 3, with
per-class accuracy and a confusion matrix (printed, and saved as a PNG in the run dir).

    python train/evaluate.py --model_dir runs/demo                      # the run's own data, split, size
    python train/evaluate.py --model_dir runs/resnet50 --views center,10crop,multiscale
    python train/evaluate.py --weights resnet50.weights.h5 --dataset imagenet --data_dir DIR
"""

from absl import flags

from keras_resnet.preprocessing import MODES
from keras_resnet.scripts import run_program
from keras_resnet.training import cli

flags.DEFINE_string(
    "model_dir",
    None,
    "Training run dir to evaluate: its latest checkpoint, preprocessing, data set, data dir, held-out split "
    "(--val_split) and image size.",
)
flags.DEFINE_string("weights", None, "Or a .keras file / keras_resnet .weights.h5 to evaluate.")
flags.DEFINE_string("dataset", None, "Data set to evaluate on; default: the run's own.")
flags.DEFINE_string("data_dir", None, "Where the data set lives (as for training); default: the run's own.")
flags.DEFINE_string(
    "split",
    None,
    "Split to evaluate; default: what the run evaluated (its held-out part with --val_split, validation for "
    "ImageNet-like sets and class folders, test for 32x32 sets).",
)
flags.DEFINE_list(
    "views", ["center"], "Test views: center, 10crop, multiscale (the last two need ImageNet-size images)."
)
flags.DEFINE_list(
    "scales",
    None,
    "Shorter sides of the multiscale view; default: Table 4's 224,256,384,480,640 scaled to the net's input size.",
)
flags.DEFINE_integer("batch_size", 100, "Images per batch (multiscale uses 1).")
flags.DEFINE_integer(
    "image_size", None, "Crop size of the center and 10crop views; default: the run's, or the data set's."
)
flags.DEFINE_enum(
    "preprocess_mode",
    None,
    list(MODES),
    "Preprocessing, for weights that do not record theirs.",
)
FLAGS = flags.FLAGS


def run():
    from keras_resnet import evaluation, run_dir
    from keras_resnet.training import analysis

    if (FLAGS.model_dir is None) == (FLAGS.weights is None):
        raise ValueError("give exactly one of --model_dir and --weights")
    classifier = evaluation.load_classifier(FLAGS.model_dir or FLAGS.weights, FLAGS.preprocess_mode)
    dataset, data_dir, val_split = evaluation.run_data(FLAGS.model_dir) if FLAGS.model_dir else (None, None, 0.0)
    if FLAGS.dataset or FLAGS.data_dir:  # another data set than the run's: its own splits
        dataset, data_dir, val_split = FLAGS.dataset or dataset, FLAGS.data_dir or data_dir, 0.0
    if dataset is None:
        raise ValueError("--weights records no data set: pass --dataset")
    split = FLAGS.split or evaluation.default_split(dataset, data_dir, val_split)
    rows, confusions = [], []
    for view in FLAGS.views:
        metrics = evaluation.evaluate(
            classifier,
            dataset,
            split,
            view,
            data_dir=data_dir,
            batch_size=FLAGS.batch_size,
            image_size=FLAGS.image_size,
            scales=tuple(int(s) for s in FLAGS.scales) if FLAGS.scales else None,
            val_split=val_split,
        )
        rows.append((classifier.name, view, metrics))
        confusions.append((view, metrics["confusion"]))
    for view, confusion in confusions:
        print(f"{dataset} {split}, {evaluation.VIEW_TITLES[view]}, per class:")
        print(analysis.class_report(confusion, classifier.class_names))
        readable = analysis.readable_confusion(confusion, classifier.class_names)
        if FLAGS.model_dir and readable is not None:
            path = run_dir.path(FLAGS.model_dir, f"confusion_{split}_{view}.png")
            title = f"{dataset} {split}, {evaluation.VIEW_TITLES[view]}"
            matrix, names = readable
            evaluation.save_confusion_png(matrix, path, names, title)
            print(f"confusion matrix: {path}")
    print(f"{dataset} {split}:")
    print(evaluation.error_table(rows))


def main():
    """`keras-resnet-evaluate`, and `python train/evaluate.py`."""
    run_program(__name__, cli.absl_main(run))
