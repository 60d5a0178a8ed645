"""Shared fixtures: models are built once per session (ResNet-152 takes seconds)."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@functools.lru_cache(maxsize=None)
def _registered(name):
    import keras_resnet

    return keras_resnet.get_builder(name)()


@pytest.fixture(scope="session")
def registered_model():
    """registered_model("resnet50"): the default build of a registered net, shared."""
    return _registered


def relative_difference(a, b):
    """||a - b|| / ||b||, the tolerance measure the issues name."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="session")
def rel_diff():
    return relative_difference
