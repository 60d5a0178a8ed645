"""The one training loop, unchanged under every tf.distribute strategy.

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy
(https://github.com/keras-team/keras/issues/20585), so the loop is `strategy.run` inside a
`tf.function`: each replica averages
its per-example losses over the GLOBAL batch, the optimizer sums gradients across
replicas, and metrics are summed across replicas. SGD with momentum and a coupled L2
penalty on the kernels, as the paper trains (sections 3.4, 4.2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal

import keras
import numpy as np
import tensorflow as tf

from keras_resnet.training import config as config_lib
from keras_resnet.training import saved_run
from keras_resnet.training import schedules
from keras_resnet.training import strategy as strategy_lib
from keras_resnet.training.reporting import Reporter

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# The summed counts one iteration returns, in the order of the reduced vector.
TRAIN_SUMS = ("loss_sum", "penalty", "top1_wrong", "top5_wrong", "count", "stop")
EVAL_SUMS = ("loss_sum", "top1_wrong", "top5_wrong", "count")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the latest checkpoint is the last good one."""


@dataclasses.dataclass
class TrainResult:
    """What a run ended with."""

    model_dir: str
    step: int
    train: dict
    eval: dict | None
    model: keras.Model
    preempted: bool = False


@contextlib.contextmanager
def dtype_policy(dtype):
    """Keras' global dtype policy for `dtype` ("float32", "bfloat16", "float16") while
    models are built, restored on exit: never left changed for the caller."""
    if dtype not in POLICIES:
        raise ValueError(f"dtype={dtype!r} is not one of {tuple(POLICIES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[dtype])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def sigterm_requests():
    """A dict whose "requested" turns True on SIGTERM (preemption), handler restored on exit.

    Off the main thread (where signals cannot be caught) it never turns True.
    """
    state = {"requested": False}

    def handler(signum, frame):
        state["requested"] = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def decayed_variables(model, all_weights=False):
    """The variables the L2 penalty reaches: the trainable conv and fc kernels (Keras names
    them "kernel"), not BN gamma/beta nor biases unless `all_weights`."""
    return [v for v in model.trainable_variables if all_weights or v.name == "kernel"]


def l2_penalty(variables):
    """sum(w^2) / 2: its gradient is w, so weight_decay * l2_penalty is Caffe's weight decay."""
    if not variables:
        return tf.constant(0.0)
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables]) / 2


def cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-example softmax cross-entropy of float32 logits, with optional label smoothing."""
    if not label_smoothing:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    classes = logits.shape[-1]
    targets = tf.one_hot(labels, classes) * (1 - label_smoothing) + label_smoothing / classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def wrong_counts(labels, logits):
    """(top-1 mistakes, top-5 mistakes) in a batch, as float32 counts."""
    k = min(5, logits.shape[-1])
    top1 = tf.math.in_top_k(labels, logits, 1)
    top5 = tf.math.in_top_k(labels, logits, k)
    return tf.reduce_sum(1.0 - tf.cast(top1, tf.float32)), tf.reduce_sum(1.0 - tf.cast(top5, tf.float32))


def replica_loss(
    model, images, labels, *, global_batch_size, weight_decay, decayed, label_smoothing=0.0, num_replicas=1
):
    """(loss to differentiate, per-replica sums) for one replica's share of the batch.

    The cross-entropy is averaged over the GLOBAL batch and each replica adds 1/num_replicas
    of the penalty, so the gradients the optimizer sums over replicas are those of the
    whole batch on one device.
    """
    logits = tf.cast(model(images, training=True), tf.float32)
    labels = tf.cast(labels, tf.int32)
    per_example = cross_entropy(labels, logits, label_smoothing)
    penalty = weight_decay * l2_penalty(decayed) / num_replicas
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size) + penalty
    top1, top5 = wrong_counts(labels, logits)
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return loss, [tf.reduce_sum(per_example), penalty, top1, top5, count]


def make_train_step(
    model,
    optimizer,
    strategy,
    *,
    global_batch_size,
    weight_decay,
    decay_all_weights=False,
    label_smoothing=0.0,
    jit_compile=False,
):
    """A tf.function running one iteration on every replica: (iterator, stop) -> summed
    counts TRAIN_SUMS. `stop` (this process's SIGTERM flag) is summed too, so all workers
    learn of a preemption at the same iteration."""
    variables = model.trainable_variables
    decayed = decayed_variables(model, decay_all_weights)

    def gradients(images, labels):
        with tf.GradientTape() as tape:
            loss, sums = replica_loss(
                model,
                images,
                labels,
                global_batch_size=global_batch_size,
                weight_decay=weight_decay,
                decayed=decayed,
                label_smoothing=label_smoothing,
                num_replicas=strategy.num_replicas_in_sync,
            )
            scaled = optimizer.scale_loss(loss)
        return tape.gradient(scaled, variables), sums

    if jit_compile:
        gradients = tf.function(gradients, jit_compile=True)

    def replica_step(images, labels, stop):
        grads, sums = gradients(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        return tf.stack(sums + [stop])

    @tf.function(autograph=False)
    def train_step(iterator, stop):
        images, labels = next(iterator)
        per_replica = strategy.run(replica_step, args=(images, labels, stop))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def make_eval_step(model, strategy):
    """A tf.function: one distributed eval batch -> summed counts EVAL_SUMS."""

    def counts(images, labels):
        logits = tf.cast(model(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        top1, top5 = wrong_counts(labels, logits)
        loss = tf.reduce_sum(cross_entropy(labels, logits))
        return tf.stack([loss, top1, top5, tf.cast(tf.shape(labels)[0], tf.float32)])

    def replica_step(images, labels):
        # The last eval batch leaves some replicas empty; TF's CPU conv mis-shapes an empty batch.
        return tf.cond(tf.shape(labels)[0] > 0, lambda: counts(images, labels), lambda: tf.zeros([len(EVAL_SUMS)]))

    @tf.function(autograph=False)
    def eval_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return eval_step


def evaluate(eval_step, dataset):
    """Top-1/top-5 error and mean loss over a whole distributed eval dataset."""
    total = np.zeros(len(EVAL_SUMS))
    for batch in dataset:
        total += eval_step(batch).numpy()
    sums = dict(zip(EVAL_SUMS, total.tolist()))
    count = max(sums["count"], 1)
    return {
        "loss": sums["loss_sum"] / count,
        "top1_error": sums["top1_wrong"] / count,
        "top5_error": sums["top5_wrong"] / count,
        "count": int(sums["count"]),
    }


def synchronize_batch_norm(model):
    """Make every BatchNormalization layer use statistics of the global batch (all replicas)."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def build_model(config, image_size):
    """The run's network, emitting logits (the loss applies the softmax; config.json rebuilds
    it with the builder's softmax head, same weights).

    With --init_weights: the pretrained network with a new `classes`-way head, then
    --freeze and --freeze_bn (`keras_resnet.finetune`).
    """
    kwargs = config_lib.model_kwargs(config, image_size)
    if not config.init_weights:
        from keras_resnet.builders import get_builder

        model = get_builder(config.model)(**kwargs, classifier_activation=None)
    else:
        from keras_resnet import finetune

        model = finetune.from_pretrained(config.init_weights, config.model, classifier_activation=None, **kwargs)
        if config.freeze:
            finetune.freeze(model, up_to=config.freeze)
        if config.freeze_bn:
            finetune.freeze_batchnorm(model)
        print(finetune.trainable_summary(model), flush=True)
    if config.sync_bn:
        synchronize_batch_norm(model)
    return model


def make_optimizer(config, base_lr):
    """SGD with momentum 0.9 (sections 3.4, 4.2); wrapped for loss scaling under float16."""
    optimizer = keras.optimizers.SGD(learning_rate=base_lr, momentum=config.momentum)
    if config.dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _seed_everything(config):
    """--seed and --deterministic: global RNG seeds and TF's deterministic ops (process-wide,
    set when the run starts, as the user asked for them)."""
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def _run_config(config, info, inputs, custom_model):
    """The dict config.json holds: the saved_run contract plus the full resolved config.

    A model from a `model_fn` is not in the registry: "model" is then null, and the run dir
    holds weights that saved_run cannot rebuild an architecture for.
    """
    mean_file = saved_run.MEAN_FILE if inputs.pixel_mean is not None else None
    return {
        **config_lib.to_dict(config),
        "model": None if custom_model else config.model,
        "model_kwargs": None if custom_model else config_lib.model_kwargs(config, info["image_size"]),
        "preprocessing": {"mode": inputs.preprocess_mode, "mean_file": mean_file},
        "class_names": list(inputs.class_names) if inputs.class_names is not None else None,
        "steps_per_epoch": info["steps_per_epoch"],
        "num_examples": info["num_examples"],
    }


def _checkpointable(input_fn):
    """The input_fn with its datasets' external state (the data layer's skipped-records
    counter) left out of iterator checkpoints instead of refusing them: a resumed run
    counts its skips afresh."""
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE

    def checkpointable_fn(context):
        return input_fn(context).with_options(options)

    return checkpointable_fn


class _Run:
    """The state of one run: model, optimizer, schedule, checkpointing, data iterators."""

    def __init__(self, config, strategy, inputs, model_fn=None):
        dataset = inputs.dataset or config_lib.dataset_name(config)
        config = dataclasses.replace(config, preprocess_mode=inputs.preprocess_mode, dataset=dataset)
        self.config, info = config_lib.resolve(config, inputs.num_examples, inputs.num_classes, inputs.image_size)
        self.info = info
        self.strategy = strategy
        self.inputs = inputs
        self.chief = strategy_lib.is_chief(strategy)
        config = self.config
        base_lr = config_lib.base_learning_rate(config)
        with dtype_policy(config.dtype), strategy.scope():
            self.model = (model_fn or build_model)(config, info["image_size"])
            self.optimizer = make_optimizer(config, base_lr)
            self.optimizer.build(self.model.trainable_variables)
        self.custom_model = model_fn is not None
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.schedule = schedules.from_config(config, base_lr, info["steps_per_epoch"])
        self.iterator = iter(strategy.distribute_datasets_from_function(_checkpointable(inputs.train_fn)))
        self.eval_dataset = strategy.distribute_datasets_from_function(inputs.eval_fn) if inputs.eval_fn else None
        tracked = {"model": self.model, "optimizer": self.optimizer, "step": self.step, "schedule": self.schedule}
        save_iterator = inputs.in_memory if config.checkpoint_iterator is None else config.checkpoint_iterator
        if save_iterator and isinstance(self.iterator, tf.__internal__.tracking.Trackable):
            tracked["iterator"] = self.iterator
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.directory = os.path.join(config.model_dir, saved_run.CHECKPOINT_SUBDIR)
        self.save_directory = strategy_lib.checkpoint_dir(self.directory, strategy)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.save_directory, max_to_keep=config.keep_checkpoints
        )

    def restore(self):
        """Resume from the newest checkpoint in model_dir, if any; returns its path or None."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is not None:
            self.checkpoint.restore(path).expect_partial()
        self.saved_step = int(self.step.numpy()) if path else None
        return path

    def save(self):
        """Checkpoint at the current step (atomic: TF writes temporary files, then renames)."""
        self.saved_step = int(self.step.numpy())
        return self.manager.save(checkpoint_number=self.saved_step)

    def write_config(self):
        if self.chief:
            saved_run.write_config(
                self.config.model_dir,
                _run_config(self.config, self.info, self.inputs, self.custom_model),
                pixel_mean=self.inputs.pixel_mean,
            )

    def cleanup(self):
        if self.save_directory != self.directory:
            shutil.rmtree(self.save_directory, ignore_errors=True)


def step_metrics(sums):
    """Loss and top-1/top-5 error of one iteration from its summed counts."""
    count = max(sums["count"], 1)
    return {
        "loss": sums["loss_sum"] / count + sums["penalty"],
        "top1_error": sums["top1_wrong"] / count,
        "top5_error": sums["top5_wrong"] / count,
    }


def _check_finite(metrics, step, run):
    """NonFiniteLossError naming the step and the last good checkpoint, if the loss is not finite."""
    loss = metrics["loss"]
    if not math.isfinite(loss):
        last = tf.train.latest_checkpoint(run.directory)
        kept = f"the latest checkpoint, {last}, is the last good one" if last else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"loss is {loss} at step {step}: training stopped; {kept} (lower --learning_rate, or use --dtype float32)."
        )


def _start_description(resumed, config):
    if resumed:
        return f"resumed from {resumed}"
    if config.init_weights:
        return f"fine-tuning from {config.init_weights}"
    return "training from scratch"


def _iterate(run, reporter, train_step, eval_step, sigterm):
    """Run iterations up to train_steps (the loop proper); returns (step, last metrics,
    last eval metrics or None, preempted)."""
    config = run.config
    step, metrics, eval_metrics = int(run.step.numpy()), {}, None
    while step < config.train_steps:
        lr = run.schedule(step)
        run.optimizer.learning_rate = lr
        stop = tf.constant(float(sigterm["requested"]))
        sums = dict(zip(TRAIN_SUMS, train_step(run.iterator, stop).numpy().tolist()))
        step += 1
        metrics = step_metrics(sums)
        _check_finite(metrics, step, run)
        run.step.assign(step)
        run.schedule.observe_train_error(metrics["top1_error"])
        reporter.train_step(step, sums, lr)
        if sums["stop"] > 0:
            reporter.print(f"SIGTERM: saved {run.save()} at step {step}; exiting (rerun the same command to resume)")
            return step, metrics, eval_metrics, True
        if step % config.checkpoint_interval == 0 and step < config.train_steps:
            run.save()
        evaluate_now = config.eval_interval and step % config.eval_interval == 0 and step < config.train_steps
        if run.eval_dataset is not None and evaluate_now:
            eval_metrics = evaluate(eval_step, run.eval_dataset)
            reporter.eval(step, eval_metrics)
            if run.schedule.observe_eval_error(eval_metrics["top1_error"]):
                reporter.print(f"eval error plateaued: learning rate divided by {1 / config.lr_decay:g}")
    return step, metrics, eval_metrics, False


def _skipped_records(inputs):
    """Records the data layer skipped as unreadable (0 where the input_fn does not count)."""
    counter = getattr(inputs.train_fn, "skip_counter", None)
    return counter.count if counter is not None else 0


def train(config, inputs=None, model_fn=None):
    """Train (or resume) the run of `config` (a TrainConfig); returns a TrainResult.

    `inputs` (a `keras_resnet.training.inputs.Inputs`) defaults to the config's data set
    through `keras_resnet.data`; `model_fn(config, image_size)` -> a Keras model emitting
    logits replaces the registered `config.model` (for architectures outside the zoo).
    Every argument is checked before training starts. Under multi_worker no TensorFlow op
    may run before this call (TF configures its collectives at start-up): make `inputs`
    whose functions build their datasets when called.
    """
    config_lib.validate(config)
    strategy = strategy_lib.make_strategy(config.strategy, tpu=config.tpu)
    strategy_lib.check_batch_size(config.batch_size, strategy)
    if inputs is None:
        from keras_resnet.training.inputs import make_inputs

        inputs = make_inputs(config)
    _seed_everything(config)
    run = _Run(config, strategy, inputs, model_fn)
    resumed = run.restore()
    run.write_config()
    config = run.config
    start = int(run.step.numpy())
    reporter = Reporter(
        config.model_dir,
        total_steps=config.train_steps,
        start_step=start,
        batch_size=config.batch_size,
        log_interval=config.log_interval,
        enabled=run.chief,
    )
    reporter.print(
        f"{_start_description(resumed, config)}: {config.model} on {config.dataset}, "
        f"steps {start}..{config.train_steps}, batch {config.batch_size} over {strategy.num_replicas_in_sync} replica(s) "
        f"({config.strategy}), dtype {config.dtype}, model_dir {config.model_dir}"
    )
    train_step = make_train_step(
        run.model,
        run.optimizer,
        strategy,
        global_batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        decay_all_weights=config.decay_all_weights,
        label_smoothing=config.label_smoothing,
        jit_compile=config.jit_compile,
    )
    eval_step = make_eval_step(run.model, strategy)
    with sigterm_requests() as sigterm:
        step, metrics, eval_metrics, preempted = _iterate(run, reporter, train_step, eval_step, sigterm)
    if not preempted:
        if run.saved_step != step:
            run.save()
        if run.eval_dataset is not None:
            eval_metrics = evaluate(eval_step, run.eval_dataset)
            reporter.eval(step, eval_metrics)
    if _skipped_records(inputs):
        reporter.print(f"skipped {_skipped_records(inputs)} unreadable records (each named on stderr)")
    curves = reporter.close()
    if curves:
        reporter.print(f"training curves: {curves}")
    run.cleanup()
    return TrainResult(config.model_dir, step, metrics, eval_metrics, run.model, preempted)
