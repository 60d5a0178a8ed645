"""Shared fixtures: models are built once per session (ResNet-152 takes seconds)."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from model_helpers import relative_difference


@functools.cache
def _registered(name):
    import keras_resnet

    return keras_resnet.get_builder(name)()


@pytest.fixture(scope="session")
def registered_model():
    """registered_model("resnet50"): the default build of a registered net, shared."""
    return _registered


@pytest.fixture(scope="session")
def rel_diff():
    return relative_difference
