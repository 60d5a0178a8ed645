"""Every bench script runs with --quick --json and writes the documented rows and fields.

Never a speed assertion: figures come from the scripts on a quiet machine (BENCHMARKS.md).
The selected tests' scripts start together (tracing is mostly single-threaded, so two cores run two at once)
and each test waits for its own. gpu.py runs under KERAS_BACKEND=jax with an importable
`tensorflow` that raises, as on the GPU machine, which has no TensorFlow. gpu.py's --profile
summary (bench/profiling.py) is also read on two traces recorded on an H200 (tests/data/h200_traces).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
TIMEOUT_S = 900
ROW_FIELDS = ("name", "images_per_s", "p50_ms", "p99_ms", "gflops_per_s", "peak_fraction")
INFERENCE_ROWS = (
    "keras_applications_tf_function",
    "keras_applications_predict",
    "keras_resnet_tf_function",
    "keras_resnet_predict",
    "saved_model",
    "keras_export_saved_model",
    "onnx_fp32",
    "onnx_int8",
)
TRAIN_QUICK_ROWS = (
    "keras_applications_resnet50_float32",
    "keras_resnet_resnet50_float32",
    "keras_resnet_resnet56_float32",
    "keras_resnet_resnet56_bfloat16_xla",
    "bare_tiny",
    "trainer_tiny",
    "trainer_tiny_loop1",
)
GPU_KERAS_ROWS = (
    "keras_resnet_train",
    "keras_resnet_jit_train",
    "keras_resnet_inference",
    "keras_resnet_jit_inference",
    "keras_applications_jit_train",
    "keras_applications_jit_inference",
)
GPU_TORCH_ROWS = ("torchvision_train", "torchvision_inference")

# Every bench script run with --quick: minutes of CPU, so in the slow step.
pytestmark = pytest.mark.slow


def _no_tensorflow_dir(tmp_path_factory):
    """A directory whose `tensorflow` package raises ImportError, to put first on PYTHONPATH."""
    directory = tmp_path_factory.mktemp("no_tensorflow")
    (directory / "tensorflow").mkdir()
    (directory / "tensorflow" / "__init__.py").write_text('raise ImportError("no TensorFlow on the GPU machine")\n')
    return str(directory)


# The test that reads each script's run: only the scripts of selected tests are started.
TEST_OF_SCRIPT = {
    "inference": "test_inference",
    "train_step": "test_train_step",
    "gpu": "test_gpu_script_under_jax_without_tensorflow",
    "input_pipeline": "test_input_pipeline",
    "export": "test_export",
}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """{script: (process, json path, log path, log file)} of the selected tests' scripts, all
    started at once."""
    out = tmp_path_factory.mktemp("bench")
    base_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    scripts = {
        "inference": {},
        "train_step": {},
        "gpu": {"KERAS_BACKEND": "jax", "PYTHONPATH": _no_tensorflow_dir(tmp_path_factory)},
    }
    extra_flags = {"gpu": ["--profile", str(out / "gpu_profile")]}
    if os.path.isfile(os.path.join(BENCH, "input_pipeline.py")):
        scripts["input_pipeline"] = {}
    scripts["export"] = {}
    selected = {item.originalname for item in request.session.items}
    scripts = {name: env for name, env in scripts.items() if TEST_OF_SCRIPT[name] in selected}
    started = {}
    for name, env in scripts.items():
        json_path, log_path = out / f"{name}.json", out / f"{name}.log"
        log = open(log_path, "w")
        process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(BENCH, f"{name}.py"),
                "--quick",
                "--json",
                str(json_path),
                *extra_flags.get(name, []),
            ],
            env={**base_env, **env},
            cwd=str(out),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started[name] = (process, json_path, log_path, log)
    yield started
    for process, _, _, log in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def result(runs, name):
    """The parsed --json of script `name`, after it exited 0 (else fail with its log's tail)."""
    if name not in runs:
        pytest.skip(f"bench/{name}.py does not exist yet")
    process, json_path, log_path, _ = runs[name]
    try:
        code = process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = "timeout"
    with open(log_path) as f:
        tail = f.read()[-4000:]
    assert code == 0, f"bench/{name}.py --quick exited {code}:\n{tail}"
    with open(json_path) as f:
        return json.load(f), tail


def check_rows(payload, expected):
    rows = {r["name"]: r for r in payload["rows"]}
    missing = [name for name in expected if name not in rows]
    assert not missing, f"rows {missing} missing; skipped: {payload.get('skipped')}"
    for name in expected:
        row = rows[name]
        assert set(ROW_FIELDS) <= set(row), f"{name} lacks {set(ROW_FIELDS) - set(row)}"
        assert row["images_per_s"] > 0 and row["p50_ms"] > 0
    return rows


def check_header(payload):
    assert {"date", "command", "machine", "versions"} <= set(payload)
    assert {"cpu", "cores", "gpu", "cpu_family", "cpu_model_number", "cpu_features"} <= set(payload["machine"])
    assert set(payload["machine"]["cpu_features"]) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
    assert isinstance(payload["environment"], dict)


def test_inference(runs):
    payload, log = result(runs, "inference")
    check_header(payload)
    assert payload["peak_gflops"] > 0
    assert {"tensorflow", "keras", "onnxruntime"} <= set(payload["versions"])
    rows = check_rows(payload, INFERENCE_ROWS)
    assert "onnx_fp16" in rows or "onnx_fp16" in payload["skipped"]
    assert rows["keras_applications_tf_function"]["ratio"] == pytest.approx(1.0)
    assert rows["onnx_fp32"]["ratio_to"] == "keras_applications_tf_function"
    assert all(0 < r["peak_fraction"] for r in rows.values())
    # CPU time per call, measured in the process that ran it (exported rows: their own process,
    # whose compute a measurement in the parent, which only waits on a pipe, would miss)
    for r in payload["rows"] + payload["latency_rows"]:
        assert r["cpu_ms"] > 0.1 * r["p50_ms"], (r["name"], r["cpu_ms"], r["p50_ms"])
    assert "keras_resnet_tf_function" in log and "CPU @1 ms" in log  # the printed tables
    # the TF Serving peer: the exporter's SavedModel over Keras' own export, served alike; resnet20
    # (--quick) is no keras.applications net, so the two cannot hold the same weights
    peer = payload["tf_serving_peer"]
    latency = {r["name"]: r for r in payload["latency_rows"]}
    ours, keras_export = rows["saved_model"], rows["keras_export_saved_model"]
    assert peer["images_per_s_speedup"] == pytest.approx(ours["images_per_s"] / keras_export["images_per_s"])
    assert peer["p50_speedup"] == pytest.approx(
        latency["keras_export_saved_model"]["p50_ms"] / latency["saved_model"]["p50_ms"]
    )
    assert peer["same_function"]["applicable"] is False and "resnet20" in peer["same_function"]["reason"]
    assert keras_export["file_mb"] > 0 and "saved_model's speed-up over keras_export_saved_model" in log


def test_train_step(runs):
    payload, log = result(runs, "train_step")
    check_header(payload)
    assert payload["peak_gflops"] > 0 and payload["peak_gflops_bfloat16"] > 0
    rows = check_rows(payload, TRAIN_QUICK_ROWS)
    assert rows["keras_resnet_resnet50_float32"]["ratio_to"] == "keras_applications_resnet50_float32"
    assert rows["trainer_tiny"]["x_bare_step_to"] == rows["trainer_tiny_loop1"]["x_bare_step_to"] == "bare_tiny"
    assert rows["trainer_tiny"]["x_bare_step"] > 0 and "trainer_tiny_loop1" in log


def test_gpu_script_under_jax_without_tensorflow(runs):
    payload, _ = result(runs, "gpu")
    check_header(payload)
    assert payload["backend"] == "jax" and payload["environment"]["KERAS_BACKEND"] == "jax"
    rows = check_rows(payload, GPU_KERAS_ROWS)
    for name in GPU_TORCH_ROWS:
        assert name in rows or name in payload["skipped"], f"{name} neither ran nor says why it was skipped"
    assert rows["keras_resnet_train"]["ratio_to"] == "torchvision_train"
    assert rows["keras_resnet_jit_inference"]["ratio_to"] == "torchvision_inference"
    assert rows["keras_applications_jit_train"]["ratio_to"] == "torchvision_train"
    assert rows["keras_resnet_jit_train"]["x_keras_applications_to"] == "keras_applications_jit_train"
    assert rows["keras_resnet_jit_inference"]["x_keras_applications"] > 0
    assert rows["keras_resnet_train"]["x_keras_applications"] is None  # no keras.applications row times that call
    # --profile: one jax.profiler trace per row, summarised; this machine has no GPU, so none of
    # the trace's host events may be counted as GPU work
    assert set(payload["profile"]) == set(rows)
    profile_dir = runs["gpu"][1].parent / "gpu_profile"
    for name in GPU_KERAS_ROWS:
        assert (profile_dir / f"{name}.trace.json.gz").stat().st_size > 0
        assert payload["profile"][name]["gpu_operations_per_call"] == 0


def test_input_pipeline(runs):
    payload, log = result(runs, "input_pipeline")
    check_header(payload)
    rows = {r["name"]: r for r in payload["rows"]}
    assert set(rows) == {"decode", "scale", "inception", "naive"}
    assert all(r["images_per_s_per_core"] > 0 and r["images_per_s"] > 0 for r in rows.values())
    assert rows["decode"]["per_core_ratio"] == pytest.approx(1.0)
    assert "inception" in log  # the printed table


EXPORT_ROW_FIELDS = ("name", "kind", "exporter", "model", "ok", "wall_s", "peak_rss_mb", "peak_single_mb", "stages")
EXPORT_STAGES = ("build", "fold", "convert", "reference", "verify")


def test_export(runs):
    """One export of resnet20 to ONNX and tf2onnx's from_keras on the same network, each in
    its own process: both finished, their process trees' memory and the export's stage marks
    (each no earlier than the one before) recorded, the ratios taken to the peer."""
    payload, log = result(runs, "export")
    check_header(payload)
    assert {"tf2onnx", "onnxruntime", "protobuf"} <= set(payload["versions"])
    rows = {r["name"]: r for r in payload["rows"]}
    assert set(rows) == {"tf2onnx_from_keras_resnet20", "onnx_resnet20"}
    for row in rows.values():
        assert set(EXPORT_ROW_FIELDS) <= set(row), row
        assert row["ok"], row.get("error")
        assert row["wall_s"] > 0 and row["peak_rss_mb"] >= row["peak_single_mb"] > 100
    ours, peer = rows["onnx_resnet20"], rows["tf2onnx_from_keras_resnet20"]
    assert peer["kind"] == "peer" and peer["stages"] == []
    assert ours["kind"] == "ours" and ours["ratio_to"] == peer["name"]
    assert ours["peak_ratio"] == pytest.approx(ours["peak_rss_mb"] / peer["peak_rss_mb"])
    stages = [mark["stage"] for mark in ours["stages"]]
    assert set(EXPORT_STAGES) <= set(stages), stages
    seconds = [mark["seconds"] for mark in ours["stages"]]
    assert seconds == sorted(seconds) and seconds[-1] <= ours["wall_s"]
    # the ONNX graph is written from the folded network in the exporter's own process: no
    # traced graph is frozen, and no converter runs beside it
    assert "freeze" not in stages and ours["peak_rss_mb"] == pytest.approx(ours["peak_single_mb"])
    assert "onnx_resnet20" in log  # the printed table


H200_TRACES = os.path.join(REPO, "tests", "data", "h200_traces")


@pytest.mark.parametrize("row, wall_ms", [("keras_resnet_jit_inference", 10.68), ("torchvision_inference", 11.84)])
def test_profile_summary_of_real_gpu_traces(row, wall_ms):
    """Traces that jax.profiler and torch.profiler wrote on an H200 (gpu.py --stride_in 3x3
    --profile, 3 calls of ResNet-50 at batch 256, BENCHMARKS.md "GPU kernel profile"; wall_ms is the row's
    p50 in that run). CI has no GPU, so this is where the GPU side of --profile is read: the GPU
    was busy for most of each call and never longer than it, and cuDNN's convolutions, found by
    name, took between a third and four fifths of that."""
    path = os.path.join(H200_TRACES, f"{row}.trace.json.gz")
    # In a child process, as gpu.py imports it: bench/ first on the path.
    script = (
        "import gzip, json, sys, profiling\n"
        "with gzip.open(sys.argv[1], 'rt') as f:\n"
        "    print(json.dumps(profiling.gpu_time_summary(json.load(f), steps=3)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, path], cwd=BENCH, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    busy = summary["gpu_busy_ms_per_call"]
    assert 0.6 * wall_ms < busy < wall_ms
    assert 1 / 3 < summary["convolution_ms_per_call"] / busy < 0.8
    assert 100 < summary["gpu_operations_per_call"] < 400


FORKS_HOLDING_200_MB = """
import os, sys, time
held = bytearray(200 * 2**20)  # touched: resident
for i in range(0, len(held), 4096):
    held[i] = 1
if os.fork() == 0:  # a child that shares every page, as one forked to run a command does before exec
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


def test_export_tree_counts_a_forked_child_once():
    """A fork shares its parent's pages: the tree is the parent's 200 MB once, not twice."""
    import importlib.util

    import psutil

    spec = importlib.util.spec_from_file_location("bench_export", os.path.join(BENCH, "export.py"))
    export_bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, BENCH)  # its sibling `timing`, as when run as a script
    try:
        spec.loader.exec_module(export_bench)
    finally:
        sys.path.remove(BENCH)
    process = subprocess.Popen([sys.executable, "-c", FORKS_HOLDING_200_MB], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        root = psutil.Process(process.pid)
        (child,) = root.children()
        assert child.memory_info().rss / 2**20 > 200  # by resident memory it would count twice
        total, largest = export_bench.tree_memory(root)
        assert 200 < total < 260 and largest == pytest.approx(root.memory_info().rss / 2**20, rel=0.05)
    finally:
        for child in psutil.Process(process.pid).children():
            child.kill()
        process.kill()
        process.wait()
