"""Convert torchvision ResNet state dicts into keras_resnet weights files.

    python -m keras_resnet.convert torchvision resnet50.pth resnet50.weights.h5 [--depth 50]

The depth (18, 34, 50, 101, 152) is read from the state dict; `--depth` makes a wrong one an
error. torchvision's ResNet-50/101/152 stride in the 3x3 conv ("v1.5"), so they load into
`stride_in="3x3"`; its BatchNorm epsilon is 1e-5. The output is keras_resnet's `.weights.h5`
whose record (see `keras_resnet.record`) says both, preprocessing mode "torch", ImageNet's
class names, and, for torchvision's published files (recognised by their file names,
`keras_resnet.published`), their evaluation view and reported accuracy:

    model = keras_resnet.ResNet50(weights="resnet50.weights.h5")   # the v1.5 net, no other argument

torch is needed only to read the `.pth` file (`pip install keras-resnet[interop]`).
"""

from __future__ import annotations

import argparse
import os
import re

import numpy as np

from keras_resnet import published, specs, weights
from keras_resnet.builders import build
from keras_resnet.record import Record

TORCHVISION_BN_EPSILON = 1e-5
TORCHVISION_CROP = 224
SOURCES = ("torchvision",)

_BLOCK_MODULE = re.compile(r"layer(\d)\.(\d+)\.(?:(conv|bn)(\d)|downsample\.([01]))")
# torchvision module -> keras_resnet layer, for the modules outside the residual blocks.
_TOP_MODULES = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
# torchvision parameter -> Keras variable, by module kind.
_BN_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_DENSE_VARIABLES = {"weight": "kernel", "bias": "bias"}


def torchvision_depth(state_dict):
    """The Table 1 depth of a torchvision ResNet state dict, from its block names."""
    blocks = {}
    for key in state_dict:
        match = _BLOCK_MODULE.fullmatch(key.rpartition(".")[0])
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
    if "conv1.weight" not in state_dict or "fc.weight" not in state_dict or sorted(blocks) != [1, 2, 3, 4]:
        raise ValueError("not a torchvision ResNet state dict: conv1, layer1..layer4 and fc are needed")
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    found = (kind, tuple(blocks[stage] for stage in sorted(blocks)))
    for depth, row in specs.IMAGENET_DEPTHS.items():
        if row == found:
            return depth
    allowed = ", ".join(f"{depth}: {kind} {blocks}" for depth, (kind, blocks) in specs.IMAGENET_DEPTHS.items())
    raise ValueError(f"state dict has {found[0]} blocks {found[1]}, which is no ResNet of Table 1; allowed: {allowed}")


def _keras_layer(module):
    """keras_resnet's layer for a torchvision module: "layer2.0.downsample.1" -> "conv3_block1_0_bn"."""
    if module in _TOP_MODULES:
        return _TOP_MODULES[module]
    match = _BLOCK_MODULE.fullmatch(module)
    if not match:
        raise ValueError(f"state dict module {module!r} is not part of a torchvision ResNet")
    stage, block, kind, index, downsample = match.groups()
    prefix = f"conv{int(stage) + 1}_block{int(block) + 1}"
    if downsample is not None:
        return f"{prefix}_0_{'conv' if downsample == '0' else 'bn'}"
    return f"{prefix}_{index}_{kind}"


def _keras_value(value):
    """torch layouts -> Keras: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value.T if value.ndim == 2 else value


def torchvision_arrays(state_dict):
    """{keras_resnet layer: {variable: value}} of a torchvision ResNet state dict (NumPy values)."""
    arrays = {}
    for key, value in state_dict.items():
        module, _, parameter = key.rpartition(".")
        if parameter == "num_batches_tracked":
            continue
        layer = _keras_layer(module)
        variable = (_BN_VARIABLES if layer.endswith("_bn") else _DENSE_VARIABLES)[parameter]
        arrays.setdefault(layer, {})[variable] = np.ascontiguousarray(_keras_value(np.asarray(value)))
    return arrays


def convert_torchvision(state_dict, depth=None):
    """(model, depth): a keras_resnet model holding a torchvision ResNet state dict (name -> NumPy array).

    `depth`, when given, must be the state dict's own: a wrong one is a ValueError.
    """
    found = torchvision_depth(state_dict)
    if depth is not None and depth != found:
        raise ValueError(f"depth={depth!r}, but the state dict is a ResNet-{found}: pass depth={found} or another file")
    spec = specs.imagenet_spec(found)
    model = build(
        spec,
        stride_in="3x3" if spec.block == "bottleneck" else "1x1",
        bn_epsilon=TORCHVISION_BN_EPSILON,
        classes=int(np.shape(state_dict["fc.weight"])[0]),
        input_shape=(TORCHVISION_CROP, TORCHVISION_CROP, 3),
    )
    weights.assign(model, torchvision_arrays(state_dict), "torchvision state dict")
    return model, found


def torchvision_record(architecture, file_name):
    """The record of converted torchvision weights: a published file's entry (evaluation view,
    accuracy, recipe) when `file_name` is one, else preprocessing "torch" and the file's name."""
    entry = published.by_file_name(file_name)
    if entry is not None and entry.depth == architecture.spec.depth:
        return weights.published_record(entry, architecture=architecture)
    names = weights.imagenet_class_names() if architecture.classes == 1000 else None
    return Record(architecture, preprocess_mode="torch", class_names=names, weights={"source": file_name})


def save_converted(model, path, file_name):
    """Write a converted model as keras_resnet's `.weights.h5` with its torchvision record."""
    model.record = torchvision_record(model.record.architecture, file_name)
    weights.save(model, path)
    return model.record


def read_torch_state_dict(path):
    """{name: NumPy array} from a torchvision `.pth` file (tensors only, no pickled code)."""
    try:
        import torch
    except ModuleNotFoundError as error:
        raise ValueError(
            f"reading {path!r} needs torch, an optional dependency: pip install 'keras-resnet[interop]'"
        ) from error
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} does not exist: pass a torchvision ResNet .pth state dict")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.detach().numpy() for key, value in state_dict.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_resnet.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=SOURCES, help="where the state dict comes from")
    parser.add_argument("input", help="the .pth state dict")
    parser.add_argument("output", help="the keras_resnet .weights.h5 to write")
    parser.add_argument("--depth", type=int, choices=sorted(specs.IMAGENET_DEPTHS), help="the depth the file must have")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error(f"output={args.output!r} must end in .weights.h5")
    from keras_resnet.scripts import user_errors

    with user_errors(args.verbose):
        model, depth = convert_torchvision(read_torch_state_dict(args.input), args.depth)
        record = save_converted(model, args.output, os.path.basename(args.input))
    parameters = sum(int(np.prod(variable.shape)) for variable in model.trainable_weights)
    known = f"; published weights {record.weights['name']}" if record.weights.get("name") else ""
    print(f"wrote ResNet-{depth} ({parameters:,} parameters) to {args.output}; preprocessing mode 'torch'{known}")


if __name__ == "__main__":
    main()
