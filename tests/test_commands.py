"""The console scripts pyproject.toml declares: each names a function of keras_resnet.commands
that runs an existing entry script, and a command answers `--help` with its script's flags."""

import os
import re
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def declared_scripts():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_declared_command_runs_an_entry_script_of_the_repository():
    from keras_resnet import commands

    scripts = declared_scripts()
    assert set(scripts) == set(commands.SCRIPTS)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "keras_resnet.commands", target
        assert callable(getattr(commands, function)), target
        assert os.path.isfile(os.path.join(REPO, commands.SCRIPTS[name])), name


def flag_names(text):
    return set(re.findall(r"^\s+--(?:\[no\])?(\w+)", text, flags=re.MULTILINE))


def test_a_command_answers_help_with_its_scripts_flags():
    """keras-resnet-export-onnx --help in a fresh process lists the flags `python export/to_onnx.py
    --help` lists (the script is run as __main__, its directory first on the path)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv = ['keras-resnet-export-onnx', '--help']; "
            "from keras_resnet.commands import export_onnx; export_onnx()",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    script = subprocess.run(
        [sys.executable, os.path.join(REPO, "export", "to_onnx.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert command.returncode == script.returncode, command.stderr[-2000:]  # absl's --help exits 1
    assert {"output", "int8", "model_dir"} <= flag_names(script.stdout)
    assert flag_names(command.stdout) == flag_names(script.stdout)
