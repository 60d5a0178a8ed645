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


def _architecture(path):
    """(registry name, builder kwargs) of the network whose weights are at `path`."""
    from keras_resnet import saved_run
    from keras_resnet import weights as weights_lib

    if os.path.isdir(path):
        config = saved_run.read_config(path)
        kwargs = {k: v for k, v in (config.get("model_kwargs") or {}).items() if k != "input_shape"}
        return config["model"], kwargs
    if path.endswith(".keras"):
        import keras

        import keras_resnet.blocks  # noqa: F401  registers ZeroPadShortcut for deserialisation

        architecture = weights_lib.describe(keras.saving.load_model(path, compile=False))
    elif path.endswith(".weights.h5") and weights_lib.read_metadata(path) is not None:
        architecture = weights_lib.Architecture.from_json(weights_lib.read_metadata(path)["architecture"])
    else:
        raise ValueError(
            f"{path!r} is not a training run dir, a .keras file or a keras_resnet .weights.h5 with metadata"
        )
    if not architecture.include_top:
        raise ValueError(f"{path!r} holds a network without its classifier: nothing to evaluate")
    kwargs = {
        "shortcut": architecture.shortcut,
        "stride_in": architecture.stride_in,
        "bn_epsilon": architecture.bn_epsilon,
        "classes": architecture.classes,
    }
    return architecture.name, kwargs


def load_classifier(path, preprocess_mode=None, mean=None):
    """The network at `path` (run dir, .keras, .weights.h5) for any image size, with the
    preprocessing its weights record (or `preprocess_mode`/`mean` where they record none)."""
    from keras_resnet import saved_run
    from keras_resnet import weights as weights_lib
    from keras_resnet.builders import get_builder

    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist: give a training run dir, a .keras or a .weights.h5 file")
    name, kwargs = _architecture(path)
    model = get_builder(name)(weights=path, input_shape=(None, None, 3), **kwargs)
    mode, recorded_mean = weights_lib.preprocessing(path)
    mode, mean = preprocess_mode or mode, mean if mean is not None else recorded_mean
    if mode is None:
        raise ValueError(
            f"{path!r} does not record its preprocessing: pass preprocess_mode (caffe, torch, tf, pixel_mean)"
        )
    dataset = image_size = None
    if os.path.isdir(path):  # a run evaluates on its own data set, at its own crop size
        config = saved_run.read_config(path)
        dataset, image_size = config.get("dataset"), config["model_kwargs"]["input_shape"][0]
    return Classifier(model, name, mode, mean, dataset, image_size)


def default_split(dataset, data_dir=None):
    """validation for ImageNet-like sets (the paper reports on it), test for 32x32 sets."""
    from keras_resnet import data

    return "test" if data.dataset_info(dataset, data_dir).small else "validation"


def _top_k_wrong(scores, labels, k):
    """Images whose label is not among the k best scores (ties counted as in, as tf.math.in_top_k)."""
    import tensorflow as tf

    return int(np.sum(~tf.math.in_top_k(tf.constant(labels, tf.int32), tf.constant(scores, tf.float32), k).numpy()))


def _mean_for(view, mean):
    """Multi-scale images vary in size: a mean image becomes its per-channel mean."""
    if view == "multiscale" and mean is not None and np.size(mean) != 3:
        return np.asarray(mean, dtype=np.float32).mean(axis=(0, 1))
    return mean


def view_datasets(
    classifier, dataset, split, view, *, data_dir=None, batch_size=100, image_size=None, scales=MULTI_SCALES
):
    """The tf.data datasets of one view: one dataset, or one per scale for multiscale."""
    from keras_resnet import data

    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not one of {VIEWS}")
    common = dict(
        data_dir=data_dir,
        preprocess_mode=classifier.preprocess_mode,
        mean=_mean_for(view, classifier.mean),
        image_size=image_size or classifier.image_size,
    )
    if view != "multiscale":
        return [data.make_eval_input_fn(dataset, split, batch_size, view=view, **common)(None)]
    return [data.make_eval_input_fn(dataset, split, 1, view=view, scale=s, **common)(None) for s in scales]


def evaluate(classifier, dataset, split="validation", view="center", **kwargs):
    """{"top1_error", "top5_error", "count"} of `classifier` on a split, with `view`'s crops
    averaged per image (softmax scores, as the paper averages)."""
    import tensorflow as tf

    predict = tf.function(lambda x: classifier.model(x, training=False), reduce_retracing=True)
    datasets = view_datasets(classifier, dataset, split, view, **kwargs)
    top1 = top5 = count = 0
    for batches in tf.data.Dataset.zip(tuple(datasets)):
        scores, labels = 0.0, batches[0][1].numpy()
        for images, _ in batches:  # one entry per scale; crops as an axis after the batch
            shape = tf.shape(images)
            crops = tf.reshape(images, tf.concat([[-1], shape[-3:]], 0))
            probabilities = tf.reshape(predict(crops), [shape[0], -1, classifier.model.output_shape[-1]])
            scores += tf.reduce_mean(probabilities, axis=1).numpy() / len(batches)
        k = min(5, scores.shape[1])
        top1 += _top_k_wrong(scores, labels, 1)
        top5 += _top_k_wrong(scores, labels, k)
        count += len(labels)
    return {"top1_error": top1 / max(count, 1), "top5_error": top5 / max(count, 1), "count": count}


def error_table(rows):
    """Rows (model, view, metrics) as the paper's Table 3: top-1 and top-5 error in %."""
    lines = [f"{'model':<24}{'testing':<14}{'top-1 err.':>12}{'top-5 err.':>12}{'images':>9}"]
    for model, view, metrics in rows:
        lines.append(
            f"{model:<24}{VIEW_TITLES[view]:<14}{100 * metrics['top1_error']:>12.2f}{100 * metrics['top5_error']:>12.2f}"
            f"{metrics['count']:>9}"
        )
    return "\n".join(lines)
