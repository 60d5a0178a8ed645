"""What an export costs: wall time and peak memory of each exporter, beside what a
keras.applications user runs instead on the same network, in the same run.

    python bench/export.py --depths 18,50 --json results/export.json
    python bench/export.py --depths 152 --exporters onnx,saved_model
    python bench/export.py --quick          # resnet20 (32x32), ONNX and tf2onnx only

Every row is a fresh process (the export command as a user runs it, or the peer's few lines),
started alone, so no row's memory or caches carry into another. Its tree (the process and
every child it starts: the SavedModel's verification, the ONNX conversion) is polled every
POLL_S seconds: `peak_rss_mb` is the largest *sum* over the tree seen at one poll (what the
machine must have free: the process's resident memory and each child's unique memory, so a
fork that shares its parent's pages until it execs is not counted twice), `peak_single_mb` the
largest single process. Exporters
run with KERAS_RESNET_STAGE_MARKS=1 and report, as each stage ends, seconds since start and the
process's resident and peak memory (keras_resnet/export/stages.py): `stages`.

Peers: `model.export(path, format="tf_saved_model")` for the SavedModel and
`tf2onnx.convert.from_keras` for ONNX (and the other formats), on keras.applications'
network where it has one of that depth (ResNet50, ResNet101, ResNet152), else on keras_resnet's
Keras model of that depth (a plain Keras model either way). Our exports do more (folding,
freezing, checks against a float64 evaluation in a fresh process); the ratios say at what cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import timing
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 0.05
EXPORTERS = ("saved_model", "onnx", "onnx_fp16_int8", "litert", "openvino")
PEERS = ("keras_export", "tf2onnx_from_keras")
KERAS_APPLICATIONS = {50: "ResNet50", 101: "ResNet101", 152: "ResNet152"}
CALIBRATION_PHOTOS = 80
ROW_FIELDS = ("name", "kind", "exporter", "model", "ok", "wall_s", "peak_rss_mb", "peak_single_mb", "stages")

flags.DEFINE_list("depths", ["18", "50"], "ImageNet ResNet depths to export (18, 34, 50, 101, 152).")
flags.DEFINE_list("exporters", list(EXPORTERS), f"Which of ours to run: {', '.join(EXPORTERS)}.")
flags.DEFINE_list("peers", list(PEERS), f"Which peers to run: {', '.join(PEERS)} (empty: none).")
flags.DEFINE_string("json", None, "Write the rows and the machine to this JSON file.")
flags.DEFINE_bool("quick", False, "Smoke run: resnet20 at 32x32, the ONNX exporter and tf2onnx only.")
flags.DEFINE_integer("timeout", 3600, "Seconds a row may run before it is killed (and reported as failed).")
FLAGS = flags.FLAGS

PEER_SCRIPT = """
import sys
import keras

peer, network, output = sys.argv[1:4]
if network.startswith("keras.applications."):
    model = getattr(keras.applications, network.split(".")[-1])(weights=None)
else:
    from keras_resnet.export import sources

    model = sources.from_builder(network, preprocess_mode="caffe").model
if peer == "keras_export":
    model.export(output, format="tf_saved_model", verbose=False)
else:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="images"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=output)
"""


def tree_memory(root):
    """(sum, largest) MB over the process `root` and its descendants, read from /proc: the
    root's resident memory, each descendant's unique memory (what it alone holds). A child
    forked to run a command shares every page of its parent until it execs it, and by
    resident memory it would count the parent twice; an exec'd child (the SavedModel's
    verification) holds its own pages, and only shares the libraries' file pages."""
    import psutil

    try:
        children = root.children(recursive=True)
        sizes = [root.memory_info().rss / 2**20]
    except psutil.Error:
        return 0.0, 0.0
    for child in children:
        try:
            sizes.append(child.memory_full_info().uss / 2**20)
        except psutil.Error:
            pass
    return sum(sizes), max(sizes)


def measured_run(command, env, timeout):
    """Run `command`; (exit code, wall seconds, peak tree MB, peak single MB, stderr text)."""
    import psutil

    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True)
        root = psutil.Process(process.pid)
        peaks = [0.0, 0.0]
        done = threading.Event()

        def poll():
            while not done.is_set():
                total, single = tree_memory(root)
                peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], single)
                done.wait(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for child in root.children(recursive=True):
                child.kill()
            process.kill()
            code = process.wait()
        wall = time.perf_counter() - start
        done.set()
        poller.join()
        err.seek(0)
        return code, wall, peaks[0], peaks[1], err.read()


def our_command(exporter, model, output, photos):
    """The export command a user runs for `exporter` on the untrained registry `model` (the
    int8 copy's top-1 agreement with float64 is not bounded: it means nothing on a net whose
    logits nearly tie)."""
    source = ["--model", model, "--preprocess_mode", "caffe"]
    script = {"saved_model": "to_saved_model", "litert": "to_litert", "openvino": "to_openvino"}.get(
        exporter, "to_onnx"
    )
    target = "--base_path" if exporter == "saved_model" else "--output"
    command = [sys.executable, os.path.join(REPO, "export", f"{script}.py"), *source, target, output]
    if exporter == "onnx_fp16_int8":
        command += ["--fp16", "--int8", "--dataset", "photos", "--data_dir", photos]
        command += ["--calibration_count", str(CALIBRATION_PHOTOS), "--eval_count", str(CALIBRATION_PHOTOS)]
        command += ["--int8_min_agreement", "0"]
    return command


def peer_network(depth, model):
    """keras.applications' network of that depth where it has one, else keras_resnet's model."""
    name = KERAS_APPLICATIONS.get(depth)
    return f"keras.applications.{name}" if name else model


def write_photos(directory, size, count):
    """A class-folder data set of `count` real photo crops (two classes), for int8 calibration."""
    from PIL import Image

    from keras_resnet.testing import sample_photos

    for index, photo in enumerate(sample_photos(size, count, seed=1)):
        folder = os.path.join(directory, "train", f"class{index % 2}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(photo.round().astype("uint8")).save(os.path.join(folder, f"{index:03d}.png"))
    return directory


def output_path(scratch, name, exporter):
    if exporter in ("saved_model", "keras_export"):
        return os.path.join(scratch, name)
    suffix = {"litert": ".tflite", "openvino": ".xml"}.get(exporter, ".onnx")
    return os.path.join(scratch, name + suffix)


def run_row(name, kind, exporter, model, command, scratch, timeout):
    from keras_resnet.export import stages

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        stages.ENABLED_BY: "1",
    }
    code, wall, peak, single, err = measured_run(command, env, timeout)
    row = {
        "name": name,
        "kind": kind,
        "exporter": exporter,
        "model": model,
        "ok": code == 0,
        "wall_s": wall,
        "peak_rss_mb": peak,
        "peak_single_mb": single,
        "stages": stages.parse(err),
    }
    if code != 0:
        row["error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
    return row


def add_ratios(rows):
    """Each of our rows' wall time and peak memory over its peer's in the same run."""
    by_key = {(r["model"], r["exporter"]): r for r in rows if r["kind"] == "peer"}
    for r in rows:
        if r["kind"] != "ours":
            continue
        peer = by_key.get((r["model"], "keras_export" if r["exporter"] == "saved_model" else "tf2onnx_from_keras"))
        r["ratio_to"] = peer["name"] if peer and peer["ok"] else None
        r["wall_ratio"] = r["wall_s"] / peer["wall_s"] if r["ratio_to"] else None
        r["peak_ratio"] = r["peak_rss_mb"] / peer["peak_rss_mb"] if r["ratio_to"] else None
    return rows


def print_rows(rows):
    print(f"{'row':38s} {'ok':>3s} {'wall s':>8s} {'peak MB':>9s} {'1 proc MB':>9s} {'x wall':>7s} {'x peak':>7s}")
    for r in rows:
        ratio = (r.get("wall_ratio"), r.get("peak_ratio"))
        print(
            f"{r['name']:38s} {'yes' if r['ok'] else 'NO':>3s} {r['wall_s']:8.1f} {r['peak_rss_mb']:9.0f} "
            f"{r['peak_single_mb']:9.0f} {timing._text(ratio[0], '.2f', 'x'):>7s} {timing._text(ratio[1], '.2f', 'x'):>7s}"
        )
        marks = ", ".join(f"{m['stage']} {m['seconds']:.0f}s/{m['peak_mb']:.0f}MB" for m in r["stages"])
        if marks:
            print(f"    stages (end: s since start / process peak): {marks}")
        if "error" in r:
            print(f"    error: {r['error'][:200]}")


def plan(depths, exporters, peers, quick):
    """[(name, kind, exporter, model, depth)] in run order: per depth, the peers then ours."""
    rows = []
    for depth in depths:
        model = "resnet20" if quick else f"resnet{depth}"
        for peer in peers:
            rows.append((f"{peer}_{model}", "peer", peer, model, depth))
        for exporter in exporters:
            rows.append((f"{exporter}_{model}", "ours", exporter, model, depth))
    return rows


def main(argv):
    sys.path.insert(0, REPO)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    bad = [e for e in FLAGS.exporters if e not in EXPORTERS] + [p for p in FLAGS.peers if p not in PEERS]
    if bad:
        raise app.UsageError(f"unknown exporter or peer {bad[0]!r}; allowed: {', '.join(EXPORTERS + PEERS)}")
    depths = [int(d) for d in FLAGS.depths]
    exporters, peers = FLAGS.exporters, FLAGS.peers
    if FLAGS.quick:
        depths = [20]
        exporters = exporters if FLAGS["exporters"].present else ["onnx"]
        peers = peers if FLAGS["peers"].present else ["tf2onnx_from_keras"]
    timing.print_title(f"export cost: depths {depths}, one fresh process per row", FLAGS.quick)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        photos = None
        if "onnx_fp16_int8" in exporters:
            photos = write_photos(os.path.join(scratch, "photos"), 32 if FLAGS.quick else 256, CALIBRATION_PHOTOS)
        for name, kind, exporter, model, depth in plan(depths, exporters, peers, FLAGS.quick):
            output = output_path(scratch, name, exporter)
            if kind == "peer":
                command = [sys.executable, "-c", PEER_SCRIPT, exporter, peer_network(depth, model), output]
            else:
                command = our_command(exporter, model, output, photos)
            rows.append(run_row(name, kind, exporter, model, command, scratch, FLAGS.timeout))
            print(f"  {name}: {rows[-1]['wall_s']:.1f} s, {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    add_ratios(rows)
    print_rows(rows)
    if FLAGS.json:
        timing.write_result(
            FLAGS.json,
            packages=("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "protobuf", "psutil"),
            quick=FLAGS.quick,
            rows=rows,
            poll_s=POLL_S,
            peak="peak_rss_mb: largest sum over the process tree at one poll (the process resident, each child unique)",
        )


if __name__ == "__main__":
    app.run(main)
