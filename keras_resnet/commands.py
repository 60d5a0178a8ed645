"""Console scripts: `keras-resnet-train`, `keras-resnet-export-onnx`, ... each runs one of the
repository's entry scripts (`train/*.py`, `export/*.py`) exactly as `python <script>` would,
with the same flags and `--help`, so a command and its script cannot drift apart.

The scripts sit beside the package in a source checkout, which `pip install -e .` installs
from; a wheel carries only the package, and there a command says so and exits.
"""

from __future__ import annotations

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# console script -> the entry script it runs, relative to the checkout (pyproject.toml's
# [project.scripts] names the functions below, one per entry).
SCRIPTS = {
    "keras-resnet-train": "train/imagenet.py",
    "keras-resnet-train-cifar10": "train/cifar10.py",
    "keras-resnet-evaluate": "train/evaluate.py",
    "keras-resnet-compare": "train/compare.py",
    "keras-resnet-responses": "train/responses.py",
    "keras-resnet-export-saved-model": "export/to_saved_model.py",
    "keras-resnet-export-onnx": "export/to_onnx.py",
    "keras-resnet-export-litert": "export/to_litert.py",
    "keras-resnet-export-openvino": "export/to_openvino.py",
    "keras-resnet-client": "export/client.py",
}


def run_script(command):
    """Run `command`'s entry script as `__main__`, with this process's arguments."""
    path = os.path.join(ROOT, SCRIPTS[command])
    if not os.path.isfile(path):
        raise SystemExit(
            f"{command}: {SCRIPTS[command]} is not beside the installed package (looked in {ROOT}); the console "
            "scripts run the repository's entry scripts, so install from a checkout: pip install -e ."
        )
    sys.argv[0] = path
    sys.path.insert(0, os.path.dirname(path))  # as `python path` puts the script's directory first
    runpy.run_path(path, run_name="__main__")


def train():
    run_script("keras-resnet-train")


def train_cifar10():
    run_script("keras-resnet-train-cifar10")


def evaluate():
    run_script("keras-resnet-evaluate")


def compare():
    run_script("keras-resnet-compare")


def responses():
    run_script("keras-resnet-responses")


def export_saved_model():
    run_script("keras-resnet-export-saved-model")


def export_onnx():
    run_script("keras-resnet-export-onnx")


def export_litert():
    run_script("keras-resnet-export-litert")


def export_openvino():
    run_script("keras-resnet-export-openvino")


def client():
    run_script("keras-resnet-client")
