"""GPU profiles of bench rows: each row's calls traced (jax.profiler for Keras on JAX,
torch.profiler for torch), the traces kept, and each summarised as GPU busy time per call,
split into convolutions and matmuls and the rest, with the largest kernels.

Framework imports stay inside the functions that trace, so the summary of a saved trace
(`gpu_time_summary`) reads on any machine.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import shutil
import tempfile

import timing


def profile(calls, directory, steps):
    """Trace `steps` calls of each row into `directory`: {row: gpu_time_summary(...) or
    {"skipped": why}}."""
    import keras

    os.makedirs(directory, exist_ok=True)
    summaries = {}
    for name, call in calls.items():
        path = os.path.join(directory, f"{name}.trace.json.gz")
        if name.startswith("torchvision_"):
            trace_torch(call, steps, path)
        elif keras.backend.backend() == "jax":
            trace_jax(call, steps, path)
        else:
            summaries[name] = {"skipped": f"profiles the Keras rows on JAX only (this run: {keras.backend.backend()})"}
            continue
        with gzip.open(path, "rt") as f:
            summaries[name] = gpu_time_summary(json.load(f), steps)
    return summaries


def trace_jax(call, steps, path):
    """`steps` calls under jax.profiler; its Perfetto trace moved to `path`."""
    import jax

    with tempfile.TemporaryDirectory() as scratch:
        with jax.profiler.trace(scratch, create_perfetto_trace=True):
            for _ in range(steps):
                call()
        [trace] = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "perfetto_trace.json.gz"))
        shutil.move(trace, path)


def trace_torch(call, steps, path):
    """`steps` calls under torch.profiler (CPU and CUDA activity); its Chrome trace to `path`."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as recorded:
        for _ in range(steps):
            call()
    recorded.export_chrome_trace(path)  # gzipped by torch: the path ends in .gz


TORCH_GPU_CATEGORIES = ("kernel", "gpu_memset", "gpu_memcpy")


def gpu_operations(trace):
    """(name, microseconds) of everything a GPU ran (kernels, memsets, copies) in a Chrome or
    Perfetto trace: torch.profiler files them under the categories in TORCH_GPU_CATEGORIES;
    jax.profiler puts them on the "Stream #..." threads of its "/device:GPU:N" process."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    thread = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
    }

    def on_gpu(event):
        if event.get("cat") in TORCH_GPU_CATEGORIES:
            return True
        return process.get(event["pid"], "").startswith("/device:GPU") and thread.get(
            (event["pid"], event.get("tid")), ""
        ).startswith("Stream")

    return [(e["name"], float(e["dur"])) for e in events if e.get("ph") == "X" and on_gpu(e)]


CONVOLUTION_KERNEL = re.compile(
    r"conv|gemm|cutlass|xmma|wgmma|sm\d\d_|cudnn|implicit|nhwc|dgrad|wgrad|fprop", re.IGNORECASE
)


def gpu_time_summary(trace, steps, top=8):
    """GPU milliseconds per call: all, convolutions and matmuls (cuDNN, cuBLAS, CUTLASS
    kernels), the rest (batch norm, ReLU, adds, casts, optimizer: the fused elementwise and
    reduction kernels; memsets and copies), and the `top` kernels by time."""
    operations = gpu_operations(trace)
    per_name = {}
    for name, microseconds in operations:
        per_name[name] = per_name.get(name, 0.0) + microseconds
    convolution = sum(us for name, us in per_name.items() if CONVOLUTION_KERNEL.search(name))
    total = sum(per_name.values())
    largest = sorted(per_name.items(), key=lambda item: -item[1])[:top]
    return {
        "gpu_operations_per_call": len(operations) / steps,
        "gpu_busy_ms_per_call": total / steps / 1e3,
        "convolution_ms_per_call": convolution / steps / 1e3,
        "other_ms_per_call": (total - convolution) / steps / 1e3,
        "top_kernels_ms_per_call": [[name, us / steps / 1e3] for name, us in largest],
    }


def print_profiles(rows, profiles):
    """Beside each row's wall time, its GPU busy time and the largest kernels."""
    wall = {r["name"]: r["p50_ms"] for r in rows}
    print(
        f"\n{'profile (ms per call)':{timing.NAME_WIDTH}s} {'wall p50':>9s} {'GPU busy':>9s} {'conv+mm':>9s} {'other':>9s} {'GPU ops':>9s}"
    )
    for name, summary in profiles.items():
        if "skipped" in summary:
            print(f"{name:{timing.NAME_WIDTH}s} skipped: {summary['skipped']}")
            continue
        print(
            f"{name:{timing.NAME_WIDTH}s} {wall[name]:9.2f} {summary['gpu_busy_ms_per_call']:9.2f} {summary['convolution_ms_per_call']:9.2f} "
            f"{summary['other_ms_per_call']:9.2f} {summary['gpu_operations_per_call']:9.0f}"
        )
        for kernel, ms in summary["top_kernels_ms_per_call"][:3]:
            print(f"    {ms:7.3f} ms  {kernel[:100]}")
