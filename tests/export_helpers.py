"""What the LiteRT and OpenVINO export tests share: trained-statistics nets and the Keras
model's own answers on the same images."""

import numpy as np

import keras_resnet
from keras_resnet.export import sources, verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics


def trained_source(name, mode="tf", seed=0):
    """A registered net with a trained net's BN statistics, from photos of its input size."""
    model = keras_resnet.get_builder(name)()
    size = model.input_shape[1]
    with_trained_statistics(model, preprocess_input(sample_photos(size, 16, seed), mode), seed)
    return sources.ModelSource(model, mode, name=name)


def keras_outputs(source, images):
    """(logits in float64, softmax probabilities) of the Keras model on RGB 0..255 images."""
    x = preprocess_input(np.asarray(images, dtype="float32"), source.preprocess_mode, source.mean)
    return verify.keras_reference(source, images)[0], np.asarray(source.model(x, training=False))
