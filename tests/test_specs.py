"""The spec tables against Table 1 and section 4.2 of the paper."""

import pytest

from keras_resnet import specs


@pytest.mark.parametrize(
    "depth, block, blocks",
    [
        (18, "basic", (2, 2, 2, 2)),
        (34, "basic", (3, 4, 6, 3)),
        (50, "bottleneck", (3, 4, 6, 3)),
        (101, "bottleneck", (3, 4, 23, 3)),
        (152, "bottleneck", (3, 8, 36, 3)),
    ],
)
def test_imagenet_rows_are_table_1(depth, block, blocks):
    spec = specs.imagenet_spec(depth)
    assert (spec.block, spec.blocks_per_stage, spec.widths) == (block, blocks, (64, 128, 256, 512))
    assert spec.depth == depth


@pytest.mark.parametrize("depth, n", [(20, 3), (32, 5), (44, 7), (56, 9), (110, 18), (1202, 200)])
def test_cifar_depth_is_6n_plus_2(depth, n):
    assert specs.cifar_n_for_depth(depth) == n
    spec = specs.cifar_spec(n)
    assert spec.depth == depth
    assert spec.widths == (16, 32, 64)
    assert spec.downsampling == 4


@pytest.mark.parametrize("depth", [35, 0, 200])
def test_unknown_imagenet_depth_names_allowed(depth):
    with pytest.raises(ValueError, match=rf"depth={depth}.*\[18, 34, 50, 101, 152\]"):
        specs.imagenet_spec(depth)


@pytest.mark.parametrize("depth", [21, 2, 7])
def test_depth_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match=rf"depth={depth}.*6n\+2"):
        specs.cifar_n_for_depth(depth)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_cifar_n_must_be_positive_integer(n):
    with pytest.raises(ValueError, match="n="):
        specs.cifar_spec(n)


def test_spec_checks_its_fields():
    with pytest.raises(ValueError, match="block='wide'.*basic"):
        specs.NetSpec("wide", (1,), (8,), "cifar")
    with pytest.raises(ValueError, match="stem='mnist'"):
        specs.NetSpec("basic", (1,), (8,), "mnist")
    with pytest.raises(ValueError, match="one entry per stage"):
        specs.NetSpec("basic", (1, 1), (8,), "cifar")
