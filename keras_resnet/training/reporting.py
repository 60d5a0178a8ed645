"""What a run tells the person watching it, and what it leaves behind to look at.

A progress bar with images/s and ETA on an interactive terminal, plain lines in logs;
TensorBoard summaries (`<model_dir>/train`, `<model_dir>/eval`); `metrics.jsonl`, one JSON
object per line; and `curves.png`, the training and eval error against iterations in the
manner of the paper's Figs. 4 and 6 (thin: training, bold: eval, dotted: learning-rate drops).
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import sys
import time

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from keras_resnet import run_dir

# What tensorboard's own `tf.summary.scalar` writes; written with the core `tf.summary.write`
# so that logging needs TensorFlow only, not the tensorboard package.
SCALAR_METADATA = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
# An evaluation loss above HUGE_EVAL_LOSS in one of the first EARLY_EVALUATIONS, while the
# training loss is finite and at most MODEST_TRAIN_LOSS, is the batch-norm moving statistics
# lagging the weights early at a high learning rate, not a broken run.
HUGE_EVAL_LOSS = 1e3
MODEST_TRAIN_LOSS = 100.0
EARLY_EVALUATIONS = 3


def parse_metrics(path):
    """(records, unreadable line count) of a metrics.jsonl file: a line cut short by a kill
    (or any line that is not a JSON object with a step) is skipped and counted."""
    gfile = tf.io.gfile
    if not gfile.exists(path) or gfile.isdir(path):
        return [], 0
    records, unreadable = [], 0
    with gfile.GFile(path, "rb") as f:
        for line in f.read().decode(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                unreadable += 1
    return records, unreadable


def read_metrics(model_dir):
    """The records of metrics.jsonl ([] if there is none yet), unreadable lines skipped."""
    return parse_metrics(run_dir.path(model_dir, METRICS_NAME))[0]


def _truncate_metrics(model_dir, step):
    """Drop records past `step` (a resumed run repeats what a killed run logged after its
    last checkpoint, and the file should tell one history) and unreadable lines; returns a
    note naming the file if lines were unreadable, else None."""
    from keras_resnet.run_dir import atomic_write_bytes

    path = run_dir.path(model_dir, METRICS_NAME)
    records, unreadable = parse_metrics(path)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != len(records) or unreadable:
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_bytes(path, text.encode())
    if unreadable:
        return f"{path}: skipped {unreadable} unreadable line(s) (a write cut short); the other records are kept"
    return None


def format_duration(seconds):
    """h:mm:ss."""
    return str(datetime.timedelta(seconds=int(max(0, seconds))))


def train_record(step, sums, lr, seconds, batch_size, steps):
    """The train metrics of a window of `steps` iterations from their summed counts."""
    count = max(sums["count"], 1)
    return {
        "step": step,
        "split": "train",
        "loss": sums["loss_sum"] / count + sums["penalty"] / steps,
        "top1_error": sums["top1_wrong"] / count,
        "top5_error": sums["top5_wrong"] / count,
        "lr": lr,
        "images_per_sec": steps * batch_size / max(seconds, 1e-9),
    }


def eval_line(step, metrics, classes=None):
    """The printed line of an evaluation; top-5 error only where there are more than 5
    classes (with 5 or fewer it is always 0)."""
    top5 = f"  top-5 err {100 * metrics['top5_error']:.2f}%" if classes is None or classes > 5 else ""
    return (
        f"eval at step {step}: top-1 err {100 * metrics['top1_error']:.2f}%{top5}  "
        f"loss {metrics['loss']:.4f}  ({metrics['count']} images)"
    )


def bn_statistics_hint(eval_loss, train_loss, evaluation_number):
    """A line explaining a huge early evaluation loss beside a modest training loss (the
    batch-norm moving statistics that evaluation uses have not caught up yet), else None."""
    early = evaluation_number <= EARLY_EVALUATIONS
    modest = train_loss is not None and math.isfinite(train_loss) and train_loss <= MODEST_TRAIN_LOSS
    if not (early and modest and eval_loss > HUGE_EVAL_LOSS):
        return None
    return (
        f"note: evaluation loss {eval_loss:.3g} beside training loss {train_loss:.3g}: evaluation uses the "
        "batch-norm moving statistics, which lag the weights early in training at a high learning rate; "
        "this settles as training goes on"
    )


class Reporter:
    """Collects per-step counts and reports every `log_interval` iterations.

    Only the chief (`enabled`) writes files; every process may print.
    """

    def __init__(
        self, model_dir, *, total_steps, start_step, batch_size, log_interval, classes=None, enabled=True, tty=None
    ):
        self.model_dir = model_dir
        self.classes = classes
        self._evaluations = 0
        self._bn_hint_shown = False
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.log_interval = log_interval
        self.enabled = enabled
        self.start_step = start_step
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._window = None
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self._run_start = time.perf_counter()
        self._bar = None
        self.notes = []  # what the start found worth saying (printed by the caller)
        if enabled:
            tf.io.gfile.makedirs(str(model_dir))
            note = _truncate_metrics(model_dir, start_step)
            self.notes += [note] if note else []
            self._writers = {s: tf.summary.create_file_writer(run_dir.path(model_dir, s)) for s in ("train", "eval")}
        if self.tty and enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def print(self, text):
        """A line for the person watching, above the progress bar if there is one."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def train_steps(self, step, sums, lr, steps=1):
        """Add the summed counts of `steps` iterations ending at `step`; report if the window is full."""
        self._window = dict(sums) if self._window is None else {k: self._window[k] + sums[k] for k in sums}
        self._window_steps += steps
        if self._bar is not None:
            self._bar.update(steps)
        if step % self.log_interval == 0 or step == self.total_steps:
            self._flush_train(step, lr)

    def _flush_train(self, step, lr):
        seconds = time.perf_counter() - self._window_start
        record = train_record(step, self._window, lr, seconds, self.batch_size, self._window_steps)
        self._window, self._window_steps = None, 0
        self._window_start = time.perf_counter()
        self._write(record)
        eta = (self.total_steps - step) * self.batch_size / record["images_per_sec"]
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                err=f"{100 * record['top1_error']:.1f}%",
                lr=f"{lr:.3g}",
                img_s=f"{record['images_per_sec']:.0f}",
            )
        else:
            self.print(
                f"step {step}/{self.total_steps}  loss {record['loss']:.4f}  top-1 err {100 * record['top1_error']:.2f}%  "
                f"lr {lr:.4g}  {record['images_per_sec']:.0f} img/s  ETA {format_duration(eta)}"
            )

    def eval(self, step, metrics, train_loss=None):
        """Report an evaluation (top-1/top-5 error on the eval split); `train_loss`, the latest
        training loss, lets a huge early evaluation loss be explained once."""
        record = {"step": step, "split": "eval", **metrics}
        self._write(record)
        self.print(eval_line(step, metrics, self.classes))
        self._evaluations += 1
        hint = bn_statistics_hint(metrics["loss"], train_loss, self._evaluations)
        if hint and not self._bn_hint_shown:
            self._bn_hint_shown = True
            self.print(hint)

    def _write(self, record):
        if not self.enabled:
            return
        run_dir.append_line(run_dir.path(self.model_dir, METRICS_NAME), json.dumps(record))
        with self._writers[record["split"]].as_default(step=record["step"]):
            for key, value in record.items():
                if key not in ("step", "split", "count"):
                    tf.summary.write(key, tf.constant(value, tf.float32), metadata=SCALAR_METADATA)

    def close(self):
        """Flush summaries and draw curves.png; returns its path (None if not drawn)."""
        if self._bar is not None:
            self._bar.close()
        self.print(
            f"{self.total_steps - self.start_step} steps in {format_duration(time.perf_counter() - self._run_start)}"
        )
        if not self.enabled:
            return None
        for writer in self._writers.values():
            writer.close()
        return plot_curves(self.model_dir)


def learning_rate_drops(config, train_records):
    """Iterations after which the learning rate was divided: the steps schedule's boundaries
    (exact, from config.json) up to the last logged iteration; for the data-driven schedules
    (plateau), the last logged iteration before a lower rate is logged (early by less than
    log_interval). A warm-up's rise is not a drop."""
    last = train_records[-1]["step"] if train_records else 0
    if config.get("lr_schedule") == "steps":
        return tuple(b for b in config.get("lr_boundaries") or () if b <= last)
    return tuple(
        before["step"] for before, after in zip(train_records, train_records[1:]) if after["lr"] < before["lr"]
    )


def curves_figure(model_dir):
    """A matplotlib Figure of top-1 error and loss against iterations from metrics.jsonl, the
    learning-rate drops dotted (as `learning_rate_drops` finds them); a series of
    one point is drawn as a marker, so a run shorter than one log interval shows too. None
    when there are no records or matplotlib is not installed (it is an optional extra);
    matplotlib's object API only (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    records = read_metrics(model_dir)
    if not records:
        return None
    try:
        config = run_dir.training_config(model_dir)
    except ValueError:
        config = {}
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    error_axes, loss_axes = figure.subplots(1, 2)
    for split, width in (("train", 1.0), ("eval", 2.5)):
        rows = [r for r in records if r["split"] == split]
        if rows:
            steps = [r["step"] for r in rows]
            marker = "o" if split == "eval" or len(rows) == 1 else None
            errors = [100 * r["top1_error"] for r in rows]
            error_axes.plot(steps, errors, linewidth=width, marker=marker, label=f"{split} top-1")
            loss_axes.plot(steps, [r["loss"] for r in rows], linewidth=width, marker=marker, label=split)
    drops = learning_rate_drops(config, [r for r in records if r["split"] == "train"])
    for axes in (error_axes, loss_axes):
        for index, step in enumerate(drops):
            axes.axvline(step, color="0.5", linestyle=":", linewidth=1.0, label="lr drop" if index == 0 else None)
    error_axes.set(xlabel="iteration", ylabel="error (%)", title="top-1 error")
    loss_axes.set(xlabel="iteration", ylabel="loss", title="loss", yscale="log")
    for axes in (error_axes, loss_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(os.path.basename(os.path.normpath(model_dir)))
    figure.tight_layout()
    return figure


def plot_curves(model_dir):
    """Draw `curves_figure` into <model_dir>/curves.png; returns its path (None if not drawn)."""
    figure = curves_figure(model_dir)
    if figure is None:
        return None
    path, buffer = run_dir.path(model_dir, CURVES_NAME), io.BytesIO()
    figure.savefig(buffer, format="png")
    run_dir.atomic_write_bytes(path, buffer.getvalue())  # a local path or a gs://, ram://... URL
    return path
