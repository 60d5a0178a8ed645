"""keras_resnet: every network of "Deep Residual Learning for Image Recognition" in Keras 3.

    import keras_resnet
    model = keras_resnet.ResNet152(weights=None)
    model = keras_resnet.ResNet50(weights="resnet50.weights.h5")   # the network the file records
    loaded = keras_resnet.load("runs/r56")   # model + record: preprocessing, class names, eval view

Every network carries its record (`model.record`, see `keras_resnet.record`). Only `keras` is
imported here, so models build on the TensorFlow, JAX and PyTorch backends; data, training
and export import TensorFlow where they are used.
"""

from keras_resnet.builders import (
    REGISTRY,
    CifarResNet,
    Network,
    Plain18,
    Plain20,
    Plain32,
    Plain34,
    Plain44,
    Plain50,
    Plain56,
    Plain101,
    Plain110,
    Plain152,
    ResNet18,
    ResNet20,
    ResNet32,
    ResNet34,
    ResNet44,
    ResNet50,
    ResNet56,
    ResNet101,
    ResNet110,
    ResNet152,
    ResNet1202,
    build,
    get_builder,
    list_models,
)
from keras_resnet.flops import count_flops
from keras_resnet.loading import Loaded, load
from keras_resnet.preprocessing import decode_predictions, preprocess_input
from keras_resnet.record import Record
from keras_resnet.specs import NetSpec, cifar_spec, imagenet_spec

__version__ = "0.1.0"
