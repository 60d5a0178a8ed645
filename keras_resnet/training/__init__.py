"""Training: the run's config dataclass, strategy choice, schedules, the one loop, reporting.

    from keras_resnet import training
    result = training.train(training.recipe("cifar", model="resnet56", model_dir="runs/r56"))

`config` and `cli` import no TensorFlow (so `--help` is instant); the names below that need
it (train, Inputs, make_strategy, run_demo, ...) import it when first used.
"""

import importlib

from keras_resnet.training.config import TrainConfig, recipe, validate

_LAZY = {
    "train": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "loop",
    "Inputs": "inputs",
    "make_inputs": "inputs",
    "make_strategy": "strategy",
    "parse_tf_config": "strategy",
    "run_demo": "demo",
}

__all__ = ["TrainConfig", "recipe", "validate", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
