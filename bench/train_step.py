"""Training images/s (forward, backward, SGD momentum update) of keras_resnet beside
keras.applications, with XLA off/on and float32/bfloat16, and the trainer's own loop.

Rows, all on the same synthetic batch, interleaved (A B A B) after warm-up:
  {net}_{dtype}[_xla]   a bare step: one tf.function doing forward, cross-entropy, backward
                        and keras SGD (momentum 0.9) on a batch already in memory, for
                        net in keras_applications_resnet50, keras_resnet_resnet50,
                        keras_resnet_<--cifar_model>; dtype float32 or bfloat16 (the
                        mixed_bfloat16 policy, set while the models are built and restored)

The trainer beside its own step, float32, for net resnet20 (ResNet-20 at batch 128) and
tiny (ResNet-8, one block per stage, at batch 32, where the host's share is largest):
  bare_{net}            the trainer's step (keras_resnet.training.loop.make_replica_step:
                        forward, loss with the L2 penalty, backward, SGD momentum, error
                        counts) compiled alone in one tf.function on a device-resident
                        batch, called once per step (interleaved with the other bare rows)
  trainer_{net}         keras_resnet.training.train itself with --synthetic_data and the
                        default --steps_per_loop, logging every --trainer_steps; images/s
                        of its second log window (the first holds tracing), as its
                        metrics.jsonl reports it; x_bare_step: over bare_{net}
  trainer_{net}_loop1   the same with --steps_per_loop 1 (one call into the graph per step)

GFLOP/s counts a training step as 3 forward passes (2 x multiply-adds each), the usual rule;
peak_fraction is against the matmul rate of the row's dtype measured in the same process.

    python bench/train_step.py --json /tmp/train_step.json
    python bench/train_step.py --quick --json /tmp/train_step.json   # smoke run
    python bench/train_step.py --rows bare_resnet20,trainer_resnet20,trainer_resnet20_loop1,bare_tiny,trainer_tiny,trainer_tiny_loop1
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
TRAINER_NETS = {"resnet20": 128, "tiny": 32}  # net: batch size
TRAINER_ROWS = tuple(row for net in TRAINER_NETS for row in (f"bare_{net}", f"trainer_{net}", f"trainer_{net}_loop1"))
QUICK = {
    "batch_size": 2,
    "cifar_batch_size": 2,
    "image_size": 32,
    "iterations": 2,
    "warmup": 1,
    "matmul_size": 512,
    "trainer_steps": 3,
}
# Every code path once (both ResNet-50s, bfloat16 with XLA, the trainer)
# without tracing all fifteen training graphs: a smoke run in about a minute of CPU time.
QUICK_ROWS = (
    "keras_applications_resnet50_float32",
    "keras_resnet_resnet50_float32",
    "keras_resnet_{cifar}_float32",
    "keras_resnet_{cifar}_bfloat16_xla",
    "bare_tiny",
    "trainer_tiny",
    "trainer_tiny_loop1",
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
flags.DEFINE_integer("iterations", 10, "Timed steps per row (interleaved rounds).")
flags.DEFINE_integer(
    "trainer_steps", 200, "The trainer rows' log window: they train two windows and report the second."
)
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


def trainer_config(net, model_dir, window, steps_per_loop=None):
    """The CIFAR recipe on synthetic data for a trainer row: two log windows, no evaluation,
    a checkpoint only at the end."""
    from keras_resnet.training import TrainConfig, recipe

    return recipe(
        "cifar",
        model="resnet20",
        model_dir=model_dir,
        classes=10,
        batch_size=TRAINER_NETS[net],
        train_steps=2 * window,
        log_interval=window,
        checkpoint_interval=2 * window,
        eval_interval=0,
        lr_boundaries=(),
        synthetic_data=True,
        steps_per_loop=steps_per_loop or TrainConfig.steps_per_loop,
    )


def trainer_model_fn(net):
    """The trainer's model_fn for `net` (None: the registered resnet20 of the config)."""
    if net == "resnet20":
        return None

    def resnet8(config, image_size):
        from keras_resnet import CifarResNet

        return CifarResNet(1, classes=config.classes, input_shape=(*image_size, 3), classifier_activation=None)

    return resnet8


def bare_call(net):
    """The trainer's own per-replica step, alone in a tf.function, on one batch kept on the device."""
    import tensorflow as tf

    from keras_resnet.training import loop

    config = trainer_config(net, "unused", 1)
    strategy = tf.distribute.get_strategy()
    model = (trainer_model_fn(net) or loop.build_model)(config, (32, 32))
    optimizer = loop.make_optimizer(config, config.learning_rate)
    replica_step = loop.make_replica_step(
        model, optimizer, strategy, global_batch_size=config.batch_size, weight_decay=config.weight_decay
    )
    images, labels = loop.synthetic_batch((config.batch_size, 32, 32, 3), config.classes)

    @tf.function
    def step():
        return strategy.run(replica_step, args=(tf.constant(images), tf.constant(labels)))

    return lambda: step().numpy()


def trainer_row(name, window, flops_per_image, peak):
    """keras_resnet.training.train for two log windows; the second window's images/s (the
    first holds tracing) from the run's metrics.jsonl."""
    from keras_resnet.training import train
    from keras_resnet.training.reporting import read_metrics

    net = name.split("_")[1]
    with tempfile.TemporaryDirectory() as model_dir:
        config = trainer_config(net, model_dir, window, 1 if name.endswith("_loop1") else None)
        train(config, model_fn=trainer_model_fn(net))
        records = [r for r in read_metrics(model_dir) if r["split"] == "train"]
    images_per_s = records[-1]["images_per_sec"]
    gflops = images_per_s * flops_per_image / 1e9
    return {
        "name": name,
        "images_per_s": images_per_s,
        "p50_ms": 1e3 * config.batch_size / images_per_s,
        "p99_ms": None,
        "gflops_per_s": gflops,
        "peak_fraction": gflops / peak if peak else None,
        "steps_per_loop": config.steps_per_loop,
        "note": f"mean step over the window of {window} steps (metrics.jsonl); p99 not recorded by the trainer",
    }


def trainer_flops(net):
    """Multiply-adds of a training step per image of a trainer row's net, x 3 x 2."""
    from keras_resnet import count_flops
    from keras_resnet.training import loop

    config = trainer_config(net, "unused", 1)
    return 3 * 2 * count_flops((trainer_model_fn(net) or loop.build_model)(config, (32, 32)))


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
    timing.require_positive(run, ("batch_size", "cifar_batch_size", "iterations", "matmul_size", "trainer_steps"))
    if run["image_size"] < 32:
        raise app.UsageError(f"--image_size={run['image_size']} must be >= 32 (the nets reduce by 32)")
    calls, work = bare_calls(run, wanted)
    flops = {
        net: trainer_flops(net)
        for net in TRAINER_NETS
        if any(n.split("_")[1] == net for n in wanted & set(TRAINER_ROWS))
    }
    for net in TRAINER_NETS:
        if f"bare_{net}" in wanted:
            calls[f"bare_{net}"] = bare_call(net)
            work[f"bare_{net}"] = (TRAINER_NETS[net], "float32", flops[net])
    peaks = {dtype: timing.matmul_gflops(run["matmul_size"], dtype) for dtype in DTYPES}
    seconds = timing.interleaved(calls, warmup=run["warmup"], iterations=run["iterations"])
    rows = []
    for name in names:
        if name in seconds:
            batch_size, dtype, per_image = work[name]
            rows.append(
                timing.row(
                    name, seconds[name], batch_size=batch_size, flops_per_image=per_image, peak_gflops=peaks[dtype]
                )
            )
        elif name in wanted:  # a trainer row: one call each, after the interleaved rows
            rows.append(trainer_row(name, run["trainer_steps"], flops[name.split("_")[1]], peaks["float32"]))
    timing.add_ratios(rows, lambda name: reference_row(name, run["cifar_model"]))
    timing.add_ratios(rows, bare_of, field="x_bare_step")
    report(run, rows, peaks)


def bare_of(name):
    """A trainer row's bare step row (None for the others)."""
    return f"bare_{name.split('_')[1]}" if name.startswith("trainer_") else None


def reference_row(name, cifar_model):
    """What a row is compared with: an ImageNet net's row with keras.applications' at the same
    dtype and XLA setting; the CIFAR rows with the bare float32 CIFAR step; the trainer
    table's rows have their own ratio (x_bare_step)."""
    if name in TRAINER_ROWS:
        return None
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
    timing.print_table([r for r in rows if r["name"] not in TRAINER_ROWS], "ratio")
    print(
        f"ratio: ResNet-50 rows over keras_applications_resnet50 at the same dtype and XLA setting; "
        f"{run['cifar_model']} rows over keras_resnet_{run['cifar_model']}_float32 (the bare step)"
    )
    from keras_resnet.training import TrainConfig

    trainer = [{**r, "ratio": r["x_bare_step"]} for r in rows if r["name"] in TRAINER_ROWS]
    if trainer:
        print(
            f"\nthe trainer (synthetic data, float32): resnet20 = ResNet-20 at batch 128, tiny = ResNet-8 at batch "
            f"32; trainer rows: window {run['trainer_steps']} steps, steps_per_loop {TrainConfig.steps_per_loop} "
            "(the default) or 1 (_loop1); x_bare: images/s over the bare step's"
        )
        timing.print_table(trainer, "x_bare")
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
