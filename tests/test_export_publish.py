"""The publishing path every exporter shares, as a user meets it: a disk that fills during an
export, names taken from paths with spaces and accents, printed commands that a shell reads
back as the paths they name, and labels files that say one class a line."""

import os
import shlex
import subprocess
import sys

import pytest
from export_helpers import small_disk, trained_source

from keras_resnet.export import sources, tf_serving

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, preexec_fn=None):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,
    )


def error_lines(stderr):
    """stderr without TensorFlow's and absl's own log lines."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "W0000", "E0000", "To enable"))
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, target_flag, target_name",
    [("export/to_saved_model.py", "--base_path", "models"), ("export/to_onnx.py", "--output", "m.onnx")],
)
def test_a_disk_that_fills_during_an_export_is_one_line_and_leaves_nothing(tmp_path, script, target_flag, target_name):
    """ResNet-20's 1 MB of weights on a disk with room for 256 KB."""
    with small_disk(str(tmp_path / "small"), 256 * 1024) as (directory, preexec_fn):
        target = os.path.join(directory, target_name)
        process = run_cli(
            script, "--model", "resnet20", "--preprocess_mode", "tf", target_flag, target, preexec_fn=preexec_fn
        )
        assert process.returncode == 1, process.stderr[-3000:]
        (line,) = error_lines(process.stderr)
        assert line.startswith(f"error: cannot write '{target}") and f"choose another {target_flag}" in line
        assert "Traceback" not in process.stderr
        assert os.listdir(directory) == []


@pytest.mark.slow
def test_a_keras_file_named_with_spaces_and_accents_is_served_under_a_valid_name_and_printed_quoted(tmp_path):
    """A net with trained statistics (an untrained one's near-tied classes are chance)."""
    folder = tmp_path / "sp acé"
    folder.mkdir()
    trained_source("resnet20").model.save(str(folder / "uni é r.keras"))
    base = str(folder / "base")
    process = run_cli(
        "export/to_saved_model.py",
        "--keras_file",
        str(folder / "uni é r.keras"),
        "--preprocess_mode",
        "tf",
        "--base_path",
        base,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert os.listdir(os.path.join(base, "uni_e_r")) == ["1"]
    assert "serving 'uni é r' as 'uni_e_r'" in process.stdout
    docker = next(line for line in process.stdout.splitlines() if "docker run" in line)
    words = shlex.split(docker.rstrip("\\"))
    assert words[words.index("-v") + 1] == f"{base}:/models"
    assert words[words.index("-e") + 1] == "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1"  # the served weights are variables


def test_a_model_name_that_is_no_directory_name_is_refused_naming_a_valid_one():
    assert tf_serving.valid_model_name("uni é r") == "uni_e_r"
    assert tf_serving.valid_model_name("résnet-50.v2") == "resnet-50.v2"
    assert tf_serving.valid_model_name("?!") == "model"
    with pytest.raises(ValueError, match=r"model_name='uni é r' must be .* --model_name .*'uni_e_r'"):
        tf_serving.check_model_name("uni é r")


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat\n\ndog\n", r"line 2 is blank"),
        ("cat\ndog\ncat\n", r"line 3 repeats 'cat' of line 1"),
        ("\n\n", r"names no class"),
    ],
)
def test_a_labels_file_with_a_blank_line_or_a_repeated_name_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"labels file '{path}' {message}"):
        sources.read_labels(str(path))


def test_a_labels_file_names_class_i_on_line_i_plus_one(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\r\n dog \nsnow leopard\n\n")
    assert sources.read_labels(str(path)) == ("cat", "dog", "snow leopard")


def test_a_url_target_is_accepted_and_a_misspelt_scheme_refused_before_anything_is_written(tmp_path, monkeypatch):
    from keras_resnet.export import onnx, saved_model

    monkeypatch.chdir(tmp_path)
    saved_model.check_base_path("ram://models")  # exported locally, then copied through tf.io.gfile
    onnx.check_output("ram://models/m.onnx", overwrite=False)
    with pytest.raises(ValueError, match=r"'nosuchfs://models' cannot be reached through tf.io.gfile .*--base_path"):
        saved_model.check_base_path("nosuchfs://models")
    with pytest.raises(ValueError, match=r"'nosuchfs://models' cannot be reached through tf.io.gfile .*--output"):
        onnx.check_output("nosuchfs://models/m.onnx", overwrite=False)
    assert os.listdir(tmp_path) == []
