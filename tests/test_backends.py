"""The models are backend-agnostic: JAX, with no TensorFlow imported, gives TF's outputs."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_resnet

CASES = {"resnet50": 224, "resnet20": 32}

JAX_FORWARD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_resnet
    assert keras.backend.backend() == "jax", keras.backend.backend()
    for name, (weights, inputs, outputs) in json.loads(sys.argv[1]).items():
        model = keras_resnet.get_builder(name)(classifier_activation=None)
        model.load_weights(weights)
        np.save(outputs, keras.ops.convert_to_numpy(model(np.load(inputs), training=False)))
    print("tensorflow imported:", "tensorflow" in sys.modules)
    """
)


def test_jax_backend_gives_tensorflow_outputs(tmp_path, rel_diff):
    pytest.importorskip("jax", reason="jax is in the dev extras; install it to run the backend check")
    expected, files = {}, {}
    for name, size in CASES.items():
        model = keras_resnet.get_builder(name)(classifier_activation=None)
        x = np.random.default_rng(3).normal(0, 50, (2, size, size, 3)).astype("float32")
        expected[name] = keras.ops.convert_to_numpy(model(x, training=False))
        files[name] = [str(tmp_path / f"{name}{suffix}") for suffix in (".weights.h5", "_x.npy", "_y.npy")]
        model.save_weights(files[name][0])
        np.save(files[name][1], x)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_FORWARD, json.dumps(files)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout
    for name in CASES:
        assert rel_diff(np.load(files[name][2]), expected[name]) <= 1e-5, name
