"""The faults a real run meets, each reproduced: a newest checkpoint truncated or missing, no
readable checkpoint at all, a second training on the same run dir, a lock left by a killed
run (an flock: free once its process is gone), a torn last line of metrics.jsonl, staging files of killed saves, a full disk, and
SIGTERM while the input pipeline delivers nothing. Runs that must repeat bit for bit run in
fresh processes with --deterministic; the others in this process on a small BN net."""

import os
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import run_dir as run_layout
from keras_resnet.training import loop, reporting
from keras_resnet.training.config import recipe
from keras_resnet.training.preemption import PREEMPTED_STATUS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300

COMMON = textwrap.dedent(
    """
    import os, sys
    import keras
    import numpy as np
    from keras_resnet.training import loop
    from keras_resnet.training.config import recipe

    def small_net(config, image_size):
        inputs = keras.Input((*image_size, 3))
        x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(config.classes, name="predictions")(x))

    def config(model_dir, train_steps, **overrides):
        settings = dict(dataset="digits", batch_size=16, seed=0, deterministic=True, preprocess_mode="tf",
                        checkpoint_interval=2, keep_checkpoints=5, log_interval=2, eval_interval=0,
                        steps_per_loop=2, lr_boundaries=(), model_dir=model_dir, train_steps=train_steps)
        return recipe("cifar", **{**settings, **overrides})

    def train(model_dir, train_steps):
        result = loop.train(config(model_dir, train_steps), model_fn=small_net)
        np.savez(model_dir + ".npz", *result.model.get_weights())
    """
)

FALLBACK = COMMON + textwrap.dedent(
    """
    root = sys.argv[1]
    train(os.path.join(root, "whole"), 12)
    for name, damage in (("truncated", "truncate"), ("missing", "delete")):
        model_dir = os.path.join(root, name)
        train(model_dir, 8)
        prefix = os.path.join(model_dir, "checkpoints", "ckpt-8")
        if damage == "truncate":
            data = prefix + ".data-00000-of-00001"
            os.truncate(data, os.path.getsize(data) // 2)
        else:
            for suffix in (".index", ".data-00000-of-00001"):
                os.remove(prefix + suffix)
        print("RESUME " + name, flush=True)
        train(model_dir, 12)
        print("END " + name, flush=True)
    """
)


def _env(**extra):
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


@pytest.fixture(scope="module")
def fallback_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fallback")
    script = root / "fallback.py"
    script.write_text(FALLBACK)
    done = subprocess.run(
        [sys.executable, str(script), str(root)], env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root, done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated", "missing"])
def test_a_bad_newest_checkpoint_falls_back_to_the_newest_readable_one(fallback_runs, name):
    root, output = fallback_runs
    resumed = output.split(f"RESUME {name}\n", 1)[1].split(f"END {name}\n", 1)[0]
    checkpoints = root / name / "checkpoints"
    if name == "truncated":
        assert "checkpoint ckpt-8 is unreadable (" in resumed
        assert f"moved ckpt-8's files aside as ckpt-8.*{run_layout.UNREADABLE_SUFFIX}" in resumed
        assert (checkpoints / f"ckpt-8.index{run_layout.UNREADABLE_SUFFIX}").exists()
    else:
        assert f"checkpoint ckpt-8 is listed in {checkpoints / 'checkpoint'} but its files are gone" in resumed
    assert "resuming from ckpt-6, the newest readable checkpoint" in resumed
    assert f"resumed from {checkpoints / 'ckpt-6'}" in resumed
    assert "Traceback" not in resumed and "training from scratch" not in resumed
    for a, b in zip(_weights(root / f"{name}.npz"), _weights(root / "whole.npz")):
        np.testing.assert_array_equal(a, b)  # the resumed run is the uninterrupted one
    kept = sorted(int(n[len("ckpt-") : -len(".index")]) for n in os.listdir(checkpoints) if n.endswith(".index"))
    assert kept == [4, 6, 8, 10, 12]  # rotation kept the newest five good ones, none lost to a restart


def small_net(config, image_size):
    inputs = keras.Input((*image_size, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(config.classes, name="predictions")(x))


def small_config(model_dir, **overrides):
    settings = dict(
        dataset="digits",
        batch_size=16,
        seed=0,
        preprocess_mode="tf",
        train_steps=4,
        checkpoint_interval=2,
        log_interval=2,
        eval_interval=0,
        lr_boundaries=(),
    )
    return recipe("cifar", model_dir=str(model_dir), **{**settings, **overrides})


def test_no_readable_checkpoint_is_refused_and_nothing_is_overwritten(tmp_path):
    loop.train(small_config(tmp_path / "run"), model_fn=small_net)
    checkpoints = tmp_path / "run" / "checkpoints"
    for name in os.listdir(checkpoints):
        if ".data-" in name:
            os.truncate(checkpoints / name, 10)
    before = {name: (checkpoints / name).read_bytes() for name in os.listdir(checkpoints)}
    with pytest.raises(run_layout.RunDirError) as error:
        loop.train(small_config(tmp_path / "run", train_steps=8), model_fn=small_net)
    message = str(error.value)
    assert message.startswith(f"no readable checkpoint in {checkpoints}: checkpoint ckpt-4 is unreadable (")
    assert "move them away (or use another --model_dir) to start afresh" in message
    assert {name: (checkpoints / name).read_bytes() for name in os.listdir(checkpoints)} == before
    assert _lock_is_free(tmp_path / "run")  # released on the way out


def _lock_is_free(model_dir):
    """Whether another process can take the run dir's lock now."""
    script = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDWR | os.O_CREAT), fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')"
    taken = subprocess.run([sys.executable, "-c", script, str(model_dir / run_layout.LOCK_NAME)], capture_output=True)
    return taken.stdout.strip() == b"free"


def _holder(model_dir):
    """A process holding the run dir's lock (as a training would), once it holds it."""
    script = (
        "import sys, time; from keras_resnet import run_dir; lock = run_dir.RunLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(model_dir)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_training_on_the_same_run_dir_is_refused_before_anything_is_written(tmp_path):
    model_dir = tmp_path / "busy"
    other = _holder(model_dir)  # the run holding the dir
    try:
        with pytest.raises(run_layout.RunDirError) as error:
            loop.train(small_config(model_dir), model_fn=small_net)
    finally:
        other.kill()
        other.wait()
    assert str(error.value).startswith(
        f"{str(model_dir)!r} is in use by another training (pid {other.pid} on {os.uname().nodename}, started "
    )
    assert os.listdir(model_dir) == [run_layout.LOCK_NAME]  # no config, checkpoint or metrics written


def test_a_lock_left_by_a_killed_run_does_not_hold_the_run_dir(tmp_path):
    """The lock is an flock: the kernel releases it with the process, however it ends."""
    model_dir = tmp_path / "killed"
    killed = _holder(model_dir)
    killed.kill()
    killed.wait()
    assert (model_dir / run_layout.LOCK_NAME).exists()
    loop.train(small_config(model_dir), model_fn=small_net)
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-4")
    assert _lock_is_free(model_dir)


def test_torn_metrics_line_and_staging_leftovers_of_a_killed_run(tmp_path, capsys):
    model_dir = tmp_path / "torn"
    loop.train(small_config(model_dir), model_fn=small_net)
    metrics = model_dir / reporting.METRICS_NAME
    with open(metrics, "a") as f:
        f.write('{"step": 5, "split": "tra')  # the write a kill -9 cut short
    staging = [model_dir / "checkpoints" / "ckpt-5_temp", model_dir / ".tmp-config"]
    staging[0].mkdir()
    (staging[0] / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 100)
    staging[1].write_text("{")
    capsys.readouterr()
    loop.train(small_config(model_dir, train_steps=8), model_fn=small_net)
    output = capsys.readouterr().out
    assert f"{metrics}: skipped 1 unreadable line(s) (a write cut short); the other records are kept" in output
    assert f"removed 2 leftover(s) of interrupted writes: {staging[1]}, {staging[0]}" in output
    assert not any(path.exists() for path in staging)
    assert [r["step"] for r in reporting.read_metrics(str(model_dir)) if r["split"] == "train"] == [2, 4, 6, 8]


STUCK = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    from keras_resnet.training import loop
    from keras_resnet.training.config import recipe
    from keras_resnet.training.inputs import Inputs

    def nothing_ever(context):  # as a data set whose every record is unreadable and skipped
        images = tf.data.Dataset.from_tensors((tf.zeros([8, 32, 32, 3]), tf.zeros([8], tf.int32))).repeat()
        return images.filter(lambda image, label: False)

    inputs = Inputs(nothing_ever, None, num_examples=1000, num_classes=10, image_size=(32, 32), preprocess_mode="tf")
    loop.train(recipe("cifar", model="resnet20", model_dir=sys.argv[1], batch_size=8, train_steps=10,
                      lr_boundaries=(), eval_interval=0), inputs)
    """
)


@pytest.mark.slow
def test_sigterm_ends_a_run_whose_input_pipeline_delivers_nothing(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    model_dir = tmp_path / "stuck"
    process = subprocess.Popen(
        [sys.executable, str(script), str(model_dir)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (model_dir / "config.json").exists():  # written just before the loop starts
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(3)  # the loop is traced and waits on the pipeline
        signalled = time.monotonic()
        process.terminate()
        output = process.communicate(timeout=120)[0]
        seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == PREEMPTED_STATUS, output[-3000:]
    assert seconds < 30, seconds
    assert (
        f"SIGTERM: no loop boundary reached within 10 s (is the input pipeline stuck?); exiting with status "
        f"{PREEMPTED_STATUS}: the last checkpoint is none yet (a rerun starts from scratch)"
    ) in output
    assert "Traceback" not in output
    assert _lock_is_free(model_dir)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a private tmpfs")
def test_a_full_disk_is_one_line_naming_the_run_dir(tmp_path):
    """The run dir on a 256 KB tmpfs (mounted in a private user and mount namespace): the
    config fits, the first checkpoint does not."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    model_dir = mount / "run"
    command = (
        f"mount -t tmpfs -o size=256k tmpfs {mount} && exec {sys.executable} train/cifar10.py --dataset=digits "
        f"--model=resnet20 --model_dir={model_dir} --batch_size=8 --train_steps=4 --checkpoint_interval=2 "
        "--log_interval=2 --eval_interval=0 --preprocess_mode=tf"
    )
    try:
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30)
    except OSError as error:
        pytest.skip(f"unshare cannot run here: {error}")
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode()[-200:]}")
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", command], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left writing to {model_dir} ("), done.stderr[-3000:]
    assert "free some space there or use another --model_dir, then rerun to resume" in last
    assert "Traceback" not in done.stderr
