"""The helpers every bench script shares: its settings, synthetic batches, interleaved timing,
medians, machine facts, the printed table and the JSON result.

Framework-free (numpy, absl and the standard library; Keras, on whichever backend is
installed, only inside `matmul_gflops`), so `bench/gpu.py` uses it on a machine without
TensorFlow. Every timed callable must return only once its work is done (`.numpy()`, a host
copy, or a device synchronisation), so a call's wall time is the batch's time.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app

ROW_FIELDS = ("name", "images_per_s", "p50_ms", "p99_ms", "gflops_per_s", "peak_fraction")


SETTLE_S = 0.05
NAME_WIDTH = 44  # the longest row name, keras_applications_resnet50_bfloat16_xla, fits
QUICK_NOTE = " (QUICK: smoke run, figures meaningless)"
# The vector instructions that decide which kernels run: TensorFlow turns its oneDNN kernels on
# by default only on a CPU with AVX-512 VNNI (or BF16, AMX), else it runs Eigen's.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
# Settings of the environment that change which kernels run, recorded beside every figure.
PERFORMANCE_ENV = ("TF_ENABLE_ONEDNN_OPTS", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "XLA_FLAGS", "KERAS_BACKEND")


def settings(flag_values, quick, names=()):
    """{flag: value} of the flags `names` and those in `quick`, with `quick`'s small values
    where --quick is set and the flag was not given on the command line."""
    values = {name: flag_values[name].value for name in (*names, *quick)}
    if flag_values.quick:
        values.update({name: value for name, value in quick.items() if not flag_values[name].present})
    return values


def require_positive(run, names):
    """A usage error naming the first of `names` whose value in `run` is below 1."""
    for name in names:
        if run[name] < 1:
            raise app.UsageError(f"--{name}={run[name]} must be >= 1")


def synthetic_batch(batch_size, size, classes, seed=0):
    """Random normalised images (NHWC float32) and int32 labels: a step's speed does not depend
    on their values."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, size, size, 3)).astype("float32")
    return images, rng.integers(0, classes, size=batch_size).astype("int32")


def interleaved(calls, *, warmup, iterations, settle_s=SETTLE_S, rewarm=0, returned=None):
    """{name: per-call seconds} of each callable in `calls`, run in rounds A B C A B C ...

    Each is first called `warmup` times (tracing, compilation, caches); then every round
    runs each once, so a slow spell of a shared machine falls on all rows alike. Each timed
    call starts `settle_s` after the previous one ended, so the previous runtime's idle
    threads have stopped spinning (onnxruntime's spin on after a run and would slow the
    next row on a machine with few cores). `rewarm` untimed calls of the same row come
    before each timed one: the first call after another runtime ran finds its memory cold,
    which a server running one model never meets. With a dict `returned`, what each timed call
    returns is appended to `returned[name]`.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    seconds = {name: [] for name in calls}
    for _ in range(iterations):
        for name, call in calls.items():
            for _ in range(rewarm):
                call()
            time.sleep(settle_s)
            start = time.perf_counter()
            value = call()
            seconds[name].append(time.perf_counter() - start)
            if returned is not None:
                returned.setdefault(name, []).append(value)
    return {name: np.asarray(values) for name, values in seconds.items()}


def row(name, seconds, *, batch_size, flops_per_image=None, peak_gflops=None):
    """One result row: images/s at the median call, p50/p99 latency of a call (one batch),
    achieved GFLOP/s (`flops_per_image` x images/s) and its fraction of `peak_gflops`."""
    p50 = float(np.percentile(seconds, 50))
    images_per_s = batch_size / p50
    gflops = images_per_s * flops_per_image / 1e9 if flops_per_image else None
    return {
        "name": name,
        "images_per_s": images_per_s,
        "p50_ms": 1e3 * p50,
        "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
        "gflops_per_s": gflops,
        "peak_fraction": gflops / peak_gflops if gflops and peak_gflops else None,
    }


def add_ratios(rows, reference, field="ratio"):
    """Add `{field}_to` (the row compared with: `reference(name)`, None for none) and `field`
    (images/s over that row's; None when there is none or it did not run) to each row."""
    rates = {r["name"]: r["images_per_s"] for r in rows}
    for r in rows:
        r[f"{field}_to"] = reference(r["name"])
        base = rates.get(r[f"{field}_to"])
        r[field] = r["images_per_s"] / base if base else None
    return rows


def matmul_gflops(size=4096, dtype="float32", iterations=10, min_call_s=0.1):
    """The machine's dense matmul rate in GFLOP/s (2 n^3 per product, median of a few calls):
    the roofline the convolutions are measured against, taken in the same process, on the
    default device of whichever Keras backend is installed (tf.linalg.matmul under TensorFlow).

    Each timed call queues enough products to last about `min_call_s`: on a GPU one large
    product lasts about as long as a call's dispatch and host sync, so timing single products
    would under-report the rate."""
    import keras
    from keras import ops

    a = keras.random.normal((size, size), dtype=dtype, seed=0)

    def products(count):
        def call():
            for _ in range(count):
                product = ops.matmul(a, a)
            return ops.convert_to_numpy(ops.sum(ops.cast(product, "float32")))

        return call

    single = float(np.median(interleaved({"matmul": products(1)}, warmup=2, iterations=3)["matmul"]))
    count = max(1, math.ceil(min_call_s / single))
    seconds = interleaved({"matmul": products(count)}, warmup=1, iterations=iterations)["matmul"]
    return 2 * count * size**3 / float(np.median(seconds)) / 1e9


def cpuinfo():
    """{field: value} of the first processor in /proc/cpuinfo (Linux), else {}."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_features(info):
    """Which of CPU_FEATURES the CPU has ([] where /proc/cpuinfo is not there to say)."""
    flags = set(info.get("flags", "").split())
    return [feature for feature in CPU_FEATURES if feature in flags]


def gpu_names():
    """Names of the NVIDIA GPUs nvidia-smi lists ([] without one), without importing a framework."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine():
    """What a figure was measured on: CPU model, family and model number, its vector
    instructions, cores this process may use, GPUs."""
    info = cpuinfo()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": info.get("cpu family"),
        "cpu_model_number": info.get("model"),  # one family spans generations (AMD 25: Zen 3 and Zen 4)
        "cpu_features": cpu_features(info),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu_names(),
        "python": platform.python_version(),
    }


def versions(*packages):
    """{package: version} of those installed; missing ones are left out."""
    found = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def header():
    """The facts every JSON result starts with: date, command, machine, and the settings of
    PERFORMANCE_ENV that were set."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": machine(),
        "environment": performance_env(),
    }


def performance_env():
    """{name: value} of the PERFORMANCE_ENV variables set in this process's environment."""
    return {name: os.environ[name] for name in PERFORMANCE_ENV if name in os.environ}


def _text(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_table(rows, ratio_label):
    """The rows as a fixed-width table; the `ratio` column headed `ratio_label`."""
    print(
        f"{'row':{NAME_WIDTH}s} {'images/s':>9s} {'p50 ms':>9s} {'p99 ms':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {ratio_label:>9s}"
    )
    for r in rows:
        peak = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
        print(
            f"{r['name']:{NAME_WIDTH}s} {_text(r['images_per_s'], '.1f'):>9s} {_text(r['p50_ms'], '.1f'):>9s} "
            f"{_text(r['p99_ms'], '.1f'):>9s} {_text(r['gflops_per_s'], '.1f'):>8s} {_text(peak, '.1f', '%'):>8s} "
            f"{_text(r.get('ratio'), '.2f', 'x'):>9s}"
        )


def print_skipped(skipped):
    """One line per row that did not run, with why."""
    for name, reason in skipped.items():
        print(f"{name:{NAME_WIDTH}s} skipped: {reason}")


def print_title(line, quick):
    """The table's title line: what was run, the PERFORMANCE_ENV settings that were set, marked
    as a smoke run under --quick."""
    settings = " ".join(f"{name}={value}" for name, value in performance_env().items())
    print(line + (f" [{settings}]" if settings else "") + (QUICK_NOTE if quick else ""))


def write_result(path, *, packages, quick, rows, **fields):
    """The JSON result every script writes: header (date, command, machine), the `packages`'
    versions, --quick, the run's `fields`, then the rows."""
    write_json(path, {**header(), "versions": versions(*packages), "quick": quick, **fields, "rows": rows})


def write_json(path, result):
    """Write `result` to `path` (indented), creating its directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
