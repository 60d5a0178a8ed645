"""The paper's training augmentation and test-time views, as tensor functions.

ImageNet views (section 3.4) work on encoded image bytes. Each decodes the whole image
(`decode_rgb`, the one decoder of training, evaluation and serving), picks its crop windows
in source pixels (integers) and resizes only the crops (bilinear, half-pixel centres). That
is the picture "resize the whole image, then crop" gives, without resizing the pixels the
crop throws away. Grey, CMYK and alpha images all come out RGB.

Random views take a stateless seed (int [2]), so a seed fixes the view exactly.
All outputs are float32 RGB in 0..255.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

CROP = 224
RESIZE = 256
SCALE_RANGE = (256, 480)
MULTI_SCALES = (224, 256, 384, 480, 640)
CIFAR_PAD = 4
LIGHTING_STD = 0.1
# AlexNet's PCA of ImageNet RGB pixels in 0..1 (Krizhevsky et al. 2012, as in fb.resnet.torch).
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], dtype=np.float32
)
INCEPTION_AREA = (0.08, 1.0)
INCEPTION_ASPECT = (3.0 / 4.0, 4.0 / 3.0)


def split_seed(seed, num):
    """`num` independent stateless seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def decode_rgb(encoded):
    """Any JPEG/PNG/GIF/BMP as uint8 RGB [h, w, 3] (grey and CMYK converted, alpha dropped).

    JPEGs with libjpeg's accurate integer DCT, not TensorFlow's default fast one (up to ~6
    levels off): Pillow decodes the same way, bit for bit, so a client without TensorFlow
    (`keras_resnet.client_view`) gets the pixels served and evaluated.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])  # RGB whatever the file held: batches need the 3


def decode_windows(encoded, plan):
    """Crops [n, h, w, 3] uint8 of an encoded image at `plan(shape [2]) -> windows [n, 4]`
    (y, x, h, w, all the same size), cut from the whole decoded image."""
    image = decode_rgb(encoded)
    windows = plan(tf.shape(image)[:2])
    return tf.stack([image[y : y + h, x : x + w] for y, x, h, w in map(tf.unstack, tf.unstack(windows))])


def _uniform_int(seed, low, high):
    """An integer uniform in [low, high] (high >= low)."""
    return tf.random.stateless_uniform([], seed, low, high + 1, dtype=tf.int32)


def scale_crop_window(shape, seed, crop=CROP, scale_range=SCALE_RANGE):
    """[1, 4] window (y, x, side, side) of the paper's scale augmentation (section 3.4).

    Shorter side m resized to S, uniform in scale_range, then a crop x crop window at a
    uniform position: in the source a square of side crop * m / S, rounded and kept
    where crop * m / side stays in scale_range (always, for images of 2 pixels or more).
    """
    scale_seed, y_seed, x_seed = split_seed(seed, 3)
    shorter = tf.cast(tf.reduce_min(shape), tf.float32)
    scale = tf.cast(_uniform_int(scale_seed, *scale_range), tf.float32)
    smallest = tf.math.ceil(crop * shorter / scale_range[1])
    largest = tf.maximum(tf.floor(crop * shorter / scale_range[0]), smallest)
    side = tf.clip_by_value(tf.round(crop * shorter / scale), smallest, largest)
    side = tf.cast(tf.clip_by_value(side, 1.0, shorter), tf.int32)
    y = _uniform_int(y_seed, 0, shape[0] - side)
    x = _uniform_int(x_seed, 0, shape[1] - side)
    return tf.stack([[y, x, side, side]])


def inception_crop_window(shape, seed, area_range=INCEPTION_AREA, aspect_range=INCEPTION_ASPECT):
    """[1, 4] window of Inception's random-resized crop (8%..100% of the area, 3/4..4/3)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], axis=0),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([tf.concat([begin[:2], size[:2]], axis=0)])


def _eval_side(shape, crop, resize):
    """Source side of a crop x crop window after resizing the shorter side to `resize`."""
    shorter = tf.reduce_min(shape)
    return tf.clip_by_value(tf.cast(tf.round(crop * tf.cast(shorter, tf.float32) / resize), tf.int32), 1, shorter)


def center_window(shape, crop=CROP, resize=RESIZE):
    """[1, 4] window of "shorter side to `resize`, centre crop x crop", in source pixels."""
    side = _eval_side(shape, crop, resize)
    return tf.stack([[(shape[0] - side) // 2, (shape[1] - side) // 2, side, side]])


def five_crop_windows(shape, crop=CROP, resize=RESIZE):
    """[5, 4] windows: top-left, top-right, bottom-left, bottom-right, centre."""
    side = _eval_side(shape, crop, resize)
    bottom, right = shape[0] - side, shape[1] - side
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    return tf.stack([tf.stack([y, x, side, side]) for y, x in corners])


def pca_lighting(image, seed, std=LIGHTING_STD):
    """AlexNet's colour augmentation: add eigvec @ (alpha * eigval), alpha ~ N(0, std).

    Not clipped, as in AlexNet and fb.resnet.torch: a few levels past 0..255 can occur.
    """
    alpha = tf.random.stateless_normal([3], seed, stddev=std)
    return add_per_channel(image, tf.reduce_sum(PCA_EIGVEC * (alpha * PCA_EIGVAL * 255.0), axis=1))


def add_per_channel(image, values):
    """image [h, w, c] + values [c], as rows of w * c: 4x faster than broadcasting over c."""
    shape = tf.shape(image)
    rows = tf.reshape(image, [shape[0], -1]) + tf.tile(values, [shape[1]])
    return tf.reshape(rows, shape)


def random_flip(image, seed):
    """The image [h, w, c] or its horizontal mirror, with probability 1/2 each."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def imagenet_train_view(encoded, seed, crop=CROP, scale_range=SCALE_RANGE, augment="scale", lighting=LIGHTING_STD):
    """Training view: paper scale augmentation (or Inception crop), flip, PCA lighting."""
    box_seed, flip_seed, light_seed = split_seed(seed, 3)

    def plan(shape):
        if augment == "scale":
            return scale_crop_window(shape, box_seed, crop, scale_range)
        return inception_crop_window(shape, box_seed)

    image = tf.image.resize(random_flip(decode_windows(encoded, plan)[0], flip_seed), [crop, crop])
    return pca_lighting(image, light_seed, lighting) if lighting else image


def center_view(encoded, crop=CROP, resize=RESIZE):
    """[crop, crop, 3]: shorter side resized to `resize`, centre crop.

    The one centre view: evaluation and the exported serve_image_bytes signature both call
    it, so a served image gets the evaluated pixels. Bilinear without antialiasing, as the
    training views resize: the net is served the kind of pixels it learned from.
    """
    return tf.image.resize(decode_windows(encoded, lambda shape: center_window(shape, crop, resize))[0], [crop, crop])


def ten_crop_view(encoded, crop=CROP, resize=RESIZE):
    """[10, crop, crop, 3]: the 4 corner and centre crops, then the same 5 flipped."""
    crops = tf.image.resize(decode_windows(encoded, lambda shape: five_crop_windows(shape, crop, resize)), [crop, crop])
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def full_view(encoded, shorter_side):
    """[2, H, W, 3]: the whole image resized to shorter side S, and its flip (fully convolutional)."""
    image = decode_rgb(encoded)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    resized = tf.image.resize(image, tf.cast(tf.round(hw * shorter_side / tf.reduce_min(hw)), tf.int32))
    return tf.stack([resized, tf.reverse(resized, axis=[1])])


def pad_crop_flip(image, seed, pad=CIFAR_PAD):
    """CIFAR training view (section 4.2): zero-pad 4, random crop back to size, flip."""
    crop_seed, flip_seed = split_seed(seed, 2)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
    return random_flip(cropped, flip_seed)
