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
import errno
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import run_dir
from keras_resnet.training import config as config_lib
from keras_resnet.training import preemption, schedules
from keras_resnet.training import strategy as strategy_lib
from keras_resnet.training.reporting import Reporter

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# The summed counts one iteration returns, in the order of the reduced vector.
TRAIN_SUMS = ("loss_sum", "penalty", "top1_wrong", "top5_wrong", "count")
EVAL_SUMS = ("loss_sum", "top1_wrong", "top5_wrong", "count")
# A loop is cut to about this much work, so a stop request waits at most about this long.
LOOP_SECONDS = 1.0


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


def make_replica_step(
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
    """One iteration on one replica: (images, labels) -> its counts TRAIN_SUMS (forward, loss
    with the L2 penalty, backward, SGD update)."""
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

    def replica_step(images, labels):
        grads, sums = gradients(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        return tf.stack(sums)

    return replica_step


def synthetic_batch(shape, classes, seed=0):
    """Random standard-normal images of `shape` [batch, h, w, 3] and labels < classes, as numpy
    arrays: the batch --synthetic_data keeps on the device (its values do not change the
    step's speed)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype("float32"), rng.integers(0, classes, shape[0]).astype("int32")


def make_train_loop(replica_step, strategy, schedule, optimizer, step, synthetic=None):
    """A tf.function running up to `steps` iterations on every replica, in a while loop in
    the graph: (iterator, steps) -> (counts TRAIN_SUMS summed over the iterations run,
    iterations run, learning rate of the last).

    Before each iteration the learning rate is `schedule(step)`, computed in the graph, and
    after it the step variable advances and the error warm-up sees the batch's error; the
    counts stay on the device until the call returns, so the host is reached once per loop.
    The loop ends early after an iteration whose loss is not finite. `synthetic` (images,
    labels of one replica's batch) replaces the iterator by that batch, kept on each device
    as a constant.
    """

    def iteration(iterator):
        if synthetic is None:
            images, labels = next(iterator)
            per_replica = strategy.run(replica_step, args=(images, labels))
        else:
            per_replica = strategy.run(lambda: replica_step(tf.constant(synthetic[0]), tf.constant(synthetic[1])))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    count, top1 = TRAIN_SUMS.index("count"), TRAIN_SUMS.index("top1_wrong")

    @tf.function
    def train_loop(iterator, steps):
        sums = tf.zeros([len(TRAIN_SUMS)])
        ran = tf.constant(0)
        lr = schedule(step)
        go = tf.constant(True)
        while go and ran < steps:
            lr = schedule(step)
            optimizer.learning_rate = tf.cast(lr, tf.float32)
            counts = iteration(iterator)
            step.assign_add(1)
            schedule.observe_train_error(counts[top1] / tf.maximum(counts[count], 1.0))
            sums += counts
            ran += 1
            go = tf.reduce_all(tf.math.is_finite(counts))
        return sums, ran, lr

    return train_loop


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


def evaluate(eval_step, dataset, stop=None):
    """Top-1/top-5 error and mean loss over a whole distributed eval dataset; None if `stop`
    (a StopRequest) is requested before the end (an evaluation is cheap to redo, and a
    preemption should not wait for it)."""
    total = np.zeros(len(EVAL_SUMS))
    for batch in dataset:
        if stop is not None and stop.requested:
            return None
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
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _all_layers(model):
    """Every layer of `model`, those inside nested models too (`model.layers` is one level)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


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
    """The flat config `run_dir.write_run` splits into the record and the training config.

    A model from a `model_fn` is not in the registry: "model" is then null, and the run dir
    holds weights that no builder rebuilds (its record is null).
    """
    return {
        **config_lib.to_dict(config),
        "model": None if custom_model else config.model,
        "model_kwargs": None if custom_model else config_lib.model_kwargs(config, info["image_size"]),
        "preprocessing": {"mode": inputs.preprocess_mode},
        "class_names": list(inputs.class_names) if inputs.class_names is not None else None,
        "eval_view": inputs.eval_view,
        "steps_per_epoch": info["steps_per_epoch"],
        "num_examples": info["num_examples"],
    }


def _checkpointable_iterator(iterator):
    """Whether a distributed iterator can be checkpointed (it is for some inputs only):
    tf.train.Checkpoint refuses what is not trackable."""
    try:
        tf.train.Checkpoint(iterator=iterator)
    except (TypeError, ValueError):
        return False
    return True


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
        tracked = {"model": self.model, "optimizer": self.optimizer, "step": self.step, "schedule": self.schedule}
        self.iterator, self.synthetic = None, None
        if config.synthetic_data:
            per_replica = config.batch_size // strategy.num_replicas_in_sync
            self.synthetic = synthetic_batch((per_replica, *info["image_size"], 3), config.classes, config.seed or 0)
        else:
            self.iterator = iter(strategy.distribute_datasets_from_function(_checkpointable(inputs.train_fn)))
            save_iterator = inputs.in_memory if config.checkpoint_iterator is None else config.checkpoint_iterator
            if save_iterator and _checkpointable_iterator(self.iterator):
                tracked["iterator"] = self.iterator
        self.eval_dataset = strategy.distribute_datasets_from_function(inputs.eval_fn) if inputs.eval_fn else None
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.directory = run_dir.checkpoint_dir(config.model_dir)
        self.save_directory = strategy_lib.checkpoint_dir(self.directory, strategy)
        self.saved_step, self.saved_path, self.manager = None, None, None

    def restore(self):
        """Resume from the newest readable checkpoint in model_dir, if any (saying which were
        skipped); returns (its path or None, messages). The CheckpointManager is made after,
        over the list of checkpoints the restore left."""
        path, messages = run_dir.restore_newest_readable(self.checkpoint, self.directory, chief=self.chief)
        if path is not None:
            self.saved_step, self.saved_path = int(self.step.numpy()), path
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.save_directory, max_to_keep=self.config.keep_checkpoints
        )
        return path, messages

    def save(self, stop):
        """Checkpoint at the current step (atomic: TF writes a `_temp` dir, then renames),
        never interrupted by the preemption watchdog."""
        with stop.saving():
            step = int(self.step.numpy())
            path = self.manager.save(checkpoint_number=step)
            self.saved_step, self.saved_path = step, os.path.join(self.directory, os.path.basename(path))
        return self.saved_path

    def last_checkpoint(self):
        """The newest checkpoint of this run, in words."""
        if self.saved_path is None:
            return "none yet (a rerun starts from scratch)"
        return f"step {self.saved_step} ({self.saved_path})"

    def flat_config(self):
        return _run_config(self.config, self.info, self.inputs, self.custom_model)

    def write_config(self):
        if self.chief:
            config_lib.write_run(self.config.model_dir, self.flat_config(), pixel_mean=self.inputs.pixel_mean)

    def cleanup(self):
        if self.save_directory != self.directory:
            shutil.rmtree(self.save_directory, ignore_errors=True)


def step_metrics(sums, steps=1):
    """Mean loss and top-1/top-5 error of `steps` iterations from their summed counts."""
    count = max(sums["count"], 1)
    return {
        "loss": sums["loss_sum"] / count + sums["penalty"] / steps,
        "top1_error": sums["top1_wrong"] / count,
        "top5_error": sums["top5_wrong"] / count,
    }


def _check_finite(metrics, step, run):
    """NonFiniteLossError naming the step and the last good checkpoint, if the loss is not finite."""
    loss = metrics["loss"]
    if not math.isfinite(loss):
        last = run.saved_path
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


def _next_multiple(step, interval):
    return (step // interval + 1) * interval


def loop_length(step, config, evaluating, seconds_per_step):
    """Iterations of the next loop: --steps_per_loop, cut at the next log, checkpoint and
    evaluation step and at the end, and to about LOOP_SECONDS of work (so that a stop
    request waits at most that long). The first loop runs one iteration: it traces the
    graph, and measures nothing useful."""
    ends = [
        config.train_steps,
        _next_multiple(step, config.log_interval),
        _next_multiple(step, config.checkpoint_interval),
    ]
    if evaluating and config.eval_interval:
        ends.append(_next_multiple(step, config.eval_interval))
    longest = 1 if seconds_per_step is None else max(1, int(LOOP_SECONDS / seconds_per_step))
    return max(1, min(min(ends) - step, config.steps_per_loop, longest))


def make_agreement(strategy):
    """A function (stop requested, seconds per step) -> the same for every worker: whether
    any worker was asked to stop, and the mean step time over workers. Under multi_worker
    each loop boundary is a collective, so that all workers stop at the same step and size
    their loops alike (loops of different lengths would pair mismatched collectives);
    elsewhere the values pass through."""
    if strategy.num_replicas_in_sync == 1 or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda requested, seconds: (requested, seconds)

    @tf.function
    def agree(values):
        per_replica = strategy.run(lambda: tf.identity(values))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def agreed(requested, seconds):
        asking, total = agree(tf.constant([float(requested), seconds or 0.0], tf.float64)).numpy().tolist()
        return asking > 0, (total / strategy.num_replicas_in_sync) or None

    return agreed


def _iterate(run, reporter, train_loop, eval_step, stop):
    """Run loops up to train_steps (the loop proper); returns (step, last metrics, last eval
    metrics or None, preempted)."""
    config = run.config
    step, metrics, eval_metrics, seconds_per_step = int(run.step.numpy()), {}, None, None
    evaluating = run.eval_dataset is not None
    eval_stop = None if config.strategy == "multi_worker" else stop  # workers must evaluate in step
    agree = make_agreement(run.strategy)
    while step < config.train_steps:
        stopping, seconds_per_step = agree(stop.requested, seconds_per_step)
        if stopping:
            stop.answered = True
            path = run.save(stop) if run.saved_step != step else run.saved_path
            reporter.print(
                f"{stop.signal_name or 'a stop asked by another worker'}: saved {path} at step {step}; exiting with "
                f"status {preemption.PREEMPTED_STATUS} (preempted: rerun the same command to resume)"
            )
            return step, metrics, eval_metrics, True
        steps = loop_length(step, config, evaluating, seconds_per_step)
        started = time.perf_counter()
        sums, ran, lr = train_loop(run.iterator, tf.constant(steps))
        sums, ran, lr = dict(zip(TRAIN_SUMS, sums.numpy().tolist())), int(ran), float(lr)
        stop.loop_seconds = time.perf_counter() - started
        seconds_per_step = stop.loop_seconds / ran  # the first loop's includes tracing: the next is short too
        step += ran
        metrics = step_metrics(sums, ran)
        _check_finite(metrics, step, run)
        reporter.train_steps(step, sums, lr, ran)
        if step % config.checkpoint_interval == 0 and step < config.train_steps:
            run.save(stop)
        if evaluating and config.eval_interval and step % config.eval_interval == 0 and step < config.train_steps:
            result = evaluate(eval_step, run.eval_dataset, eval_stop)
            if result is not None:
                eval_metrics = result
                reporter.eval(step, eval_metrics, train_loss=metrics["loss"])
                if run.schedule.observe_eval_error(eval_metrics["top1_error"]):
                    reporter.print(f"eval error plateaued: learning rate divided by {1 / config.lr_decay:g}")
    return step, metrics, eval_metrics, False


def _skipped_records(inputs):
    """Records the data layer skipped as unreadable (0 where the input_fn does not count)."""
    counter = getattr(inputs.train_fn, "skip_counter", None)
    return counter.count if counter is not None else 0


def synthetic_inputs(config):
    """Inputs of --synthetic_data: no data set is read; the image size and class count are
    the config's, else those of the model's family (32x32 and 10 classes for CIFAR nets,
    224x224 and 1000 for ImageNet nets)."""
    from keras_resnet.training.inputs import Inputs

    size, classes, examples = {"cifar": (32, 10, 50_000), "imagenet": (224, 1000, 1_281_167)}[
        config_lib.model_family(config.model)
    ]
    size = config.image_size or size
    return Inputs(None, None, examples, config.classes or classes, (size, size), preprocess_mode="tf")


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


def is_disk_full(error):
    """Whether an OSError or TensorFlow error says the disk (or quota, or file size limit) is full."""
    if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
        return True
    return any(text in str(error) for text in NO_SPACE_TEXTS)


@contextlib.contextmanager
def _disk_full_is_one_line(model_dir, run_holder):
    """A full disk (or quota, or file size limit) while writing the run becomes one RunDirError
    naming the dir and the last checkpoint, not a traceback from wherever the write failed."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        if not is_disk_full(error):
            raise
        last = run_holder[0].last_checkpoint() if run_holder else "none yet"
        raise run_dir.RunDirError(
            f"no space left writing to {model_dir} ({run_dir.first_line(error)}): free some space there or use "
            f"another --model_dir, then rerun to resume; the last checkpoint is {last}"
        ) from None


@contextlib.contextmanager
def _worker_loss_is_one_line(strategy_name, run):
    """Under multi_worker, a collective failing because a peer is gone becomes a
    WorkerLostError (one line: who, the last checkpoint, rerun all workers)."""
    try:
        yield
    except tf.errors.OpError as error:
        lost = strategy_lib.worker_lost(error, run.last_checkpoint()) if strategy_name == "multi_worker" else None
        if lost is None:
            raise
        raise lost from None


def train(config, inputs=None, model_fn=None):
    """Train (or resume) the run of `config` (a TrainConfig); returns a TrainResult.

    `inputs` (a `keras_resnet.training.inputs.Inputs`) defaults to the config's data set
    through `keras_resnet.data` (or to synthetic_inputs with --synthetic_data);
    `model_fn(config, image_size)` -> a Keras model emitting logits replaces the registered
    `config.model` (for architectures outside the zoo). Every argument is checked before
    training starts, and the run dir is locked (`run_dir.RunLock`) before anything is
    written there. Under multi_worker no TensorFlow op may run before this call (TF
    configures its collectives at start-up): make `inputs` whose functions build their
    datasets when called.
    """
    config_lib.validate(config)
    strategy = strategy_lib.make_strategy(config.strategy, tpu=config.tpu, cluster_resolver=config.cluster_resolver)
    strategy_lib.check_batch_size(config.batch_size, strategy)
    lock, notes = run_dir.RunLock(config.model_dir), strategy_lib.cluster_notes(strategy)
    if strategy_lib.is_chief(strategy):
        note = lock.acquire()
        notes += [note] if note else []
    run_holder = []
    stop = preemption.StopRequest(
        last_checkpoint=lambda: run_holder[0].last_checkpoint() if run_holder else "none yet",
        on_exit=lock.release,
    )
    try:
        with preemption.stop_requests(stop), _disk_full_is_one_line(config.model_dir, run_holder):
            return _train(config, strategy, inputs, model_fn, stop, run_holder, notes)
    finally:
        lock.release()


def _check_resume(run):
    """Refuse a rerun into the run dir that is another run (before anything is written
    there); returns the settings it changes, {name: [old, new]} ({} for a new run)."""
    model_dir = run.config.model_dir
    if not run_dir.is_run_dir(model_dir):
        return {}
    flat = run.flat_config()
    record, training = config_lib.run_record(flat, run.inputs.pixel_mean), config_lib.training_part(flat)
    return config_lib.resume_changes(model_dir, run_dir.read_config(model_dir), record, training)


def _train(config, strategy, inputs, model_fn, stop, run_holder, notes):
    """train() once the run dir is ours."""
    if strategy_lib.is_chief(strategy):
        removed = run_dir.remove_staging(config.model_dir)
        if removed:
            notes.append(f"removed {len(removed)} leftover(s) of interrupted writes: {', '.join(removed)}")
    if inputs is None:
        from keras_resnet.training.inputs import make_inputs

        inputs = synthetic_inputs(config) if config.synthetic_data else make_inputs(config)
    _seed_everything(config)
    run = _Run(config, strategy, inputs, model_fn)
    run_holder.append(run)
    changes = _check_resume(run)
    resumed, messages = run.restore()
    if run.chief:
        from keras_resnet.training.inputs import record_held_out

        record_held_out(config.model_dir, inputs.held_out)
        if changes:
            run_dir.append_history(config.model_dir, {"step": int(run.step.numpy()), "changed": changes})
    messages += [f"{name}: {old} -> {new} (kept in {run_dir.HISTORY_FILE})" for name, (old, new) in changes.items()]
    run.write_config()
    config = run.config
    start = int(run.step.numpy())
    reporter = Reporter(
        config.model_dir,
        total_steps=config.train_steps,
        start_step=start,
        batch_size=config.batch_size,
        log_interval=config.log_interval,
        classes=config.classes,
        enabled=run.chief,
    )
    for note in notes + messages + reporter.notes:
        reporter.print(note)
    data = "synthetic data (one batch on the device)" if config.synthetic_data else config.dataset
    reporter.print(
        f"{_start_description(resumed, config)}: {config.model} on {data}, "
        f"steps {start}..{config.train_steps}, batch {config.batch_size} over {strategy.num_replicas_in_sync} replica(s) "
        f"({config.strategy}), dtype {config.dtype}, up to {config.steps_per_loop} steps per loop, "
        f"model_dir {config.model_dir}"
    )
    replica_step = make_replica_step(
        run.model,
        run.optimizer,
        strategy,
        global_batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        decay_all_weights=config.decay_all_weights,
        label_smoothing=config.label_smoothing,
        jit_compile=config.jit_compile,
    )
    train_loop = make_train_loop(replica_step, strategy, run.schedule, run.optimizer, run.step, run.synthetic)
    eval_step = make_eval_step(run.model, strategy)
    with _worker_loss_is_one_line(config.strategy, run):
        stop.in_loop = True
        step, metrics, eval_metrics, preempted = _iterate(run, reporter, train_loop, eval_step, stop)
        if not preempted and run.saved_step != step:
            run.save(stop)
        stop.in_loop = False
        if not preempted:
            if run.eval_dataset is not None:
                eval_metrics = evaluate(eval_step, run.eval_dataset)
                reporter.eval(step, eval_metrics, train_loss=metrics.get("loss"))
    if _skipped_records(inputs):
        reporter.print(f"skipped {_skipped_records(inputs)} unreadable records (each named on stderr)")
    curves = reporter.close()
    if curves:
        reporter.print(f"training curves: {curves}")
    run.cleanup()
    return TrainResult(config.model_dir, step, metrics, eval_metrics, run.model, preempted)
