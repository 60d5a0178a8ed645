"""Top-1 and top-5 error with the paper's test views (section 3.4), printed as Table 3.

    center      one view: the image itself for 32x32 sets, else the centre 224 crop of
                the image resized to 256
    10crop      four corners and centre of that image, and their flips; the softmax
                scores averaged ("10-crop testing", Tables 2 and 3)
    multiscale  the fully-convolutional net on the whole image with shorter side in
                {224, 256, 384, 480, 640}, and its flip; scores averaged (Table 4)

The models are built at any input size (input_shape=(None, None, 3)) from a training run
dir, a `.keras` file or a keras_resnet `.weights.h5`, with their softmax head.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

VIEWS = ("center", "10crop", "multiscale")
VIEW_TITLES = {"center": "centre crop", "10crop": "10-crop", "multiscale": "multi-scale"}
MULTI_SCALES = (224, 256, 384, 480, 640)


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model that takes any image size, with what its weights expect of an image."""

    model: object
    name: str
    preprocess_mode: str | None
    mean: np.ndarray | None
    dataset: str | None = None
    image_size: int | None = None
    class_names: tuple | None = None


def load_classifier(path, preprocess_mode=None, mean=None):
    """The network at `path` (run dir, .keras, .weights.h5, keras.applications .h5) built for
    any image size by `keras_resnet.load`, with the preprocessing and class names its record
    holds (`preprocess_mode`/`mean` only where it records none); a run dir also gives its
    data set."""
    import tensorflow as tf

    import keras_resnet
    from keras_resnet import run_dir

    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path!r} does not exist: give a training run dir, a .keras or a .weights.h5 file")
    loaded = keras_resnet.load(path, input_shape=(None, None, 3), preprocess_mode=preprocess_mode, mean=mean)
    if not loaded.record.architecture.include_top:
        raise ValueError(f"{path!r} holds a network without its classifier: nothing to evaluate")
    dataset = run_dir.training_config(path).get("dataset") if tf.io.gfile.isdir(path) else None
    return Classifier(
        loaded.model,
        loaded.name,
        loaded.preprocess_mode,
        loaded.mean,
        dataset,
        loaded.record.eval_crop,
        loaded.class_names,
    )


def split_of(info, val_split=0.0):
    """The split a run evaluates, for data of `info` (a `keras_resnet.data.DatasetInfo`): the
    part of train held out with val_split, the test set of in-memory sets, else the
    validation set (class folders: validation, else test, else None: no evaluation). The
    trainer, evaluate.py and the exporters' accuracy checks all evaluate this split."""
    if val_split:
        return "validation"
    if info.small:
        return "test"
    if info.source == "folders":
        return next((split for split in ("validation", "test") if split in info.num_examples), None)
    return "validation"


def default_split(dataset, data_dir=None, val_split=0.0):
    """`split_of` the data set, a ValueError where it has none to evaluate."""
    from keras_resnet import data

    split = split_of(data.dataset_info(dataset, data_dir, val_split=val_split), val_split)
    if split is None:
        raise ValueError(
            f"{data_dir} has neither validation/ nor test/ folders and the run held nothing out (--val_split): "
            "give --split train, or train with --val_split"
        )
    return split


def held_out_files(data_dir, val_split):
    """The files val_split holds out of class folders, relative to data_dir (else None)."""
    from keras_resnet import data

    if not val_split or not data_dir or data.detect_source(data_dir) != "folders":
        return None
    found = data.folder_split(data_dir, "validation", val_split)
    return [os.path.relpath(path, data_dir) for path in found.paths]


def run_data(model_dir):
    """(dataset, data_dir, val_split) a training run dir was trained on, from its config.json;
    with val_split the held-out files must still be those the run listed."""
    from keras_resnet import run_dir

    training = run_dir.training_config(model_dir)
    data_dir, val_split = training.get("data_dir"), training.get("val_split") or 0.0
    run_dir.check_held_out(model_dir, held_out_files(data_dir, val_split))
    return training.get("dataset"), data_dir, val_split


def _top_k_wrong(scores, labels, k):
    """Images whose label is not among the k best scores (ties counted as in, as tf.math.in_top_k)."""
    import tensorflow as tf

    return int(np.sum(~tf.math.in_top_k(tf.constant(labels, tf.int32), tf.constant(scores, tf.float32), k).numpy()))


def _mean_for(view, mean):
    """Multi-scale images vary in size: a mean image becomes its per-channel mean."""
    if view == "multiscale" and mean is not None and np.size(mean) != 3:
        return np.asarray(mean, dtype=np.float32).mean(axis=(0, 1))
    return mean


def scales_for(image_size, scales=MULTI_SCALES):
    """Table 4's shorter sides for a net trained at `image_size` (224: 224..640; 32: 32..91)."""
    return tuple(round(s * image_size / MULTI_SCALES[0]) for s in scales)


def view_datasets(
    classifier,
    dataset,
    split,
    view,
    *,
    data_dir=None,
    batch_size=100,
    image_size=None,
    scales=None,
    val_split=0.0,
):
    """The tf.data datasets of one view: one dataset, or one per scale for multiscale (default
    scales: `scales_for` the crop size)."""
    from keras_resnet import data

    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not one of {VIEWS}")
    common = dict(
        data_dir=data_dir,
        preprocess_mode=classifier.preprocess_mode,
        mean=_mean_for(view, classifier.mean),
        image_size=image_size or classifier.image_size,
        val_split=val_split,
    )
    scales = scales or scales_for(common["image_size"] or MULTI_SCALES[0])
    if view != "multiscale":
        return [data.make_eval_input_fn(dataset, split, batch_size, view=view, **common)(None)]
    return [data.make_eval_input_fn(dataset, split, 1, view=view, scale=s, **common)(None) for s in scales]


def class_map(recorded, given, where="the network"):
    """The network's class index of each of the data's classes (an int array), or None where
    the lists are the same (or the network records none). The data's classes must be the
    network's, or some of them (mapped by name); another list is a ValueError naming both."""
    if recorded is None or given is None or tuple(recorded) == tuple(given):
        return None
    missing = [name for name in given if name not in recorded]
    if missing:
        raise ValueError(
            f"the data's classes ({len(given)}: {_names(given)}) are not those {where} was trained on "
            f"({len(recorded)}: {_names(recorded)}); {len(missing)} unknown to it, e.g. {missing[:3]}: evaluate it "
            "on data of its classes (or some of them)"
        )
    index = {name: i for i, name in enumerate(recorded)}
    return np.array([index[name] for name in given], dtype=np.int64)


def _names(names, shown=8):
    names = list(names)
    return repr(names) if len(names) <= shown else f"{names[: shown - 2]}...{names[-2:]}"


def evaluate(classifier, dataset, split="validation", view="center", **kwargs):
    """{"top1_error", "top5_error", "count", "confusion"} of `classifier` on a split, with
    `view`'s crops averaged per image (softmax scores, as the paper averages). top5_error
    is None for 5 classes or fewer (it would be 0); confusion[true, predicted] counts images
    by the network's classes. The data's classes are checked against the network's
    (`class_map`). A split with no readable image is a ValueError."""
    import tensorflow as tf

    from keras_resnet import data

    info = data.dataset_info(dataset, kwargs.get("data_dir"), val_split=kwargs.get("val_split", 0.0))
    mapping = class_map(classifier.class_names, info.class_names, f"{classifier.name}")
    predict = tf.function(lambda x: classifier.model(x, training=False), reduce_retracing=True)
    datasets = view_datasets(classifier, dataset, split, view, **kwargs)
    classes = classifier.model.output_shape[-1]
    confusion = np.zeros((classes, classes), np.int64)
    top1 = top5 = count = 0
    for batches in tf.data.Dataset.zip(tuple(datasets)):
        scores, labels = 0.0, batches[0][1].numpy()
        labels = labels if mapping is None else mapping[labels]
        for images, _ in batches:  # one entry per scale; crops as an axis after the batch
            shape = tf.shape(images)
            crops = tf.reshape(images, tf.concat([[-1], shape[-3:]], 0))
            probabilities = tf.reshape(predict(crops), [shape[0], -1, classifier.model.output_shape[-1]])
            scores += tf.reduce_mean(probabilities, axis=1).numpy() / len(batches)
        k = min(5, scores.shape[1])
        top1 += _top_k_wrong(scores, labels, 1)
        top5 += _top_k_wrong(scores, labels, k)
        count += len(labels)
        np.add.at(confusion, (labels, np.argmax(scores, axis=1)), 1)
    if not count:
        raise ValueError(f"{dataset} {split}: no image could be read, nothing to evaluate")
    top5_error = top5 / count if classes > 5 else None
    return {"top1_error": top1 / count, "top5_error": top5_error, "count": count, "confusion": confusion}


def error_table(rows):
    """Rows (model, view, metrics) as the paper's Table 3: top-1 and top-5 error in %."""
    lines = [f"{'model':<24}{'testing':<14}{'top-1 err.':>12}{'top-5 err.':>12}{'images':>9}"]
    for model, view, metrics in rows:
        top5 = "-" if metrics["top5_error"] is None else f"{100 * metrics['top5_error']:.2f}"
        lines.append(
            f"{model:<24}{VIEW_TITLES[view]:<14}{100 * metrics['top1_error']:>12.2f}{top5:>12}{metrics['count']:>9}"
        )
    return "\n".join(lines)


def save_confusion_png(confusion, path, class_names=None, title="confusion matrix"):
    """The confusion matrix as a PNG (rows true, columns predicted; each row as a fraction of
    its class, the count written in each cell up to 30 classes); needs matplotlib."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_resnet import run_dir

    names = [str(n) for n in (class_names or range(len(confusion)))]
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.35 * len(names), 30)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(names)) if len(names) <= 60 else []
    axes.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90)
    axes.set_yticks(list(ticks), [names[i] for i in ticks])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(confusion):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    run_dir.atomic_write_bytes(path, buffer.getvalue())  # a local path or a gs://, ram://... URL
    return path
