"""The paper's views (sections 3.4, 4.2) against known pixels of synthetic images."""

import io

import numpy as np
import pytest
import tensorflow as tf
from data_writers import encode, ramp, solid
from PIL import Image

from keras_resnet.data import views

# AlexNet's ImageNet RGB PCA (Krizhevsky et al. 2012; fb.resnet.torch's transforms.lua).
ALEXNET_EIGVAL = [0.2175, 0.0188, 0.0045]
ALEXNET_EIGVEC = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]


def seed(i):
    return tf.constant([i, 17], tf.int64)


def bilinear_ramp(start, step, count):
    """Coordinates sampled by a bilinear resize at half-pixel centres, as tf.image.resize."""
    return start + (np.arange(count) + 0.5) * step - 0.5


# ---------------------------------------------------------------- evaluation views


def test_center_crop_lands_on_the_expected_pixels():
    # 512x384, shorter side 384 -> 256 (factor 2/3); the centre 224 crop is the source
    # square of side 336 at row 24, column 88.
    image = ramp(384, 512, step_x=0.5, step_y=0.5)
    view = views.center_view(tf.constant(encode(image, "PNG"))).numpy()
    assert view.shape == (224, 224, 3) and view.dtype == np.float32
    columns = np.clip(bilinear_ramp(88, 1.5, 224), 0, 511)
    rows = np.clip(bilinear_ramp(24, 1.5, 224), 0, 383)
    np.testing.assert_allclose(view[100, :, 0], np.interp(columns, np.arange(512), image[0, :, 0]), atol=0.01)
    np.testing.assert_allclose(view[:, 100, 1], np.interp(rows, np.arange(384), image[:, 0, 1]), atol=0.01)


def test_jpeg_views_crop_pillows_decode_of_the_whole_image():
    # Pillow (libjpeg's accurate DCT, chroma upsampled from the whole image) is the reference
    # decoder: a 4:2:0 JPEG's centre window (row 24, column 88, side 336) and its ten crops
    # are cut from its pixels, edge columns included, then resized.
    noisy = ramp(384, 512, step_x=0.3, step_y=0.3) + np.random.default_rng(3).integers(0, 60, (384, 512, 3))
    encoded = encode(noisy, "JPEG", quality=90, subsampling=2)
    pillow = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    view = views.center_view(tf.constant(encoded)).numpy()
    np.testing.assert_array_equal(view, tf.image.resize(pillow[24 : 24 + 336, 88 : 88 + 336], [224, 224]).numpy())
    windows = views.five_crop_windows(tf.constant([384, 512])).numpy()
    crops = np.stack([pillow[y : y + h, x : x + w] for y, x, h, w in windows])
    np.testing.assert_array_equal(
        views.ten_crop_view(tf.constant(encoded)).numpy()[:5], tf.image.resize(crops, [224, 224]).numpy()
    )


def test_ten_crop_is_four_corners_the_centre_and_their_flips():
    image = ramp(300, 400, step_x=0.6, step_y=0.8)  # R = 0.6 column, G = 0.8 row
    crops = views.ten_crop_view(tf.constant(encode(image, "PNG"))).numpy()
    assert crops.shape == (10, 224, 224, 3)
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])
    side = round(224 * 300 / 256)  # shorter side 300 -> 256: the crops are 262 source pixels
    first_column, last_column = crops[:5, 112, 0, 0] / 0.6, crops[:5, 112, -1, 0] / 0.6
    first_row, last_row = crops[:5, 0, 112, 1] / 0.8, crops[:5, -1, 112, 1] / 0.8
    left, top, centre_x, centre_y = 0, 0, (400 - side) // 2, (300 - side) // 2
    for crop, (x, y) in enumerate([(left, top), (400 - side, top), (left, 300 - side), (400 - side, 300 - side)]):
        assert abs(first_column[crop] - x) < 1.5 and abs(last_column[crop] - (x + side - 1)) < 1.5
        assert abs(first_row[crop] - y) < 1.5 and abs(last_row[crop] - (y + side - 1)) < 1.5
    assert abs(first_column[4] - centre_x) < 1.5 and abs(first_row[4] - centre_y) < 1.5


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (64, 64)])
def test_multiscale_views_keep_the_aspect_with_the_shorter_side_at_each_scale(shape):
    encoded = tf.constant(encode(ramp(*shape), "JPEG"))
    for scale in views.MULTI_SCALES:
        both = views.full_view(encoded, scale).numpy()
        assert both.shape[0] == 2 and min(both.shape[1:3]) == scale
        assert abs(both.shape[1] / both.shape[2] - shape[0] / shape[1]) < 0.01
        np.testing.assert_array_equal(both[1], both[0][:, ::-1])


def test_evaluation_views_are_deterministic():
    encoded = tf.constant(encode(ramp(200, 300), "JPEG"))
    for view in (views.center_view, views.ten_crop_view, lambda e: views.full_view(e, 224)):
        np.testing.assert_array_equal(view(encoded).numpy(), view(encoded).numpy())


# ---------------------------------------------------------------- ImageNet training views


@pytest.mark.parametrize("shape", [(2, 3), (7, 11), (40, 25), (375, 500), (500, 375), (100, 900)])
def test_scale_augmentation_shorter_side_stays_in_256_480(shape):
    windows = np.stack([views.scale_crop_window(tf.constant(shape), seed(i)).numpy()[0] for i in range(200)])
    y, x, height, width = windows.T
    assert (height == width).all() and (y >= 0).all() and (x >= 0).all()
    assert (y + height <= shape[0]).all() and (x + width <= shape[1]).all()
    implied = 224 * min(shape) / height  # the shorter side the window is the 224 crop of
    assert implied.min() >= 256 - 1e-6 and implied.max() <= 480 + 1e-6
    if min(shape) >= 375:
        assert implied.min() < 270 and implied.max() > 460  # the whole range is used


@pytest.mark.parametrize("shape", [(9, 14), (60, 40), (300, 500)])
def test_scale_augmentation_output_scale_measured_on_a_ramp(shape):
    # R rises `step` per source pixel: one output pixel spans min(shape) / S source pixels.
    step = min(200 / shape[1], 20)
    encoded = tf.constant(encode(ramp(*shape, step_x=step, step_y=0), "PNG"))
    for i in range(12):
        view = views.imagenet_train_view(encoded, seed(i), lighting=0).numpy()
        assert view.shape == (224, 224, 3) and view.min() >= 0 and view.max() <= 255
        slope = abs(np.polyfit(np.arange(64, 160), view[112, 64:160, 0], 1)[0])
        shorter_side = min(shape) * step / slope
        assert 256 * 0.97 <= shorter_side <= 480 * 1.03


def test_training_views_are_random_and_fixed_by_their_seed():
    encoded = tf.constant(encode(ramp(375, 500), "JPEG"))
    for augment in ("scale", "inception"):
        first = views.imagenet_train_view(encoded, seed(1), augment=augment).numpy()
        again = views.imagenet_train_view(encoded, seed(1), augment=augment).numpy()
        other = views.imagenet_train_view(encoded, seed(2), augment=augment).numpy()
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).mean() > 1


def test_training_view_flips_half_the_time():
    encoded = tf.constant(encode(ramp(300, 300, step_x=0.8, step_y=0), "PNG"))
    rows = [views.imagenet_train_view(encoded, seed(i), lighting=0).numpy()[5, :, 0] for i in range(60)]
    slopes = [np.sign(np.diff(row).sum()) for row in rows]
    assert 15 <= slopes.count(-1.0) <= 45 and slopes.count(-1.0) + slopes.count(1.0) == 60


def test_inception_crop_covers_8_to_100_percent_with_aspect_3_4_to_4_3():
    shape = tf.constant([375, 500])
    windows = np.stack([views.inception_crop_window(shape, seed(i)).numpy()[0] for i in range(200)])
    area = windows[:, 2] * windows[:, 3] / (375 * 500)
    aspect = windows[:, 3] / windows[:, 2]
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert aspect.min() >= 0.75 - 0.02 and aspect.max() <= 4 / 3 + 0.02
    assert (windows[:, 0] + windows[:, 2] <= 375).all() and (windows[:, 1] + windows[:, 3] <= 500).all()


def test_pca_lighting_uses_alexnets_eigenvectors_and_eigenvalues():
    np.testing.assert_array_equal(views.PCA_EIGVAL, np.float32(ALEXNET_EIGVAL))
    np.testing.assert_array_equal(views.PCA_EIGVEC, np.float32(ALEXNET_EIGVEC))
    image = tf.fill([4, 5, 3], 100.0)
    alphas = []
    for i in range(300):
        shifted = views.pca_lighting(image, seed(i), std=0.1).numpy()
        delta = shifted[0, 0] - 100.0
        np.testing.assert_allclose(shifted - 100.0, np.broadcast_to(delta, shifted.shape), atol=1e-4)
        alphas.append(np.linalg.solve(np.array(ALEXNET_EIGVEC), delta / 255.0) / np.array(ALEXNET_EIGVAL))
    spread = np.std(alphas, axis=0)
    assert np.all((spread > 0.08) & (spread < 0.12))  # alpha ~ N(0, 0.1) in each component


# ---------------------------------------------------------------- CIFAR view


def test_cifar_view_is_a_padded_crop_or_its_flip():
    image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3) + 1.0
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    found = set()
    for i in range(100):
        view = views.pad_crop_flip(tf.constant(image), seed(i)).numpy()
        assert view.shape == (32, 32, 3)
        windows = {(dy, dx): padded[dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)}
        matches = [
            (dy, dx, flip)
            for (dy, dx), window in windows.items()
            for flip in (False, True)
            if np.array_equal(view, window[:, ::-1] if flip else window)
        ]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) > 50 and {flip for _, _, flip in found} == {False, True}


def test_views_of_a_grey_image_are_grey_rgb():
    encoded = tf.constant(encode(solid(50, 70, (90, 90, 90))[..., 0], "PNG"))
    view = views.center_view(encoded).numpy()
    np.testing.assert_allclose(view, 90.0, atol=0.01)
