"""Learning-rate schedules of the paper and the usual large-batch additions.

The rate is computed on the host before each step from the iteration and, for the two
rules that watch the training (ResNet-110's warm-up, section 4.2; divide on plateau,
section 3.4), from state kept in variables, so that it is checkpointed with the model.
"""

from __future__ import annotations

import bisect
import math

import tensorflow as tf


def step_decay(step, base_lr, boundaries, factor=0.1):
    """base_lr times `factor` once per boundary passed (CIFAR-10: 0.1, /10 at 32k and 48k)."""
    return base_lr * factor ** bisect.bisect_right(list(boundaries), step)


def cosine_decay(step, base_lr, total_steps):
    """Half a cosine from base_lr to 0 over total_steps (Loshchilov & Hutter 2017)."""
    progress = min(step, total_steps) / max(1, total_steps)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def linear_warmup(step, lr, warmup_steps):
    """Gradual warm-up: lr scaled by (step + 1) / warmup_steps during the first steps
    (Goyal et al. 2017, for large batches)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


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
        """Feed one batch's training error; returns whether the warm-up is over."""
        if bool(self.done.numpy()):
            return True
        previous = float(self.running_error.numpy())
        running = batch_error if previous < 0 else self.decay * previous + (1 - self.decay) * batch_error
        self.running_error.assign(running)
        if running < self.threshold:
            self.done.assign(True)
        return bool(self.done.numpy())


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
        if self.error_warmup is not None and not bool(self.error_warmup.done.numpy()):
            return self.error_warmup_lr
        if self.schedule == "steps":
            lr = step_decay(step, self.base_lr, self.boundaries, self.factor)
        elif self.schedule == "cosine":
            lr = cosine_decay(step - self.warmup_steps, self.base_lr, self.total_steps - self.warmup_steps)
        elif self.schedule == "plateau":
            lr = self.base_lr * self.factor ** int(self.plateau.drops.numpy())
        else:
            lr = self.base_lr
        return linear_warmup(step, lr, self.warmup_steps)

    def observe_train_error(self, batch_error):
        """Training error of the last batch (drives the error warm-up)."""
        if self.error_warmup is not None:
            self.error_warmup.observe(batch_error)

    def observe_eval_error(self, eval_error):
        """Top-1 error of an evaluation (drives the plateau schedule); True if divided."""
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
