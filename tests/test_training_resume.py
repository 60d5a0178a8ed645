"""Resume is exact and preemption is clean, checked on real processes.

A run of 4-iteration loops killed with SIGKILL inside a loop after step k and started again
reaches, at step 2k, bit for bit the weights of a run that was never interrupted; its
latest checkpoint was whole. SIGTERM makes a run save at the next loop boundary and exit
with status 75 (preempted: rerun to resume); a second signal ends it at once, with no
traceback and no half checkpoint.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import keras_resnet
from keras_resnet import run_dir
from keras_resnet.training import reporting
from keras_resnet.training.preemption import PREEMPTED_STATUS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8
LOOP = 4
TIMEOUT = 240

TRAIN = textwrap.dedent(
    f"""
    import sys
    from keras_resnet.training import loop
    from keras_resnet.training.config import recipe

    for model_dir in sys.argv[1:]:  # one run after the other in this process
        loop.train(recipe("cifar", model="resnet20", dataset="digits", model_dir=model_dir, batch_size=32,
                          train_steps={2 * K}, lr_boundaries=({K + K // 2},), seed=0, deterministic=True,
                          steps_per_loop={LOOP}, checkpoint_interval={LOOP}, keep_checkpoints=3, eval_interval=0,
                          log_interval={LOOP}))
    """
)


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(args):
    return subprocess.Popen(
        [sys.executable, *args], env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_until(condition, process, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def latest_step(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


def read_whole_checkpoint(model_dir):
    """Every tensor of the latest checkpoint, read back (a torn file fails here); the input
    pipeline's state (variant tensors, not readable as arrays) is restored by the resume."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    dtypes = reader.get_variable_to_dtype_map()
    return {name: reader.get_tensor(name) for name, dtype in dtypes.items() if dtype != tf.variant}


def _finish(process, status=0):
    output = process.communicate(timeout=TIMEOUT)[0]
    assert process.returncode == status, output[-3000:]
    return output


@pytest.mark.slow
def test_sigkill_inside_a_loop_then_resume_reaches_the_uninterrupted_weights_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    victim = _start([str(script), killed])
    try:
        _wait_until(lambda: latest_step(killed) >= K, victim, f"checkpoint {K}")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=TIMEOUT)
    finally:
        if victim.poll() is None:
            victim.kill()
    stopped_at = latest_step(killed)
    assert K <= stopped_at < 2 * K
    assert read_whole_checkpoint(killed)  # the newest checkpoint the kill left is whole

    output = _finish(_start([str(script), killed, whole]))  # the resume, then a run never interrupted
    assert f"resumed from {os.path.join(killed, 'checkpoints', f'ckpt-{stopped_at}')}" in output

    resumed = keras_resnet.load(killed).model
    reference = keras_resnet.load(whole).model
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in reporting.read_metrics(killed) if r["split"] == "train"]
    assert steps == list(range(LOOP, 2 * K + 1, LOOP))  # one history, no step logged twice


def _cli(model_dir, *flags):
    return _start(
        [
            os.path.join("train", "cifar10.py"),
            "--dataset=digits",
            "--model=resnet20",
            f"--model_dir={model_dir}",
            "--batch_size=16",
            "--train_steps=1000",
            "--checkpoint_interval=500",
            "--eval_interval=0",
            *flags,
        ]
    )


def _logged_steps(model_dir):
    return [r["step"] for r in reporting.read_metrics(str(model_dir)) if r["split"] == "train"]


def test_sigterm_saves_at_the_next_loop_boundary_and_exits_75(tmp_path):
    model_dir = tmp_path / "preempted"
    process = _cli(model_dir, "--steps_per_loop=5", "--log_interval=5")
    try:
        _wait_until(lambda: any(s >= 10 for s in _logged_steps(model_dir)), process, "step 10")
        logged = max(_logged_steps(model_dir))
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output = _finish(process, PREEMPTED_STATUS)
        seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    step = latest_step(str(model_dir))
    # the loop in flight or, when the signal lands between loops (step `logged` just logged), that boundary;
    # at most the loop after it
    assert logged <= step <= logged + 2 * 5
    assert seconds < 30, seconds
    assert (
        f"SIGTERM: saved {os.path.join(str(model_dir), 'checkpoints', f'ckpt-{step}')} at step {step}; exiting with "
        f"status {PREEMPTED_STATUS} (preempted: rerun the same command to resume)"
    ) in output
    assert "Traceback" not in output
    assert int(read_whole_checkpoint(str(model_dir))["step/.ATTRIBUTES/VARIABLE_VALUE"]) == step
    assert run_dir.training_config(str(model_dir))["train_steps"] == 1000


@pytest.mark.slow
def test_a_second_signal_during_saves_ends_the_run_with_no_traceback_and_a_whole_checkpoint(tmp_path):
    """Checkpoints every step: the second Ctrl-C most likely lands in a save, which finishes first."""
    model_dir = tmp_path / "interrupted"
    process = _cli(model_dir, "--checkpoint_interval=1", "--log_interval=1", "--keep_checkpoints=2")
    try:
        _wait_until(lambda: latest_step(str(model_dir)) >= 3, process, "checkpoint 3")
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        output = _finish(process, PREEMPTED_STATUS)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    second = f"SIGINT: a second signal (SIGINT); exiting with status {PREEMPTED_STATUS}: the last checkpoint is step"
    assert second in output or "SIGINT: saved" in output, output[-3000:]
    step = latest_step(str(model_dir))
    assert int(read_whole_checkpoint(str(model_dir))["step/.ATTRIBUTES/VARIABLE_VALUE"]) == step
    assert not [name for name in os.listdir(model_dir / "checkpoints") if name.endswith("_temp")]
