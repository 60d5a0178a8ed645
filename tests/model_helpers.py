"""Helpers the test modules share (tests/ is on sys.path under pytest)."""

import numpy as np


def relative_difference(a, b):
    """||a - b|| / ||b||, the tolerance measure of every export check."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def randomize(model, seed):
    """Random kernels, conv biases and BN statistics, as a trained net has, so that bias
    folds, BN folds and epsilons all matter to the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            elif variable.name == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            elif variable.name == "kernel":
                value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
            else:  # bias, beta, moving_mean
                value = rng.normal(0.0, 0.1, shape)
            variable.assign(value.astype("float32"))
    return model
