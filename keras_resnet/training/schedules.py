"""Learning-rate schedules of the paper and the usual large-batch additions.

The rate is a TensorFlow function of the iteration, computed inside the training loop's
graph before each step (no host round trip), in float64. The two rules that watch the
training keep their state in variables, checkpointed with the model: ResNet-110's warm-up
(section 4.2) updates from each step's training error inside the graph; divide-on-plateau
(section 3.4) decides on the host after each evaluation, and the graph reads its count of
divisions.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _float(value):
    """float64 tensor of a number, list, tensor or variable (Python floats not rounded to float32 first)."""
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        return tf.cast(value, tf.float64)
    return tf.constant(value, tf.float64)


def step_decay(step, base_lr, boundaries, factor=0.1):
    """base_lr times `factor` once per boundary passed (CIFAR-10: 0.1, /10 at 32k and 48k)."""
    if not boundaries:
        return _float(base_lr)
    passed = tf.reduce_sum(tf.cast(_float(step) >= _float(list(boundaries)), tf.float64))
    return base_lr * tf.pow(_float(factor), passed)


def cosine_decay(step, base_lr, total_steps):
    """Half a cosine from base_lr to 0 over total_steps (Loshchilov & Hutter 2017)."""
    progress = tf.minimum(_float(step), float(total_steps)) / max(1, total_steps)
    return 0.5 * base_lr * (1 + tf.cos(math.pi * progress))


def linear_warmup(step, lr, warmup_steps):
    """Gradual warm-up: lr scaled by (step + 1) / warmup_steps during the first steps
    (Goyal et al. 2017, for large batches)."""
    if not warmup_steps:
        return lr
    step = _float(step)
    return tf.where(step < warmup_steps, lr * (step + 1) / warmup_steps, lr)


class ErrorWarmup(tf.Module):
    """Section 4.2's ResNet-110 warm-up: a small rate until the running training error is
    below a threshold (80 %), then the schedule; once over, it never comes back.

    The running error is an exponential moving average of the batch top-1 error.
    """

    def __init__(self, threshold=0.8, decay=0.9, name="error_warmup"):
        super().__init__(name=name)
        self.threshold = threshold
        self.decay = decay
        self.running_error = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="running_error")
        self.done = tf.Variable(False, trainable=False, name="done")

    def observe(self, batch_error):
        """Feed one batch's training error (graph ops, run inside the training loop); once
        the warm-up is over its state stays as it was."""
        batch_error = _float(batch_error)
        previous = self.running_error.read_value()
        running = tf.where(previous < 0, batch_error, self.decay * previous + (1 - self.decay) * batch_error)
        running = tf.where(self.done, previous, running)
        self.running_error.assign(running)
        self.done.assign(tf.logical_or(self.done, running < self.threshold))


class Plateau(tf.Module):
    """Section 3.4's ImageNet rule: divide the rate by 10 when the validation error stops
    improving for `patience` evaluations."""

    def __init__(self, patience=5, min_delta=0.001, name="plateau"):
        super().__init__(name=name)
        self.patience = patience
        self.min_delta = min_delta
        self.best = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_error")
        self.waited = tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_without_improvement")
        self.drops = tf.Variable(0, dtype=tf.int64, trainable=False, name="drops")

    def observe(self, eval_error):
        """Feed one evaluation's top-1 error; returns whether the rate was just divided."""
        if eval_error < float(self.best.numpy()) - self.min_delta:
            self.best.assign(eval_error)
            self.waited.assign(0)
            return False
        self.waited.assign_add(1)
        if int(self.waited.numpy()) >= self.patience:
            self.drops.assign_add(1)
            self.waited.assign(0)
            return True
        return False


class LearningRate(tf.Module):
    """The run's learning rate at each iteration: one of LR_SCHEDULES, with optional
    gradual warm-up and ResNet-110's error warm-up. Trackable: its state is checkpointed."""

    def __init__(
        self,
        schedule,
        base_lr,
        *,
        total_steps,
        boundaries=(),
        factor=0.1,
        warmup_steps=0,
        error_warmup=None,
        error_warmup_lr=0.01,
        plateau=None,
    ):
        super().__init__(name="learning_rate")
        self.schedule = schedule
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.boundaries = tuple(boundaries)
        self.factor = factor
        self.warmup_steps = warmup_steps
        self.error_warmup = error_warmup
        self.error_warmup_lr = error_warmup_lr
        self.plateau = plateau

    def __call__(self, step):
        """The rate at iteration `step` (a float64 scalar tensor; graph or eager)."""
        if self.schedule == "steps":
            lr = step_decay(step, self.base_lr, self.boundaries, self.factor)
        elif self.schedule == "cosine":
            lr = cosine_decay(_float(step) - self.warmup_steps, self.base_lr, self.total_steps - self.warmup_steps)
        elif self.schedule == "plateau":
            lr = self.base_lr * tf.pow(_float(self.factor), _float(self.plateau.drops))
        else:
            lr = _float(self.base_lr)
        lr = linear_warmup(step, lr, self.warmup_steps)
        if self.error_warmup is not None:
            lr = tf.where(self.error_warmup.done, lr, _float(self.error_warmup_lr))
        return lr

    def observe_train_error(self, batch_error):
        """Training error of the last batch (drives the error warm-up; graph ops)."""
        if self.error_warmup is not None:
            self.error_warmup.observe(batch_error)

    def observe_eval_error(self, eval_error):
        """Top-1 error of an evaluation (drives the plateau schedule, on the host, at the
        loop boundary after each evaluation); True if divided."""
        return self.plateau is not None and self.plateau.observe(eval_error)


def from_config(config, base_lr, steps_per_epoch):
    """The LearningRate of a resolved TrainConfig."""
    return LearningRate(
        config.lr_schedule,
        base_lr,
        total_steps=config.train_steps,
        boundaries=config.lr_boundaries,
        factor=config.lr_decay,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        error_warmup=ErrorWarmup(config.error_warmup_threshold) if config.error_warmup else None,
        error_warmup_lr=config.error_warmup_lr,
        plateau=Plateau(config.plateau_patience, config.plateau_min_delta) if config.lr_schedule == "plateau" else None,
    )
