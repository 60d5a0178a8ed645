"""Training images/s (forward, backward, SGD momentum update) of keras_resnet beside
keras.applications, with XLA off/on and float32/bfloat16, and the trainer's own loop.

Rows, all on the same synthetic batch, interleaved (A B A B) after warm-up:
  {net}_{dtype}[_xla]   a bare step: one tf.function doing forward, cross-entropy, backward
                        and keras SGD (momentum 0.9) on a batch already in memory, for
                        net in keras_applications_resnet50, keras_resnet_resnet50,
                        keras_resnet_<--cifar_model>; dtype float32 or bfloat16 (the
                        mixed_bfloat16 policy, set while the models are built and restored)
  trainer_step          the trainer's step (keras_resnet.training.loop.make_train_step:
                        strategy.run, L2 penalty, error counts) fed by a tf.data iterator,
                        on the --cifar_model, float32: compare with its bare float32 row
  trainer_loop          keras_resnet.training.train itself (schedule, logging every
                        --iterations steps, checkpoint at the end) on the same net and batch;
                        images/s of its second log window, as its metrics.jsonl reports it.
                        Not interleaved (it is one call); run after the others.

GFLOP/s counts a training step as 3 forward passes (2 x multiply-adds each), the usual rule;
peak_fraction is against the matmul rate of the row's dtype measured in the same process.

    python bench/train_step.py --json /tmp/train_step.json
    python bench/train_step.py --quick --json /tmp/train_step.json   # smoke run
"""

from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (bench/timing.py, beside this script)

DTYPES = ("float32", "bfloat16")
REFERENCE_NET = "keras_applications_resnet50"
TRAINER_ROWS = ("trainer_step", "trainer_loop")
QUICK = {"batch_size": 2, "cifar_batch_size": 2, "image_size": 32, "iterations": 2, "warmup": 1, "matmul_size": 512}
# Every code path once (both ResNet-50s, bfloat16 with XLA, the trainer)
# without tracing all fifteen training graphs: a smoke run in about a minute of CPU time.
QUICK_ROWS = (
    "keras_applications_resnet50_float32",
    "keras_resnet_resnet50_float32",
    "keras_resnet_{cifar}_float32",
    "keras_resnet_{cifar}_bfloat16_xla",
    *TRAINER_ROWS,
)

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 32, "Images per step of the ImageNet nets.")
flags.DEFINE_integer(
    "cifar_batch_size", 128, "Images per step of the CIFAR net and the trainer rows (the paper's 128)."
)
flags.DEFINE_integer("image_size", 224, "Input size of the ImageNet nets.")
flags.DEFINE_string("cifar_model", "resnet56", "The CIFAR net of the bare rows and of the trainer rows.")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_bool(
    "quick",
    False,
    "Smoke run: batch 2, 32x32 inputs, 2 iterations, 512x512 matmul and, unless --rows is given, only the rows "
    f"{', '.join(QUICK_ROWS).replace('{cifar}', '<cifar_model>')}; proves the script works, its figures mean nothing.",
)
flags.DEFINE_list("rows", None, "Rows to run (comma list); default all (the module docstring names them).")
flags.DEFINE_integer("iterations", 10, "Timed steps per row (interleaved rounds); also the trainer loop's log window.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per row before timing (tracing, XLA compilation).")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmuls that measure the float32 and bfloat16 peaks.")


def nets(cifar_model):
    """{net row prefix: (builder of a logits model, is ImageNet)}."""
    import keras

    from keras_resnet import get_builder

    return {
        REFERENCE_NET: (
            lambda shape: keras.applications.ResNet50(weights=None, input_shape=shape, classifier_activation=None),
            True,
        ),
        "keras_resnet_resnet50": (
            lambda shape: get_builder("resnet50")(input_shape=shape, classifier_activation=None),
            True,
        ),
        f"keras_resnet_{cifar_model}": (
            lambda shape: cifar_builder(cifar_model)(input_shape=shape, classifier_activation=None),
            False,
        ),
    }


def all_rows(cifar_model):
    """Every row name, in printing order."""
    bare = [f"{net}_{dtype}{suffix}" for net in nets(cifar_model) for dtype in DTYPES for suffix in ("", "_xla")]
    return bare + list(TRAINER_ROWS)


def bare_step(model, optimizer, images, labels, jit_compile):
    """Forward, mean cross-entropy, backward and SGD update as one tf.function: the least
    a training step can do, against which the trainer's extras are measured."""
    import tensorflow as tf

    from keras_resnet.training.loop import cross_entropy

    variables = model.trainable_variables
    images, labels = tf.constant(images), tf.constant(labels)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.reduce_mean(cross_entropy(labels, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return lambda: step().numpy()


def bare_calls(run, wanted):
    """{row: call} and {row: (batch size, dtype, flops per image)} of the bare rows in
    `wanted`; one model (and optimizer) per net and dtype, shared by its XLA and non-XLA steps."""
    from keras_resnet import count_flops
    from keras_resnet.training.loop import dtype_policy

    calls, work = {}, {}
    for net, (make, imagenet) in nets(run["cifar_model"]).items():
        size = run["image_size"] if imagenet else 32
        batch_size = run["batch_size"] if imagenet else run["cifar_batch_size"]
        for dtype in DTYPES:
            names = {f"{net}_{dtype}": False, f"{net}_{dtype}_xla": True}
            names = {name: xla for name, xla in names.items() if name in wanted}
            if not names:
                continue
            with dtype_policy(dtype):
                model = make((size, size, 3))
            calls.update(steps(model, names, batch_size, size))
            work.update(dict.fromkeys(names, (batch_size, dtype, 3 * 2 * count_flops(model))))
    return calls, work


def steps(model, names, batch_size, size):
    """{row: bare step of `model`} for each {row: XLA?} in `names`, all on one synthetic batch
    and one SGD optimizer."""
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    images, labels = timing.synthetic_batch(batch_size, size, model.output_shape[-1])
    return {name: bare_step(model, optimizer, images, labels, xla) for name, xla in names.items()}


def trainer_inputs(batch_size, classes):
    """The trainer's Inputs over one synthetic CIFAR-sized batch, repeated forever."""
    import tensorflow as tf

    from keras_resnet.training import Inputs

    images, labels = timing.synthetic_batch(batch_size, 32, classes)
    train_fn = lambda context: tf.data.Dataset.from_tensors((images, labels)).repeat()  # noqa: E731
    return Inputs(
        train_fn, None, num_examples=1000 * batch_size, num_classes=classes, image_size=(32, 32), preprocess_mode="tf"
    )


def trainer_config(run, model_dir, train_steps):
    """The CIFAR recipe on the bench's net and batch, with checkpoints and evaluations only at the end."""
    from keras_resnet.training import recipe

    return recipe(
        "cifar",
        model=run["cifar_model"],
        model_dir=model_dir,
        batch_size=run["cifar_batch_size"],
        train_steps=train_steps,
        log_interval=run["iterations"],
        checkpoint_interval=train_steps + 1,
        eval_interval=0,
    )


def trainer_step_call(run):
    """The trainer's own step function (make_train_step) on its distributed iterator."""
    import tensorflow as tf

    from keras_resnet.training import loop, make_strategy

    config = trainer_config(run, "unused", 1)
    inputs = trainer_inputs(config.batch_size, 10)
    strategy = make_strategy("default")
    with strategy.scope():
        model = loop.build_model(config, (32, 32))
        optimizer = loop.make_optimizer(config, config.learning_rate)
    step = loop.make_train_step(
        model, optimizer, strategy, global_batch_size=config.batch_size, weight_decay=config.weight_decay
    )
    iterator = iter(strategy.distribute_datasets_from_function(inputs.train_fn))
    stop = tf.constant(0.0)
    return lambda: step(iterator, stop).numpy()


def trainer_loop_row(run, flops_per_image, peak):
    """keras_resnet.training.train for two log windows of --iterations steps; the second
    window's images/s (the first holds tracing) from the run's metrics.jsonl."""
    from keras_resnet.training import train
    from keras_resnet.training.reporting import read_metrics

    with tempfile.TemporaryDirectory() as model_dir:
        config = trainer_config(run, model_dir, 2 * run["iterations"])
        train(config, trainer_inputs(config.batch_size, 10))
        records = [r for r in read_metrics(model_dir) if r["split"] == "train"]
    images_per_s = records[-1]["images_per_sec"]
    step_ms = 1e3 * config.batch_size / images_per_s
    gflops = images_per_s * flops_per_image / 1e9
    return {
        "name": "trainer_loop",
        "images_per_s": images_per_s,
        "p50_ms": step_ms,
        "p99_ms": None,
        "gflops_per_s": gflops,
        "peak_fraction": gflops / peak if peak else None,
        "note": f"mean step over the window of {run['iterations']} steps (metrics.jsonl); p99 not recorded by the trainer",
    }


def cifar_builder(name):
    """The registered CIFAR net `name`, or a usage error naming why not."""
    from keras_resnet import get_builder

    try:
        builder = get_builder(name)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if builder.spec.stem != "cifar":
        raise app.UsageError(f"--cifar_model={name!r} is an ImageNet net; give a CIFAR one (resnet20 ... resnet1202)")
    return builder


def main(argv):
    del argv
    run = timing.settings(FLAGS, QUICK, ("cifar_model",))
    cifar_builder(run["cifar_model"])
    names = all_rows(run["cifar_model"])
    quick_rows = [name.format(cifar=run["cifar_model"]) for name in QUICK_ROWS]
    wanted = set(FLAGS.rows or (quick_rows if FLAGS.quick else names))
    if wanted - set(names):
        raise app.UsageError(f"--rows {sorted(wanted - set(names))} unknown; choose from {', '.join(names)}")
    timing.require_positive(run, ("batch_size", "cifar_batch_size", "iterations", "matmul_size"))
    if run["image_size"] < 32:
        raise app.UsageError(f"--image_size={run['image_size']} must be >= 32 (the nets reduce by 32)")
    from keras_resnet import count_flops

    calls, work = bare_calls(run, wanted)
    trainer_work = (run["cifar_batch_size"], "float32", 3 * 2 * count_flops(cifar_builder(run["cifar_model"])()))
    if "trainer_step" in wanted:
        calls["trainer_step"] = trainer_step_call(run)
        work["trainer_step"] = trainer_work
    peaks = {dtype: timing.matmul_gflops(run["matmul_size"], dtype) for dtype in DTYPES}
    seconds = timing.interleaved(calls, warmup=run["warmup"], iterations=run["iterations"])
    rows = []
    for name in names:
        if name in seconds:
            batch_size, dtype, flops = work[name]
            rows.append(
                timing.row(name, seconds[name], batch_size=batch_size, flops_per_image=flops, peak_gflops=peaks[dtype])
            )
        elif name == "trainer_loop" and name in wanted:
            rows.append(trainer_loop_row(run, trainer_work[2], peaks["float32"]))
    timing.add_ratios(rows, lambda name: reference_row(name, run["cifar_model"]))
    report(run, rows, peaks)


def reference_row(name, cifar_model):
    """What a row is compared with: an ImageNet net's row with keras.applications' at the same
    dtype and XLA setting; the CIFAR and trainer rows with the bare float32 CIFAR step."""
    for net in (REFERENCE_NET, "keras_resnet_resnet50"):
        if name.startswith(net + "_"):
            return REFERENCE_NET + name[len(net) :]
    return f"keras_resnet_{cifar_model}_float32"


def report(run, rows, peaks):
    """Print the table and write --json."""
    timing.print_title(
        f"training steps: ImageNet nets at {run['image_size']}x{run['image_size']} batch {run['batch_size']}, "
        f"{run['cifar_model']} at 32x32 batch {run['cifar_batch_size']}; {run['iterations']} interleaved steps per row "
        f"after {run['warmup']} warm-up; matmul {run['matmul_size']}^2: float32 {peaks['float32']:.1f}, bfloat16 "
        f"{peaks['bfloat16']:.1f} GFLOP/s",
        FLAGS.quick,
    )
    timing.print_table(rows, "ratio")
    print(
        f"ratio: ResNet-50 rows over keras_applications_resnet50 at the same dtype and XLA setting; "
        f"{run['cifar_model']} and trainer rows over keras_resnet_{run['cifar_model']}_float32 (the bare step)"
    )
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=("tensorflow", "keras", "numpy"),
            quick=FLAGS.quick,
            rows=rows,
            **run,
            peak_gflops=peaks["float32"],
            peak_gflops_bfloat16=peaks["bfloat16"],
        )


if __name__ == "__main__":
    app.run(main)
