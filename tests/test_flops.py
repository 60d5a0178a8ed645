"""Multiply-adds against Table 1's FLOPs row and the peers' published counts."""

import keras
import pytest

import keras_resnet

TABLE_1_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# torchvision's published GFLOPS of its resnet18..152, which stride in the 3x3 (v1.5).
TORCHVISION_GMACS = {18: 1.81, 34: 3.66, 50: 4.09, 101: 7.80, 152: 11.51}


@pytest.mark.parametrize("depth", sorted(TABLE_1_GMACS))
def test_multiply_adds_within_3_percent_of_table_1(depth, registered_model):
    gmacs = keras_resnet.count_flops(registered_model(f"resnet{depth}")) / 1e9
    assert gmacs == pytest.approx(TABLE_1_GMACS[depth], rel=0.03)


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_bottleneck_counts_equal_keras_applications_counted_the_same_way(depth, registered_model):
    """keras.applications' nets differ only by conv biases, which are additions, not MACs."""
    peer = getattr(keras.applications, f"ResNet{depth}")(weights=None)
    assert keras_resnet.count_flops(registered_model(f"resnet{depth}")) == keras_resnet.count_flops(peer)


@pytest.mark.parametrize("depth", sorted(TORCHVISION_GMACS))
def test_v1_5_counts_match_torchvision(depth):
    model = keras_resnet.get_builder(f"resnet{depth}")(stride_in="3x3")
    assert keras_resnet.count_flops(model) / 1e9 == pytest.approx(TORCHVISION_GMACS[depth], abs=0.006)


def test_plain_34_costs_what_resnet_34_a_costs():
    assert keras_resnet.count_flops(keras_resnet.Plain34()) == keras_resnet.count_flops(
        keras_resnet.ResNet34(shortcut="A")
    )


def test_count_at_another_input_size_scales_with_area():
    headless = keras_resnet.ResNet18(include_top=False)
    at_224 = keras_resnet.count_flops(headless, input_shape=(224, 224, 3))
    at_448 = keras_resnet.count_flops(headless, input_shape=(448, 448, 3))
    assert at_448 == 4 * at_224


def test_unknown_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown size.*input_shape"):
        keras_resnet.count_flops(keras_resnet.ResNet18(include_top=False))
