"""Real images for int8 calibration and the accuracy check, read through keras_resnet.data.

The data layer's evaluation view (the whole image for small sets; shorter side 256 and the
centre crop for ImageNet-like sets) with a zero mean subtracted, i.e. no preprocessing: the
exported graphs take RGB in 0..255 and preprocess inside.
"""

from __future__ import annotations

import numpy as np


def dataset_images(name, split, count, *, data_dir=None, image_size=None, batch_size=100):
    """(float32 [n, H, W, 3] in 0..255, int32 [n]): the first `count` examples of `split` in
    the data layer's deterministic order (n < count when the split is smaller)."""
    from keras_resnet import data

    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count={count!r} must be an integer >= 1")
    input_fn = data.make_eval_input_fn(
        name,
        split,
        min(batch_size, count),
        data_dir=data_dir,
        preprocess_mode="pixel_mean",
        mean=np.zeros(3, dtype="float32"),
        image_size=image_size,
    )
    images, labels, seen = [], [], 0
    for batch_images, batch_labels in input_fn(None):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        seen += len(labels[-1])
        if seen >= count:
            break
    if not images:
        raise ValueError(f"{name!r} split {split!r} has no images")
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def source_images(source, calibration_count, eval_count):
    """(calibration images, test images, test labels) of the data set `source` was trained on,
    for reduced-precision copies; a ValueError when the source names no data set."""
    if source.dataset is None:
        raise ValueError("int8 needs real calibration images: pass --dataset (a run dir names its own)")
    kwargs = {"data_dir": source.data_dir, "image_size": source.image_size[0]}
    calibration_images, _ = dataset_images(source.dataset, "train", calibration_count, **kwargs)
    eval_images, eval_labels = dataset_images(source.dataset, "test", eval_count, **kwargs)
    return calibration_images, eval_images, eval_labels
