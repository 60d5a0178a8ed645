"""Resume is exact and preemption is clean, checked on real processes.

A run killed with SIGKILL after step k and started again reaches, at step 2k, the weights
of a run that was never interrupted; its latest checkpoint was whole. SIGTERM makes a run
save and exit with status 0.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf

from keras_resnet.training import saved_run
from keras_resnet.training import reporting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8
TIMEOUT = 240

TRAIN = textwrap.dedent(
    f"""
    import sys
    from keras_resnet.training import loop
    from keras_resnet.training.config import recipe

    for model_dir in sys.argv[1:]:  # one run after the other in this process
        loop.train(recipe("cifar", model="resnet20", dataset="digits", model_dir=model_dir, batch_size=32,
                          train_steps={2 * K}, lr_boundaries=({K + K // 2},), seed=0, deterministic=True,
                          checkpoint_interval=1, keep_checkpoints=3, eval_interval=0, log_interval=1))
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


def _finish(process):
    output = process.communicate(timeout=TIMEOUT)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path):
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

    resumed, _ = saved_run.restore_model(killed)
    reference, _ = saved_run.restore_model(whole)
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        assert np.linalg.norm(a - b) <= 1e-6 * max(np.linalg.norm(b), 1e-12)
    steps = [r["step"] for r in reporting.read_metrics(killed) if r["split"] == "train"]
    assert steps == list(range(1, 2 * K + 1))  # one history, no step logged twice


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    model_dir = tmp_path / "preempted"
    process = _start(
        [
            os.path.join("train", "cifar10.py"),
            "--dataset=digits",
            "--model=resnet20",
            f"--model_dir={model_dir}",
            "--batch_size=16",
            "--train_steps=1000",
            "--log_interval=1",
            "--checkpoint_interval=500",
            "--eval_interval=0",
        ]
    )
    try:
        _wait_until(lambda: any(r["step"] >= 2 for r in reporting.read_metrics(str(model_dir))), process, "step 2")
        process.send_signal(signal.SIGTERM)
        output = _finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    step = latest_step(str(model_dir))
    assert 2 <= step < 1000
    assert f"SIGTERM: saved {os.path.join(str(model_dir), 'checkpoints', f'ckpt-{step}')} at step {step}" in output
    assert int(read_whole_checkpoint(str(model_dir))["step/.ATTRIBUTES/VARIABLE_VALUE"]) == step
    assert json.loads((model_dir / "config.json").read_text())["train_steps"] == 1000
