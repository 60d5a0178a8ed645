"""The served centre view in NumPy and Pillow, for clients without TensorFlow.

    from keras_resnet.client_view import centre_view
    pixels = centre_view("cat.jpg", 224, resize=256)   # float32 RGB 0..255 [224, 224, 3]
    interpreter.get_signature_runner("serving_default")(images=pixels[None])   # LiteRT

The SavedModel's `serve_image_bytes` takes this view inside its graph
(`keras_resnet.data.views.center_view`); the LiteRT, ONNX and OpenVINO files take float pixels,
which this module computes the same way, step for step: a square window of side
round(size * shorter / resize) (half to even, in float32) centred at ((h - side) // 2,
(w - side) // 2) of the decoded image, then resized to size x size bilinearly with half-pixel
centres and no antialiasing, as TensorFlow's ResizeBilinear does (crop, then resize: resizing
the whole image first and cropping after, torchvision's habit, gives other pixels).

Images are decoded by Pillow, which decodes a JPEG as the served graph does (libjpeg's
accurate integer DCT, the whole image): the view is the served one, to float32 rounding.
`resize` is the shorter side the export's view resizes to: the `resize` its exporter prints,
the record's `eval_resize`, else size / 0.875 rounded (256 for 224), or size itself for nets
of 64 pixels or less (CIFAR: the whole image). Grey and palette images come out RGB; alpha
is dropped, as TensorFlow's decoder drops it.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


def decode_rgb(image):
    """uint8 RGB [h, w, 3] of an image file's path or encoded bytes, decoded by Pillow (for a
    JPEG the accurate integer DCT and fancy upsampling, `keras_resnet.data.views.decode_rgb`'s
    settings: the same pixels, bit for bit)."""
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    if not isinstance(image, (bytes, bytearray)):
        raise ValueError(f"image={type(image).__name__} must be a path or the bytes of a JPEG/PNG file")
    with Image.open(io.BytesIO(image)) as opened:
        return np.asarray(opened.convert("RGB"))


def centre_window(height, width, size, resize):
    """(top, left, side): the square of the source the view's size x size crop covers."""
    shorter = min(height, width)
    side = int(np.round(np.float32(size) * np.float32(shorter) / np.float32(resize)))
    side = min(max(side, 1), shorter)
    return (height - side) // 2, (width - side) // 2, side


def bilinear_axis(in_size, out_size):
    """(lower, upper, weight of upper) per output index: TensorFlow's half-pixel-centre scaler."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int64)
    return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(image, height, width):
    """float32 [height, width, c]: bilinear, half-pixel centres, no antialiasing (the
    arithmetic of TensorFlow's ResizeBilinear: along x, then along y, in float32)."""
    image = np.asarray(image, dtype=np.float32)
    y_low, y_high, y_weight = bilinear_axis(image.shape[0], height)
    x_low, x_high, x_weight = bilinear_axis(image.shape[1], width)
    x_weight = x_weight[None, :, None]
    top_left, top_right = image[y_low][:, x_low], image[y_low][:, x_high]
    bottom_left, bottom_right = image[y_high][:, x_low], image[y_high][:, x_high]
    top = top_left + (top_right - top_left) * x_weight
    bottom = bottom_left + (bottom_right - bottom_left) * x_weight
    return top + (bottom - top) * y_weight[:, None, None]


def centre_view(image, size, resize):
    """float32 RGB 0..255 [size, size, 3]: the centre view `serve_image_bytes` gives `image`
    (an image file's path or encoded bytes) for a net of size x size input."""
    for name, value in (("size", size), ("resize", resize)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer (pixels)")
    pixels = decode_rgb(image)
    top, left, side = centre_window(pixels.shape[0], pixels.shape[1], size, resize)
    return resize_bilinear(pixels[top : top + side, left : left + side], size, size)
