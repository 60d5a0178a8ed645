"""Keras' own keras.applications tests, run against keras_resnet's builders.

The tests are the installed keras package's `keras/src/applications/applications_test.py`,
read from there (not copied) with its `MODEL_LIST` pointed at keras_resnet's nets: variable
input channels, custom input shape and tensor, pooling and the classifier activation, each in
channels_last and channels_first. `test_application_base` downloads ImageNet weights and a
photo, so it is skipped here with that reason. TensorFlow runs in this process; JAX (and
torch, where installed) in a subprocess each, as a process has one backend.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
import warnings

import keras
import pytest

import keras_resnet

SUITE = "keras.src.applications.applications_test"
DOWNLOADING_TEST = "test_application_base"
DOWNLOAD_REASON = (
    "needs a download: keras.applications' ImageNet weights and its elephant.jpg from storage.googleapis.com"
)
# The nets and their headless output channels, as the suite's MODEL_LIST gives them.
BASIC = ((keras_resnet.ResNet18, 512), (keras_resnet.ResNet34, 512), (keras_resnet.Plain34, 512))
BOTTLENECK = ((keras_resnet.ResNet50, 2048), (keras_resnet.ResNet101, 2048), (keras_resnet.ResNet152, 2048))
# 6 tests x 2 data formats per net, of which the downloading one skips.
PASSED_PER_NET, SKIPPED_PER_NET = 10, 2

# Every test builds nets at 224 pixels (seconds each): the suite is part of the slow step.
pytestmark = pytest.mark.slow


def suite_class(models):
    """The suite's test class, its MODEL_LIST replaced by `models` ((builder, channels) pairs;
    keras_resnet stands in as the module that preprocesses and decodes predictions)."""
    path = importlib.util.find_spec(SUITE).origin
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    lists = [node for node in tree.body if isinstance(node, ast.Assign) and _assigns(node, "MODEL_LIST")]
    assert len(lists) == 1, f"{path} no longer assigns MODEL_LIST once"
    lists[0].value = ast.Name("KERAS_RESNET_MODELS", ast.Load())
    namespace = {"__name__": SUITE, "KERAS_RESNET_MODELS": [(app, dim, keras_resnet) for app, dim in models]}
    with warnings.catch_warnings():  # its pytest marker (requires_trainable_backend) is registered by Keras' conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        exec(compile(ast.fix_missing_locations(tree), path, "exec"), namespace)
    return namespace["ApplicationsTest"]


def _assigns(node, name):
    return any(isinstance(target, ast.Name) and target.id == name for target in node.targets)


class _NoDownloads:
    def setUp(self):
        if self._testMethodName.startswith(DOWNLOADING_TEST):
            self.skipTest(DOWNLOAD_REASON)
        super().setUp()


class TestKerasApplicationsBasic(_NoDownloads, suite_class(BASIC)):
    """ResNet-18, ResNet-34 and plain-34."""


class TestKerasApplicationsBottleneck(_NoDownloads, suite_class(BOTTLENECK)):
    """ResNet-50, -101 and -152."""


def run_on_backend(backend, test_class):
    """Run `test_class` of this file with KERAS_BACKEND=`backend` in a new process: (passed,
    skipped, output); a failure or error fails here with pytest's output."""
    pytest.importorskip(backend, reason=f"{backend} is not installed: the suite runs on it where it is")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the other backends are started from the TensorFlow run")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"{__file__}::{test_class}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped|failed|error)", output)}
    return counts.get("passed", 0), counts.get("skipped", 0), output


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize(
    "test_class, nets", [("TestKerasApplicationsBasic", BASIC), ("TestKerasApplicationsBottleneck", BOTTLENECK)]
)
def test_the_suite_passes_on_the_other_backends(backend, test_class, nets):
    passed, skipped, output = run_on_backend(backend, test_class)
    assert (passed, skipped) == (PASSED_PER_NET * len(nets), SKIPPED_PER_NET * len(nets)), output[-3000:]
    assert DOWNLOAD_REASON in output
