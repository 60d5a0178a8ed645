"""torchvision -> keras_resnet conversion, compared with torchvision's own forward pass.

The comparisons need torch and torchvision, which `make test-interop` installs into a
separate environment (.venv-interop); in the plain `make test` they skip with that message.
"""

import sys

import numpy as np
import pytest

# Triton (torch's GPU kernel compiler, loaded by torchvision.ops) crashes the process when
# TensorFlow's LLVM is already loaded; these CPU comparisons do not need it.
sys.modules.setdefault("triton", None)
try:
    import torch
    import torchvision
except ImportError:
    torch = torchvision = None

import keras_resnet  # noqa: E402  (after the torch import, see above)
from keras_resnet import convert, weights  # noqa: E402

needs_torch = pytest.mark.skipif(
    torch is None,
    reason="torch/torchvision are not installed here: run `make test-interop` for the torchvision comparisons",
)
SIZE = 64


def torchvision_like_keys(kind, blocks):
    """Parameter names of a torchvision ResNet state dict with this block layout (NumPy zeros)."""
    keys = ["conv1.weight", "bn1.weight", "fc.weight", "fc.bias"]
    convs = 3 if kind == "bottleneck" else 2
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            keys += [f"layer{stage}.{block}.conv{j}.weight" for j in range(1, convs + 1)]
    return {key: np.zeros((1000, 512) if key == "fc.weight" else (1,), "float32") for key in keys}


def test_unknown_block_layout_names_the_allowed_depths():
    with pytest.raises(ValueError, match=r"\(3, 4, 5, 3\).*18: basic \(2, 2, 2, 2\)"):
        convert.convert_torchvision(torchvision_like_keys("basic", (3, 4, 5, 3)))


def test_not_a_resnet_state_dict():
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        convert.torchvision_depth({"features.0.weight": np.zeros(1)})


def test_wrong_depth_is_refused_before_building():
    with pytest.raises(ValueError, match="depth=34.*ResNet-18"):
        convert.convert_torchvision(torchvision_like_keys("basic", (2, 2, 2, 2)), depth=34)


def randomized_torchvision(depth, seed):
    """A torchvision ResNet in eval mode with random BN statistics and affine parameters."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
        model.fc.bias.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{depth: (torchvision model, converted .weights.h5 path)} written by the command line."""
    directory = tmp_path_factory.mktemp("converted")
    result = {}
    for depth in (18, 50):
        model = randomized_torchvision(depth, depth)
        pth, out = str(directory / f"resnet{depth}.pth"), str(directory / f"resnet{depth}.weights.h5")
        torch.save(model.state_dict(), pth)
        convert.main(["torchvision", pth, out, "--depth", str(depth)])
        result[depth] = (model, out, pth)
    return result


@needs_torch
@pytest.mark.parametrize("depth", [18, 50])
def test_converted_model_equals_torchvision(converted, depth, rel_diff):
    reference, path, _ = converted[depth]
    model = getattr(keras_resnet, f"ResNet{depth}")(
        weights=path, input_shape=(SIZE, SIZE, 3), classifier_activation=None
    )
    x = np.random.default_rng(depth).normal(0.0, 1.0, (2, SIZE, SIZE, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(model(x))
    difference = rel_diff(got, want)
    print(f"resnet{depth}: relative difference to torchvision {difference:.2e}")
    assert difference <= 1e-5


@needs_torch
def test_metadata_of_a_converted_file(converted):
    _, path, _ = converted[50]
    assert weights.preprocessing(path) == ("torch", None)
    assert weights.build_kwargs(path) == {"shortcut": "B", "stride_in": "3x3", "bn_epsilon": 1e-5}
    assert keras_resnet.ResNet50(weights=path).record.architecture.stride_in == "3x3"
    with pytest.raises(ValueError, match="stride_in='3x3'.*stride_in='1x1'"):
        keras_resnet.ResNet50(weights=path, stride_in="1x1")


@needs_torch
def test_command_line_refuses_the_wrong_depth(converted, tmp_path):
    _, _, pth = converted[18]
    with pytest.raises(ValueError, match="depth=34.*ResNet-18"):
        convert.main(["torchvision", pth, str(tmp_path / "out.weights.h5"), "--depth", "34"])
    assert not (tmp_path / "out.weights.h5").exists()


@needs_torch
def test_command_line_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        convert.main(["torchvision", str(tmp_path / "absent.pth"), str(tmp_path / "out.weights.h5")])
