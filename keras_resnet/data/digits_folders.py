"""Write scikit-learn's bundled digits as class folders of PNG files: a data set of "your
own images", offline, for trying the folder workflow end to end.

    python -m keras_resnet.data.digits_folders OUT [--test]

OUT/train/<zero..nine>/<n>.png (the 1,437 training digits, 32x32 greyscale); with --test
also OUT/test/<class>/<n>.png (the 360 test digits). Existing files are left alone.
"""

from __future__ import annotations

import os
import sys

import numpy as np

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits_folders(out, splits=("train",)):
    """Write the digits of `splits` as OUT/<split>/<class name>/<n>.png; returns {split: count}."""
    from PIL import Image

    from keras_resnet.data.arrays import digits_arrays

    counts = {}
    for split in splits:
        images, labels = digits_arrays(split)
        for name in CLASS_NAMES:
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = os.path.join(out, split, CLASS_NAMES[label], f"{i:04d}.png")
            if not os.path.exists(path):
                Image.fromarray(np.asarray(image[..., 0])).save(path)
        counts[split] = len(labels)
    return counts


def main(argv):
    args = [a for a in argv[1:] if a != "--test"]
    if len(args) != 1:
        sys.exit("usage: python -m keras_resnet.data.digits_folders OUT [--test]")
    counts = write_digits_folders(args[0], ("train", "test") if "--test" in argv else ("train",))
    for split, count in counts.items():
        print(f"wrote {count} {split} digits as PNG files under {os.path.join(args[0], split)}/<class>/")


if __name__ == "__main__":
    main(sys.argv)
