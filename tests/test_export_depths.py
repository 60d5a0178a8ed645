"""Every ImageNet depth at 224, given a trained net's BN statistics, exports and passes its
check against a float64 evaluation of the same network (slow): ResNet-50 through both
command lines from a .weights.h5 file, the other depths to ONNX through the library."""

import json
import os
import subprocess
import sys

import pytest

import keras_resnet
from keras_resnet.export import verify
from keras_resnet.preprocessing import preprocess_input
from keras_resnet.testing import sample_photos, with_trained_statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trained(name, seed=0):
    """Statistics from 4 photos: a training-mode pass keeps every activation of the functional
    graph, 5 GB for 16 images through ResNet-152."""
    model = keras_resnet.get_builder(name)()
    return with_trained_statistics(model, preprocess_input(sample_photos(224, 4, seed=seed), "caffe"), seed=seed)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


EXPORT_ONE_DEPTH = """
import json, sys
sys.path.insert(0, {tests!r})
from test_export_depths import trained
from keras_resnet.export import onnx as onnx_export, sources
result = onnx_export.export_onnx(sources.ModelSource(trained({name!r}), "caffe"), {path!r}, log=print)
print("DIFFERENCES", json.dumps(result.differences))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet101", "resnet152"])
def test_each_depth_exports_to_onnx_within_float32_rounding(name, tmp_path):
    """Each depth in its own process, as a user runs an export: memory TensorFlow has taken is
    not returned to the system, and would add up over four deep nets in one process."""
    code = EXPORT_ONE_DEPTH.format(tests=os.path.dirname(__file__), name=name, path=str(tmp_path / f"{name}.onnx"))
    done = run_cli("-c", code)
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    differences = json.loads(done.stdout.split("DIFFERENCES ", 1)[1])
    for distances in differences.values():
        assert 0 < distances["keras_float32_logits"] < 1e-3
        assert distances["logits"] <= verify.float32_bound(distances["keras_float32_logits"])


@pytest.mark.slow
def test_resnet50_exports_with_both_command_lines(tmp_path):
    weights = str(tmp_path / "r50.weights.h5")
    trained("resnet50").save_weights(weights)
    source = ["--model", "resnet50", "--weights", weights, "--preprocess_mode", "caffe"]
    for command in (
        ["export/to_saved_model.py", *source, "--base_path", str(tmp_path / "models")],
        ["export/to_onnx.py", *source, "--output", str(tmp_path / "r50.onnx")],
    ):
        done = run_cli(*command)
        print(done.stdout)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "batch 8: logits" in done.stdout or "@8: logits" in done.stdout
        assert "from float64 (Keras float32" in done.stdout
