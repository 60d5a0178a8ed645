"""The published ImageNet weights keras_resnet loads or converts, with what their publishers say.

As torchvision lists its weights (an enum whose entries carry `transforms()` and `meta`), each
entry here says where the file comes from, the preprocessing and evaluation view (shorter side
resized, centre crop) its accuracy was measured with, the top-1/top-5 accuracy in % its
publisher reports on ImageNet's validation set (single centre crop), and the training recipe.
The figures are the publishers' own: keras.applications' table (keras.io/api/applications)
and torchvision's `ResNet*_Weights` meta.

    python -m keras_resnet.weights --list

keras.applications' files load by `weights="imagenet"`; torchvision's load after
`python -m keras_resnet.convert torchvision FILE.pth OUT.weights.h5`, which recognises these
files by name and records their entry.
"""

from __future__ import annotations

import dataclasses

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
TORCH_ORIGIN = "https://download.pytorch.org/models/"
TORCH_V1_RECIPE = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
TORCH_V2_RECIPE = "https://github.com/pytorch/vision/issues/3995#new-recipe"
KERAS_RECIPE = (
    "the paper's Caffe models (He et al. 2015, github.com/KaimingHe/deep-residual-networks), "
    "ported by keras.applications"
)


# keras.applications' ResNet v1 files as keras.applications publishes them (its resnet.py's
# BASE_WEIGHTS_PATH and WEIGHTS_HASHES, which Keras exports no public name for): depth ->
# md5 of the file with the classifier, md5 of the file without (`_notop`).
KERAS_FILE_HASHES = {
    50: ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    152: ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}


def keras_file_name(depth, include_top):
    """The published file name of keras.applications' ResNet-`depth` (its cache name too)."""
    return f"resnet{depth}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
    """One published set of ImageNet weights and its publisher's figures."""

    name: str
    depth: int
    publisher: str
    source: str
    preprocess_mode: str
    stride_in: str
    bn_epsilon: float
    eval_resize: int
    eval_crop: int
    top1: float
    top5: float
    recipe: str

    def meta(self):
        """The entry as a record's "weights" object (what the exports carry)."""
        return dataclasses.asdict(self)


def _keras(depth, top1, top5):
    return PublishedWeights(
        f"keras.applications/resnet{depth}",
        depth,
        "keras.applications",
        KERAS_ORIGIN + keras_file_name(depth, include_top=True),
        "caffe",
        "1x1",
        1.001e-5,
        256,
        224,
        top1,
        top5,
        KERAS_RECIPE,
    )


def _torch(depth, version, file, resize, top1, top5):
    return PublishedWeights(
        f"torchvision/resnet{depth}.IMAGENET1K_V{version}",
        depth,
        "torchvision",
        TORCH_ORIGIN + file,
        "torch",
        "3x3" if depth >= 50 else "1x1",
        1e-5,
        resize,
        224,
        top1,
        top5,
        TORCH_V1_RECIPE if version == 1 else TORCH_V2_RECIPE,
    )


PUBLISHED = (
    _keras(50, 74.9, 92.1),
    _keras(101, 76.4, 92.8),
    _keras(152, 76.6, 93.1),
    _torch(18, 1, "resnet18-f37072fd.pth", 256, 69.758, 89.078),
    _torch(34, 1, "resnet34-b627a593.pth", 256, 73.314, 91.420),
    _torch(50, 1, "resnet50-0676ba61.pth", 256, 76.130, 92.862),
    _torch(101, 1, "resnet101-63fe2227.pth", 256, 77.374, 93.546),
    _torch(152, 1, "resnet152-394f9c45.pth", 256, 78.312, 94.046),
    _torch(50, 2, "resnet50-11ad3fa6.pth", 232, 80.858, 95.434),
    _torch(101, 2, "resnet101-cd907fc2.pth", 232, 81.886, 95.780),
    _torch(152, 2, "resnet152-f82ba261.pth", 232, 82.284, 96.002),
)


def by_name(name):
    """The entry called `name` (e.g. "torchvision/resnet50.IMAGENET1K_V2"), or a ValueError listing them."""
    for entry in PUBLISHED:
        if entry.name == name:
            return entry
    raise ValueError(f"weights {name!r} are not published here; allowed: {', '.join(e.name for e in PUBLISHED)}")


def by_file_name(file_name):
    """The torchvision entry whose published file is `file_name` (its hash-tagged name), else None."""
    for entry in PUBLISHED:
        if entry.publisher == "torchvision" and entry.source.rsplit("/", 1)[-1] == file_name:
            return entry
    return None


def keras_applications(depth):
    """keras.applications' entry for ResNet-`depth` (50, 101, 152)."""
    return by_name(f"keras.applications/resnet{depth}")


def table():
    """The entries as an aligned text table (what `python -m keras_resnet.weights --list` prints)."""
    header = f"{'name':<38}{'preprocess':<12}{'resize':>7}{'crop':>6}{'top-1':>8}{'top-5':>8}  source / recipe"
    lines = [header]
    for e in PUBLISHED:
        lines.append(
            f"{e.name:<38}{e.preprocess_mode:<12}{e.eval_resize:>7}{e.eval_crop:>6}{e.top1:>8.3f}{e.top5:>8.3f}  "
            f"{e.source}\n{'':<79}{e.recipe}"
        )
    return "\n".join(lines)
