"""ResNet-50 training and inference images/s on a GPU: keras_resnet on whichever Keras backend
is installed (TensorFlow, or JAX with KERAS_BACKEND=jax) against torchvision's ResNet-50, in
the same run, interleaved (A B C D) after warm-up.

  keras_resnet_train       model.train_on_batch: forward, backward, SGD momentum 0.9, under
                           the mixed_bfloat16 policy, compiled by the backend (XLA for JAX)
  keras_resnet_jit_train   the same step as `fit` runs it between host syncs, without the
                           per-call Keras work of train_on_batch (reading the variables in,
                           writing them back): Keras' stateless API under jax.jit, the state
                           donated and carried (JAX backend only)
  keras_resnet_inference   model.predict_on_batch, mixed_bfloat16
  keras_resnet_jit_inference  model.stateless_call(training=False) under jax.jit (JAX only)
  keras_applications_jit_train / keras_applications_jit_inference
                           keras.applications.ResNet50 (the paper's stride placement, conv
                           biases) in the same two jitted steps (JAX only): keras_resnet's
                           jit rows are also compared with these (field x_keras_applications)
  torchvision_train        torchvision.models.resnet50, channels_last, bf16 autocast,
                           torch.compile, SGD momentum 0.9
  torchvision_inference    the same under torch.inference_mode

Batches are made once on the device, so no row times a host-to-device copy. torchvision's
ResNet-50 is v1.5 (stride on the 3x3: 4.09 GMAC per image at 224); keras_resnet's default is
the paper's (stride on the 1x1: 3.86 GMAC): --stride_in=3x3 times the same net as
torchvision. GFLOP/s counts each net's own multiply-adds (x2; x3 for a training step), and
peak_fraction is against the bfloat16 matmul rate measured in the same process.

--profile DIR traces --profile_steps calls of each row after the timing (jax.profiler for the
Keras rows on JAX, torch.profiler for torch's), keeps the traces there (Perfetto / Chrome JSON,
gzipped; open them in ui.perfetto.dev) and prints each row's GPU busy time per call, split
into convolutions and matmuls and the rest, with its largest kernels (bench/profiling.py).

This script never imports TensorFlow unless it is the Keras backend (the GPU image has JAX
and PyTorch only), and the torch rows are skipped, with the reason, where torch is missing.

    KERAS_BACKEND=jax python bench/gpu.py --json /tmp/gpu.json
    KERAS_BACKEND=jax python bench/gpu.py --quick --json /tmp/gpu.json   # tiny CPU smoke run
"""

from __future__ import annotations

import os
import sys

# JAX would otherwise take 75 % of the GPU's memory at start, leaving torch too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import profiling  # noqa: E402  (bench/profiling.py, beside this script)
import timing  # noqa: E402  (bench/timing.py, beside this script)

ROWS = (
    "keras_resnet_train",
    "keras_resnet_jit_train",
    "keras_resnet_inference",
    "keras_resnet_jit_inference",
    "keras_applications_jit_train",
    "keras_applications_jit_inference",
    "torchvision_train",
    "torchvision_inference",
)
KERAS_ROWS = tuple(name for name in ROWS if name.startswith("keras_"))
JIT_ROWS = tuple(name for name in KERAS_ROWS if "_jit_" in name)
SAME_STEP_AS_APPLICATIONS = {
    "keras_resnet_jit_train": "keras_applications_jit_train",
    "keras_resnet_jit_inference": "keras_applications_jit_inference",
}
REFERENCE = {name: "torchvision_train" if name.endswith("_train") else "torchvision_inference" for name in KERAS_ROWS}
CLASSES = 1000
QUICK = {"batch_size": 2, "image_size": 64, "iterations": 2, "warmup": 1, "matmul_size": 256, "torch_compile": False}

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 256, "Images per step.")
flags.DEFINE_integer("image_size", 224, "Input height and width.")
flags.DEFINE_enum(
    "stride_in", "1x1", ["1x1", "3x3"], "keras_resnet's bottleneck stride: 1x1 (the paper) or 3x3 (torchvision's v1.5)."
)
flags.DEFINE_list("rows", list(ROWS), f"Rows to run, a comma list from {','.join(ROWS)}.")
flags.DEFINE_integer("iterations", 30, "Timed steps per row (interleaved rounds).")
flags.DEFINE_integer("warmup", 5, "Untimed steps per row first (compilation, autotuning).")
flags.DEFINE_integer("matmul_size", 8192, "Side of the square bfloat16 matmul that measures the device's peak.")
flags.DEFINE_bool("torch_compile", True, "torch.compile torchvision's model (off: eager).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this path.")
flags.DEFINE_string(
    "profile",
    None,
    "Also trace --profile_steps calls of each row into this directory after the timing, and print each "
    "row's GPU busy time per call and its largest kernels.",
)
flags.DEFINE_integer("profile_steps", 3, "Calls of each row traced by --profile.")
flags.DEFINE_bool(
    "quick",
    False,
    "Tiny smoke run that works on a CPU: batch 2, 64x64, 2 steps, 256x256 matmul, torch.compile off; "
    "proves the script works, its figures mean nothing.",
)


def keras_calls(run, wanted):
    """keras_resnet's ResNet-50 rows (the backend's own compiled train and predict steps, and
    the jitted ones) and keras.applications' jitted rows.
    Returns (calls, {row: multiply-adds per image}, {row: why skipped})."""
    import keras

    from keras_resnet import ResNet50, count_flops

    size = run["image_size"]
    images, labels = timing.synthetic_batch(run["batch_size"], size, CLASSES)
    images, labels = keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)
    on_jax = keras.backend.backend() == "jax"
    calls, macs = {}, {}
    jax_only = f"JAX backend only (this run: {keras.backend.backend()})"
    skipped = {} if on_jax else {name: jax_only for name in JIT_ROWS if name in wanted}
    if any(name.startswith("keras_resnet_") for name in wanted):
        model = compiled(ResNet50(input_shape=(size, size, 3), stride_in=FLAGS.stride_in, classifier_activation=None))
        calls["keras_resnet_train"] = lambda: model.train_on_batch(images, labels)  # returns host floats: synchronised
        calls["keras_resnet_inference"] = lambda: model.predict_on_batch(images)  # returns a NumPy array
        if on_jax:
            calls.update(jax_jit_calls(model, images, labels, "keras_resnet"))
        macs.update(dict.fromkeys(calls, count_flops(model)))
    if on_jax and any(name.startswith("keras_applications_") for name in wanted):
        reference = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        reference = compiled(reference)
        applications_calls = jax_jit_calls(reference, images, labels, "keras_applications")
        calls.update(applications_calls)
        macs.update(dict.fromkeys(applications_calls, count_flops(reference)))
    calls = {name: call for name, call in calls.items() if name in wanted}
    return calls, {name: macs[name] for name in calls}, skipped


def compiled(model):
    """`model` compiled as every Keras row trains it: SGD momentum 0.9, cross-entropy on logits."""
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def jax_jit_calls(model, images, labels, prefix):
    """`{prefix}_jit_train` and `{prefix}_jit_inference`: the jitted stateless train step (Keras'
    documented JAX training loop) and forward pass.

    They run on copies of the model's variables: the train step donates its state, which must
    not free the buffers that the train_on_batch row still holds."""
    import jax

    def copies(variables):
        return [jax.numpy.array(v.value, copy=True) for v in variables]

    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)

    def loss_and_updates(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return model.loss(y, logits), non_trainable

    gradient = jax.value_and_grad(loss_and_updates, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, optimizer_state = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return (trainable, non_trainable, optimizer_state), loss

    compiled_step = jax.jit(train_step, donate_argnums=0)
    state = {
        "now": (copies(model.trainable_variables), copies(model.non_trainable_variables), copies(optimizer.variables))
    }

    def train():
        state["now"], loss = compiled_step(state["now"], images, labels)
        loss.block_until_ready()

    forward = jax.jit(
        lambda trainable, non_trainable, x: model.stateless_call(trainable, non_trainable, x, training=False)[0]
    )
    weights = (copies(model.trainable_variables), copies(model.non_trainable_variables))
    return {
        f"{prefix}_jit_train": train,
        f"{prefix}_jit_inference": lambda: forward(*weights, images).block_until_ready(),
    }


def torch_calls(run, wanted):
    """torchvision's ResNet-50 rows (channels_last, bf16 autocast, torch.compile).

    Returns (calls, multiply-adds per image, skipped reason or None)."""
    wanted = wanted & {"torchvision_train", "torchvision_inference"}
    if not wanted:
        return {}, None, None
    try:
        import torch
        import torchvision
    except ImportError as error:
        return {}, None, f"torch/torchvision not installed ({error})"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, labels = timing.synthetic_batch(run["batch_size"], run["image_size"], CLASSES)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels).long().to(device)

    def prepared(model):
        model = model.to(device, memory_format=torch.channels_last)
        return torch.compile(model) if run["torch_compile"] else model

    def synchronised(fn):
        def call():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()

        return call

    train_model = torchvision.models.resnet50()
    compiled_train = prepared(train_model)
    optimizer = torch.optim.SGD(train_model.parameters(), lr=0.1, momentum=0.9)

    def train_step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(compiled_train(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    compiled_eval = prepared(torchvision.models.resnet50().eval())

    def inference_step():
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16):
            compiled_eval(x)

    calls = {"torchvision_train": synchronised(train_step), "torchvision_inference": synchronised(inference_step)}
    return (
        {name: call for name, call in calls.items() if name in wanted},
        torchvision_multiply_adds(run["image_size"]),
        None,
    )


def torchvision_multiply_adds(size):
    """torchvision's ResNet-50 is keras_resnet's with the stride on the 3x3 (v1.5): count that."""
    from keras_resnet import ResNet50, count_flops

    return count_flops(ResNet50(input_shape=(size, size, 3), stride_in="3x3"))


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"--rows {unknown} unknown; choose from {', '.join(ROWS)}")
    run = timing.settings(FLAGS, QUICK)
    timing.require_positive(run, ("batch_size", "iterations", "matmul_size"))
    if FLAGS.profile_steps < 1:
        raise app.UsageError(f"--profile_steps={FLAGS.profile_steps} must be >= 1")
    if run["image_size"] < 32:
        raise app.UsageError(f"--image_size={run['image_size']} must be >= 32 (ResNet-50 reduces by 32)")
    import keras

    # This script is the whole program: the policy is set for all its models, for its lifetime.
    keras.config.set_dtype_policy("mixed_bfloat16")
    wanted = set(FLAGS.rows)
    calls, macs, skipped = {}, {}, {}
    if wanted & set(KERAS_ROWS):
        keras_rows, keras_macs, skipped = keras_calls(run, wanted)
        calls.update(keras_rows)
        macs.update(keras_macs)
    torch_rows, torch_macs, reason = torch_calls(run, wanted)
    calls.update(torch_rows)
    macs.update(dict.fromkeys(torch_rows, torch_macs))
    skipped.update({name: reason for name in ROWS if reason and name in wanted and name.startswith("torchvision_")})
    peak = timing.matmul_gflops(run["matmul_size"], "bfloat16")
    calls = {name: calls[name] for name in ROWS if name in calls}
    seconds = timing.interleaved(calls, warmup=run["warmup"], iterations=run["iterations"])
    rows = [
        timing.row(
            name,
            seconds[name],
            batch_size=run["batch_size"],
            peak_gflops=peak,
            flops_per_image=(3 if name.endswith("_train") else 1) * 2 * macs[name],
        )
        for name in calls
    ]
    timing.add_ratios(rows, lambda name: REFERENCE.get(name, name))
    timing.add_ratios(rows, SAME_STEP_AS_APPLICATIONS.get, field="x_keras_applications")
    profiles = profiling.profile(calls, FLAGS.profile, FLAGS.profile_steps) if FLAGS.profile else None
    report(run, rows, skipped, peak, profiles)


def report(run, rows, skipped, peak, profiles):
    """Print the table and write --json."""
    import keras

    backend = keras.backend.backend()
    timing.print_title(
        f"ResNet-50 at {run['image_size']}x{run['image_size']}, batch {run['batch_size']}, mixed_bfloat16, Keras backend "
        f"{backend}, keras_resnet stride_in {FLAGS.stride_in}; {run['iterations']} interleaved steps per row after "
        f"{run['warmup']} warm-up; bfloat16 matmul {run['matmul_size']}^2: {peak:.0f} GFLOP/s",
        FLAGS.quick,
    )
    timing.print_table(rows, "x torch")
    paired = [r for r in rows if r["x_keras_applications"]]
    if paired:
        net = (
            "the same net" if FLAGS.stride_in == "1x1" else "keras.applications has the stride on the 1x1, not the 3x3"
        )
        print(
            "keras_resnet / keras.applications, same jitted step ("
            + net
            + "): "
            + ", ".join(f"{r['name']} {r['x_keras_applications']:.2f}x" for r in paired)
        )
    timing.print_skipped(skipped)
    if profiles:
        profiling.print_profiles(rows, profiles)
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=("keras", "jax", "jaxlib", "tensorflow", "torch", "torchvision", "numpy"),
            quick=FLAGS.quick,
            rows=rows,
            backend=backend,
            **run,
            stride_in=FLAGS.stride_in,
            peak_gflops_bfloat16=peak,
            skipped=skipped,
            profile=profiles,
        )


if __name__ == "__main__":
    app.run(main)
