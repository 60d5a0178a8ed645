"""`make demo`: the CIFAR-10 recipe of section 4.2, shrunk to the bundled digits data so it
runs offline on a CPU in a few minutes: ResNet-20, SGD with momentum, weight decay 1e-4,
lr 0.1 divided by 10 twice, per-pixel mean, pad-crop-flip augmentation."""

from __future__ import annotations

import os
import shutil

from keras_resnet.training.config import recipe

DEMO_DIR = os.path.join("runs", "demo")


def demo_config(model_dir=DEMO_DIR, **overrides):
    """The demo's TrainConfig: 2/3 of the iterations at lr 0.1, then /10, then /100, as the
    paper's 32k/48k/64k, in 450 iterations of batch 64 (20 epochs of 1,437 images)."""
    settings = dict(
        model="resnet20",
        dataset="digits",
        model_dir=model_dir,
        batch_size=64,
        train_steps=450,
        lr_boundaries=(300, 400),
        checkpoint_interval=150,
        eval_interval=75,
        log_interval=25,
        seed=0,
        deterministic=True,
    )
    return recipe("cifar", **{**settings, **overrides})


def plan(config):
    """What the demo is about to do, in words."""
    return (
        f"Demo: train {config.model} on the bundled {config.dataset} data (1,437 train / 360 test images, 32x32) on this "
        f"machine for {config.train_steps} iterations of batch {config.batch_size}, lr {config.learning_rate} divided by 10 "
        f"at {config.lr_boundaries[0]} and {config.lr_boundaries[1]}, weight decay {config.weight_decay}, momentum "
        f"{config.momentum} (section 4.2's recipe, shrunk); then evaluate on the test images. Output: {config.model_dir}/"
    )


def _clear_previous_demo(model_dir):
    """A demo trains from scratch: remove an earlier demo's run dir, refuse anything else."""
    if not os.path.exists(model_dir):
        return
    from keras_resnet import run_dir

    config = run_dir.training_config(model_dir) if run_dir.is_run_dir(model_dir) else {}
    if config.get("dataset") != "digits":
        raise ValueError(f"{model_dir!r} exists and is not a demo run: move it away or pass another model_dir")
    shutil.rmtree(model_dir)


def run_demo(model_dir=DEMO_DIR, **overrides):
    """Train and evaluate the demo; returns the run dir (config.json, checkpoints/, curves.png)."""
    from keras_resnet.training.loop import train

    config = demo_config(model_dir, **overrides)
    print(plan(config), flush=True)
    _clear_previous_demo(model_dir)
    result = train(config)
    if result.preempted:  # saved and stopped on SIGTERM/Ctrl-C: no test error to report, nothing to export
        from keras_resnet.training.preemption import PREEMPTED_STATUS

        raise SystemExit(PREEMPTED_STATUS)
    print(
        f"Test error of {config.model} on {config.dataset}: {100 * result.eval['top1_error']:.2f}% "
        f"({result.eval['count']} test images; accuracy {100 * (1 - result.eval['top1_error']):.2f}%). Run dir: {model_dir}/",
        flush=True,
    )
    return model_dir
