"""The serving graph shared by the SavedModel and the ONNX export.

float RGB images in 0..255 -> the run's preprocessing -> the folded float32 net (folding.py:
BN in the convs, the preprocessing's channel order and scale in the first conv, so only its
offset is added in front), its weights frozen into constants -> logits, softmax
probabilities, top-k classes and scores (and class names when known).
The bytes entry point decodes JPEG/PNG, resizes the shorter side and centre-crops to the
net's input size first, all inside the graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_resnet.export.folding import input_conv, input_offset, serving_model
from keras_resnet.preprocessing import channel_affine, preprocess_input

IMAGES = "images"
IMAGE_BYTES = "image_bytes"
FLOAT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
CLASS_NAMES = "class_names"


def default_crop_fraction(image_size):
    """1.0 for CIFAR-sized nets (tested on the whole 32x32 image, section 4.2), else 0.875
    (shorter side to 256, centre 224 crop: the standard single-crop view)."""
    return 1.0 if max(image_size) <= 64 else 0.875


def resized_shape(height, width, image_size, crop_fraction):
    """Size to resize a (height, width) image to so that its centre crop is `image_size`:
    the aspect ratio is kept and the crop covers `crop_fraction` of the shorter side."""
    scale = tf.maximum(
        image_size[0] / (crop_fraction * tf.cast(height, tf.float32)),
        image_size[1] / (crop_fraction * tf.cast(width, tf.float32)),
    )
    new_height = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32), image_size[0])
    new_width = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32), image_size[1])
    return new_height, new_width


def decode_and_crop(data, image_size, crop_fraction):
    """One encoded JPEG/PNG/GIF/BMP string -> float32 RGB [H, W, 3] in 0..255. A string that is
    not an image raises InvalidArgumentError from the op (an error status in TF Serving)."""
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.cast(image, tf.float32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    new_height, new_width = resized_shape(height, width, image_size, crop_fraction)
    same_size = tf.logical_and(tf.equal(new_height, height), tf.equal(new_width, width))
    image = tf.cond(
        same_size,
        lambda: image,
        lambda: tf.image.resize(image, tf.stack([new_height, new_width]), antialias=True),
    )
    top = (new_height - image_size[0]) // 2
    left = (new_width - image_size[1]) // 2
    image = image[top : top + image_size[0], left : left + image_size[1], :]
    return tf.ensure_shape(image, (*image_size, 3))


def frozen_inference(model, image_size):
    """`model`'s inference as one TensorFlow function whose weights are constants, not variables.

    TensorFlow's oneDNN convolutions keep their re-laid-out kernels between calls only when
    the kernel is a constant; read from a variable, every kernel is re-laid out on every call.
    Frozen, the served graph skips that work on every request (BENCHMARKS.md, Findings).
    tf2onnx freezes the same way.
    """
    # TensorFlow 2 has no public API that freezes a concrete function's variables (tf.compat.v1's
    # graph_util works on v1 graphs only); tf2onnx calls the same internal function.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *image_size, 3], tf.float32)
    frozen = convert_variables_to_constants_v2(
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    )
    return lambda x: frozen(tf.convert_to_tensor(x, tf.float32))[0]


class ServingGraph:
    """The two entry points over one folded, frozen model (no variables to track or save).
    `merge_pools=False` keeps each max pool's zero padding as its own op (LiteRT lacks the merged form)."""

    def __init__(self, source, *, top_k=5, crop_fraction=None, merge_pools=True):
        classes = source.model.output_shape[-1]
        if not isinstance(top_k, int) or not 1 <= top_k <= classes:
            raise ValueError(f"top_k={top_k!r} must be an integer in 1..{classes} (the model's classes)")
        crop_fraction = default_crop_fraction(source.image_size) if crop_fraction is None else crop_fraction
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction={crop_fraction!r} must be in (0, 1]")
        order, scale, shift = channel_affine(source.preprocess_mode, source.mean)
        foldable = input_conv(source.model) is not None
        affine = (order, scale) if foldable else None
        folded = serving_model(source.model, logits=True, input_affine=affine, merge_pools=merge_pools)
        self.logits = frozen_inference(folded, source.image_size)
        # A whole image, not 3 values: onnxruntime broadcasts a 3-vector over NHWC images
        # about 5x slower than an image over the batch.
        offset = np.broadcast_to(input_offset(order, scale, shift), (*source.image_size, 3)).copy()
        self.input_offset = offset if foldable else None
        self.source = source
        self.top_k = top_k
        self.crop_fraction = crop_fraction
        self.image_size = source.image_size
        self.class_names = source.class_names

    def images_spec(self):
        """The float signature's input: any batch of RGB images of the net's size."""
        return tf.TensorSpec([None, *self.image_size, 3], tf.float32, name=IMAGES)

    def bytes_spec(self):
        """The bytes signature's input: any batch of encoded images, each of any size."""
        return tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)

    def numeric_outputs(self, images):
        """float RGB [batch, H, W, 3] in 0..255 -> logits, probabilities, top-k (the ONNX graph)."""
        if self.input_offset is None:
            x = preprocess_input(images, self.source.preprocess_mode, self.source.mean)
        else:
            x = images + tf.constant(self.input_offset)
        logits = self.logits(x)
        probabilities = tf.nn.softmax(logits)
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        return {"logits": logits, "probabilities": probabilities, "top_k_classes": classes, "top_k_scores": scores}

    def serve_images(self, images):
        """float RGB [batch, H, W, 3] in 0..255 -> the named outputs, with class names if known."""
        outputs = self.numeric_outputs(images)
        if self.class_names is not None:
            outputs[CLASS_NAMES] = tf.gather(tf.constant(self.class_names), outputs["top_k_classes"])
        return outputs

    def serve_image_bytes(self, image_bytes):
        """Encoded images [batch] (what REST's {"b64": ...} carries) -> the named outputs."""
        images = tf.map_fn(
            lambda data: decode_and_crop(data, self.image_size, self.crop_fraction),
            image_bytes,
            fn_output_signature=tf.TensorSpec((*self.image_size, 3), tf.float32),
        )
        return self.serve_images(images)
