"""Top-1/top-5 error of a trained network with the paper's test views, as in Table 3.

    python train/evaluate.py --model_dir runs/demo                      # digits: centre view
    python train/evaluate.py --model_dir runs/resnet50 --data_dir ~/data/imagenet \
        --views center,10crop,multiscale
    python train/evaluate.py --weights resnet50.weights.h5 --dataset imagenet --data_dir DIR
"""

from absl import app, flags

from keras_resnet.training import cli

flags.DEFINE_string(
    "model_dir", None, "Training run dir to evaluate (its latest checkpoint, its preprocessing, its data set)."
)
flags.DEFINE_string("weights", None, "Or a .keras file / keras_resnet .weights.h5 to evaluate.")
flags.DEFINE_string("dataset", None, "Data set to evaluate on; default: the run's own.")
flags.DEFINE_string("data_dir", None, "Where the data set lives (as for training).")
flags.DEFINE_string("split", None, "Split to evaluate: default validation for ImageNet-like sets, test for 32x32 sets.")
flags.DEFINE_list(
    "views", ["center"], "Test views: center, 10crop, multiscale (the last two need ImageNet-size images)."
)
flags.DEFINE_list("scales", ["224", "256", "384", "480", "640"], "Shorter sides of the multiscale view (as Table 4).")
flags.DEFINE_integer("batch_size", 100, "Images per batch (multiscale uses 1).")
flags.DEFINE_integer(
    "image_size", None, "Crop size of the center and 10crop views; default: the run's, or the data set's."
)
flags.DEFINE_enum(
    "preprocess_mode",
    None,
    ["caffe", "torch", "tf", "pixel_mean"],
    "Preprocessing, for weights that do not record theirs.",
)
FLAGS = flags.FLAGS


def run():
    from keras_resnet import evaluation

    if (FLAGS.model_dir is None) == (FLAGS.weights is None):
        raise ValueError("give exactly one of --model_dir and --weights")
    classifier = evaluation.load_classifier(FLAGS.model_dir or FLAGS.weights, FLAGS.preprocess_mode)
    dataset = FLAGS.dataset or classifier.dataset
    if dataset is None:
        raise ValueError("--weights records no data set: pass --dataset")
    split = FLAGS.split or evaluation.default_split(dataset, FLAGS.data_dir)
    rows = []
    for view in FLAGS.views:
        metrics = evaluation.evaluate(
            classifier,
            dataset,
            split,
            view,
            data_dir=FLAGS.data_dir,
            batch_size=FLAGS.batch_size,
            image_size=FLAGS.image_size,
            scales=tuple(int(s) for s in FLAGS.scales),
        )
        rows.append((classifier.name, view, metrics))
    print(f"{dataset} {split}:")
    print(evaluation.error_table(rows))


if __name__ == "__main__":
    app.run(cli.absl_main(run))
