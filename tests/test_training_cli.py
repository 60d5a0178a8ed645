"""The command lines: every TrainConfig field is a documented flag with the recipe's default,
flags become the config, and bad input is a clear error before any training starts."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from keras_resnet.training import cli
from keras_resnet.training.config import TrainConfig, recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, **env):
    return subprocess.run(
        [sys.executable, os.path.join("train", script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )


def test_help_explains_every_flag():
    done = run("cifar10.py", "--help")  # absl prints the help and exits with status 1
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name}:" in done.stdout or f"--[no]{field.name}:" in done.stdout, field.name
    assert "--[no]demo:" in done.stdout
    help_text = (
        "Global mini-batch size, split across all replicas (128 for\n    CIFAR-10, 256 for ImageNet in the paper)."
    )
    assert help_text + "\n    (default: '128')" in done.stdout


def test_imagenet_flags_default_to_section_3_4():
    values = flags.FlagValues()
    cli.define_flags(recipe("imagenet"), values)
    values(["train"])
    assert cli.config_from_flags(values) == recipe("imagenet")
    assert (values.batch_size, values.lr_schedule, values.train_steps, values.model) == (
        256,
        "plateau",
        600_000,
        "resnet50",
    )


def test_evaluate_help():
    done = run("evaluate.py", "--help")
    assert "--views:" in done.stdout and "10crop" in done.stdout and "--model_dir:" in done.stdout


def test_flags_become_the_config():
    values = flags.FlagValues()
    cli.define_flags(recipe("imagenet"), values)
    values(
        [
            "train",
            "--model=resnet101",
            "--strategy=mirrored",
            "--dtype=bfloat16",
            "--lr_schedule=steps",
            "--lr_boundary_epochs=30,60,90",
            "--train_epochs=90",
            "--jit_compile",
            "--seed=7",
            "--init_weights=imagenet",
            "--classes=37",
            "--freeze=conv4",
            "--freeze_bn",
        ]
    )
    config = cli.config_from_flags(values)
    assert config == recipe(
        "imagenet",
        model="resnet101",
        strategy="mirrored",
        dtype="bfloat16",
        lr_schedule="steps",
        lr_boundary_epochs=(30.0, 60.0, 90.0),
        train_epochs=90.0,
        jit_compile=True,
        seed=7,
        init_weights="imagenet",
        classes=37,
        freeze="conv4",
        freeze_bn=True,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--strategy=gpus"],
            "flag --strategy=gpus: value should be one of <default|one_device|mirrored|multi_worker|tpu>",
        ),
        (["--model=resnet21"], "error: model='resnet21' is not registered; allowed: "),
    ],
)
def test_bad_flags_are_clear_errors(args, message):
    done = run("cifar10.py", *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]


def test_tf_config_that_is_not_json_is_a_clear_error(tmp_path):
    done = run("cifar10.py", "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}", TF_CONFIG="{worker: [a]}")
    assert done.returncode == 1 and "error: TF_CONFIG is not JSON" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_help_lists_the_flags_by_topic_and_the_flagfile_route():
    done = run("cifar10.py", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    headers = [f"\n{topic}:\n" for topic in cli.TOPICS] + ["\ntrain/cifar10.py:\n", "\nconfig files: --flagfile=FILE"]
    positions = [text.index(header) for header in headers]
    assert positions == sorted(positions)
    for (topic, names), start, end in zip(cli.TOPICS.items(), positions, positions[1:]):
        section = text[start:end]
        for name in names:
            assert f"--{name}:" in section or f"--[no]{name}:" in section, (topic, name)
    assert "--[no]demo:" in text[positions[-2] :]
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert fields == {name for names in cli.TOPICS.values() for name in names}


def test_flagfile_is_the_config_file_route(tmp_path):
    flagfile = tmp_path / "r56.flags"
    flagfile.write_text(
        "# ResNet-56, eight loops of 50 per log line\n--model=resnet56\n--steps_per_loop=50\n--seed=3\n"
    )
    values = flags.FlagValues()
    cli.define_flags(recipe("cifar"), values)
    values(["train", f"--flagfile={flagfile}", "--seed=4"])  # later flags override the file
    assert cli.config_from_flags(values) == recipe("cifar", model="resnet56", steps_per_loop=50, seed=4)
    flagfile.write_text("--steps_per_loop=0\n")
    done = run("cifar10.py", f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}")
    assert done.returncode == 1 and "error: steps_per_loop=0 must be >= 1" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run").exists()
