"""A training run dir: the one place that knows its layout. The trainer writes it and every
reader (`keras_resnet.load`, evaluation, the exporters, `python -m keras_resnet.weights
--show`) reads it through these functions; no other module joins paths inside a run dir.

<model_dir>/config.json      {"record": the network's `keras_resnet.record.Record` (architecture,
                              preprocessing mode and mean, class names, evaluation view) or null
                              for a model_fn's network, "training": how it was trained (the
                              resolved TrainConfig and the data's size)}
<model_dir>/history.jsonl    one line per resume that changed a setting: {"step", "changed":
                              {name: [old, new]}}
<model_dir>/held_out.txt     the files --val_split held out of class folders, one a line
<model_dir>/checkpoints/     tf.train.CheckpointManager files: Checkpoint(model=..., optimizer=...,
                              step=...)
<model_dir>/training.lock    held (locks.FileLock) by the training that writes the run dir

Runs written before the two-part config.json (one flat config with "class_names",
"preprocessing", "model_kwargs", "record" and a pixel_mean.npy beside it) read the same.
This module imports neither the builders nor `weights` (which reads run dirs through it).

Every file operation goes through `tf.io.gfile`, so a `gs://` or `ram://` model_dir is one
run; TensorFlow is imported inside the functions (the model layer imports without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid

import numpy as np

from keras_resnet import locks

CONFIG_NAME = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
HELD_OUT_FILE = "held_out.txt"
HISTORY_FILE = "history.jsonl"
LOCK_NAME = "training.lock"
CHECKPOINT_STATE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
UNREADABLE_SUFFIX = ".unreadable"
# What the flat layout kept beside the training config, and the record now holds.
FLAT_RECORD_KEYS = ("record", "class_names", "preprocessing", "preprocess_mode", "model_kwargs", "eval_view")


class RunDirError(RuntimeError):
    """The run dir cannot be used as it is (in use, unreadable checkpoints, read-only, disk full)."""


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def path(model_dir, *names):
    """A path inside the run dir (the one join of run-dir paths)."""
    return "/".join([str(model_dir).rstrip("/"), *names]) if is_url(model_dir) else os.path.join(model_dir, *names)


def is_url(path):
    """`gs://`, `ram://`...: a path reached through tf.io.gfile, not the local disk."""
    return "://" in str(path)


def checkpoint_dir(model_dir):
    """Where the run's checkpoints are."""
    return path(model_dir, CHECKPOINT_SUBDIR)


def is_run_dir(model_dir):
    """Whether `model_dir` holds a run's config.json."""
    return _gfile().exists(path(model_dir, CONFIG_NAME))


# Writing.


def atomic_write_bytes(target, data):
    """Write `data` to `target` through a temporary file beside it and a rename: readers never
    see it half-written. Local paths by the OS (no TensorFlow needed: `.weights.h5` files are
    written this way under every backend); `gs://`, `ram://`... by tf.io.gfile, where a write
    is one upload."""
    if is_url(target):
        gfile = _gfile()
        temporary = f"{str(target).rsplit('/', 1)[0]}/.tmp-{uuid.uuid4().hex}"
        with gfile.GFile(temporary, "wb") as f:
            f.write(data)
        gfile.rename(temporary, str(target), overwrite=True)
        return
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _write_json(target, data):
    atomic_write_bytes(target, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def write_config(model_dir, record, training):
    """Write config.json: the network's Record (None for a model_fn's network) and the
    training config (a JSON-ready dict)."""
    data = {"record": None if record is None else record.to_json(), "training": training}
    _write_json(path(model_dir, CONFIG_NAME), data)


def write_held_out(model_dir, files):
    atomic_write_bytes(path(model_dir, HELD_OUT_FILE), "".join(f + "\n" for f in files).encode())


def append_line(target, line):
    """Add `line` to the text file `target`: appended on a local disk; on `gs://`, `ram://`...
    (where files cannot be appended to) the file is rewritten whole, atomically."""
    data = (line + "\n").encode()
    if not is_url(target):
        with open(target, "ab") as f:
            f.write(data)
        return
    gfile = _gfile()
    atomic_write_bytes(target, (gfile.GFile(target, "rb").read() if gfile.exists(target) else b"") + data)


def append_history(model_dir, entry):
    """Add one line to history.jsonl (rewritten whole, atomically: no torn line)."""
    gfile, target = _gfile(), path(model_dir, HISTORY_FILE)
    before = gfile.GFile(target, "rb").read() if gfile.exists(target) else b""
    atomic_write_bytes(target, before + (json.dumps(entry, sort_keys=True, default=str) + "\n").encode())


# Reading.


def read_config(model_dir):
    """{"record": JSON object or None, "training": dict} of the run, the flat layout of older
    runs converted; a ValueError where `model_dir` is no run dir."""
    gfile, target = _gfile(), path(model_dir, CONFIG_NAME)
    if not gfile.exists(target):
        raise ValueError(f"{str(model_dir)!r} is not a training run dir: {CONFIG_NAME} is missing")
    with gfile.GFile(target, "r") as f:
        data = json.load(f)
    if "training" in data:
        return data
    if data.get("model") and not data.get("record"):
        raise ValueError(
            f"{target} was written before run dirs recorded their network: rebuild it with its builder "
            f"(keras_resnet.get_builder({data['model']!r})(**{data.get('model_kwargs')})) and restore its checkpoint"
        )
    return {"record": data.get("record"), "training": {k: v for k, v in data.items() if k not in FLAT_RECORD_KEYS}}


def training_config(model_dir):
    """How the run was trained: the resolved TrainConfig fields ("dataset", "data_dir",
    "val_split", "learning_rate", ...) and "steps_per_epoch", "num_examples"."""
    return read_config(model_dir)["training"]


def record_of(model_dir):
    """The Record of the run's network (what `keras_resnet.load(model_dir)` carries)."""
    from keras_resnet.record import Record

    record = read_config(model_dir)["record"]
    if record is None:
        raise ValueError(
            f"{str(model_dir)!r}: the run trained a model from a model_fn, which no registered builder rebuilds"
        )
    return Record.from_json(record)


def recorded_mean(model_dir):
    """The mean the run subtracts (mode pixel_mean), or None; None too where there is no run yet."""
    if not is_run_dir(model_dir):
        return None
    record = read_config(model_dir)["record"]
    mean = record and record["preprocessing"].get("mean")
    return None if mean is None else np.asarray(mean, dtype="float32")


def held_out(model_dir):
    """The files the run listed as held out, or None where it lists none."""
    gfile, target = _gfile(), path(model_dir, HELD_OUT_FILE)
    if not gfile.exists(target):
        return None
    with gfile.GFile(target, "r") as f:
        return f.read().split("\n")[:-1]


def check_held_out(model_dir, files):
    """The held-out files a run dir lists must be `files` (None: none held out of folders):
    the split of training is the split evaluated and resumed. A ValueError where the
    folders changed since."""
    recorded = held_out(model_dir) if files is not None else None
    if recorded is not None and recorded != list(files):
        changed = sorted(set(recorded) ^ set(files))
        raise ValueError(
            f"the files --val_split holds out are not those {path(model_dir, HELD_OUT_FILE)} lists ({len(changed)} "
            f"differ, e.g. {changed[:3]}): the folders changed since the run began; restore them, or start a new "
            "--model_dir"
        )


def history(model_dir):
    """The entries of history.jsonl ([] where nothing changed)."""
    gfile, target = _gfile(), path(model_dir, HISTORY_FILE)
    if not gfile.exists(target):
        return []
    with gfile.GFile(target, "r") as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


# Checkpoints.


def _step_of(prefix):
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def checkpoint_prefixes(directory):
    """Every checkpoint `directory` names or holds, newest (highest step) first: the index
    files present and the entries of the CheckpointManager's list (whose files may be gone)."""
    import tensorflow as tf

    found = {p[: -len(".index")] for p in tf.io.gfile.glob(f"{directory}/ckpt-*.index")}
    with contextlib.suppress(Exception):  # a damaged list: the files themselves still count
        state = tf.train.get_checkpoint_state(directory)
        if state is not None:
            for listed in state.all_model_checkpoint_paths:
                found.add(listed if os.path.isabs(listed) or is_url(listed) else f"{directory}/{listed}")
    return sorted((p if is_url(p) else os.path.normpath(p) for p in found), key=_step_of, reverse=True)


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def restore_newest_readable(checkpoint, directory, chief=True):
    """Restore `checkpoint` (a tf.train.Checkpoint) from the newest checkpoint in `directory`
    that reads whole, for the trainer; returns (path or None, [messages]).

    A newest checkpoint that is missing or unreadable (a truncated file, a disk error) is
    skipped, saying so; the chief moves an unreadable one aside (`*.unreadable`) and writes
    the CheckpointManager's list anew, so that rotation never deletes the good ones for it.
    None: nothing to resume from. If checkpoints exist but none reads, a RunDirError: a fresh
    start would rotate them away.
    """
    gfile = _gfile()
    prefixes = checkpoint_prefixes(directory)
    messages, unreadable = [], []
    for prefix in prefixes:
        name = os.path.basename(prefix)
        if not gfile.exists(prefix + ".index"):
            messages.append(f"checkpoint {name} is listed in {directory}/{CHECKPOINT_STATE} but its files are gone")
            continue
        try:
            checkpoint.restore(prefix).expect_partial()
        except Exception as error:  # TF raises OpErrors, and IndexError on a truncated file
            messages.append(f"checkpoint {name} is unreadable ({first_line(error)})")
            unreadable.append(prefix)
            continue
        if messages and chief:
            _set_aside(directory, unreadable, prefix, messages)
        if messages:
            messages.append(f"resuming from {name}, the newest readable checkpoint")
        return prefix, messages
    if prefixes:
        raise RunDirError(
            f"no readable checkpoint in {directory}: " + "; ".join(messages) + ". Training from scratch here would "
            "delete them as it rotates checkpoints: move them away (or use another --model_dir) to start afresh"
        )
    return None, messages


def _set_aside(directory, unreadable, resumed, messages):
    """Rename unreadable checkpoints' files to `*.unreadable` and list the readable ones."""
    import tensorflow as tf

    gfile = tf.io.gfile
    for prefix in unreadable:
        for found in gfile.glob(prefix + ".*"):
            if not found.endswith(UNREADABLE_SUFFIX):
                gfile.rename(found, found + UNREADABLE_SUFFIX, overwrite=True)
        name = os.path.basename(prefix)
        messages.append(f"moved {name}'s files aside as {name}.*{UNREADABLE_SUFFIX}")
    state = None
    with contextlib.suppress(Exception):
        state = tf.train.get_checkpoint_state(directory)
    saved_at = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)) if state else {}
    readable = [p for p in checkpoint_prefixes(directory) if gfile.exists(p + ".index")]
    kept = sorted((p for p in readable if _step_of(p) <= _step_of(resumed)), key=_step_of)
    tf.compat.v1.train.update_checkpoint_state(  # with their save times, so that rotation still deletes the oldest
        directory,
        resumed,
        all_model_checkpoint_paths=kept,
        all_model_checkpoint_timestamps=[saved_at.get(p, gfile.stat(p + ".index").mtime_nsec / 1e9) for p in kept],
        last_preserved_timestamp=state.last_preserved_timestamp if state else 0.0,
    )


def _pin(prefix, into):
    """Copy (hard-link where it can) the files of checkpoint `prefix` into the local dir
    `into`; returns the pinned prefix. A NotFoundError where rotation deleted one meanwhile."""
    gfile = _gfile()
    pinned = os.path.join(into, os.path.basename(prefix))
    for found in gfile.glob(prefix + ".*"):
        if found.endswith(UNREADABLE_SUFFIX):
            continue
        target = os.path.join(into, os.path.basename(found))
        try:
            os.link(found, target)
        except OSError:
            gfile.copy(found, target, overwrite=True)
    if not os.path.exists(pinned + ".index"):
        import tensorflow as tf

        raise tf.errors.NotFoundError(None, None, f"{prefix}.index is gone")
    return pinned


RELIST_ATTEMPTS = 50  # a live run's checkpoints may all be rotated away between listing and pinning


def restore_newest(checkpoint, model_dir, report=None):
    """Restore `checkpoint` (a tf.train.Checkpoint of the model) from the newest checkpoint of
    the run that reads whole, for readers: its files are pinned first (hard links or copies),
    so the trainer's rotation cannot delete them mid-read; where every listed one was deleted
    before it was pinned (a live run keeping one), the dir is listed again. Skipped
    checkpoints are named to `report` (default: stderr). Returns the path restored; a
    ValueError where none reads."""
    import tensorflow as tf

    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    directory = checkpoint_dir(model_dir)
    skipped, tried = [], set()
    for _ in range(RELIST_ATTEMPTS):
        gone = 0
        for prefix in [p for p in checkpoint_prefixes(directory) if p not in tried]:
            tried.add(prefix)
            with tempfile.TemporaryDirectory(prefix="keras_resnet-pinned-") as into:
                try:
                    checkpoint.restore(_pin(prefix, into)).expect_partial()
                except Exception as error:  # a file gone (rotated, deleted), truncated or unreadable
                    skipped.append(f"skipped checkpoint {prefix}: {first_line(error)}")
                    gone += isinstance(error, tf.errors.NotFoundError)
                    continue
            for line in skipped:
                report(line)
            if skipped:
                report(f"read {os.path.basename(prefix)}, the newest readable checkpoint of {model_dir}")
            return prefix
        if not gone:
            break
        time.sleep(0.1)
    if skipped:
        raise ValueError(f"no readable checkpoint in {directory}: " + "; ".join(skipped))
    raise ValueError(f"no checkpoint in {directory}: train first, or pass a .keras file")


def restore_weights(model, model_dir, report=None):
    """Set `model` (a network of the run's record) to the newest readable checkpoint of the
    run (`restore_newest`); optimizer state is ignored. Returns the checkpoint's path."""
    import tensorflow as tf

    return restore_newest(tf.train.Checkpoint(model=model), model_dir, report)


# The trainer's hold on a run dir.


class RunLock:
    """The training lock of a run dir: `locks.FileLock` on a local training.lock, released
    when the process ends, however it ends. A remote model_dir has no lock (object stores
    offer no lock to build one on)."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self._lock = locks.FileLock(path(model_dir, LOCK_NAME))

    def acquire(self):
        """Take the lock, or a RunDirError naming its holder. Returns a note, or None."""
        if is_url(self.model_dir):
            return f"{self.model_dir} is not on a local disk: it is not locked; run one training on it at a time"
        ensure_writable(self.model_dir)
        try:
            self._lock.acquire()
        except locks.LockHeld as held:
            raise RunDirError(
                f"{self.model_dir!r} is in use by another training ({locks.describe(held.holder)}): wait for it or "
                "stop it, or use another --model_dir"
            ) from None
        return None

    def release(self):
        self._lock.release()


def ensure_writable(model_dir):
    """Make `model_dir`, or a RunDirError in one line where it cannot be written (read-only,
    permission denied)."""
    gfile = _gfile()
    try:
        gfile.makedirs(str(model_dir))
        if not is_url(model_dir) and not os.access(model_dir, os.W_OK):
            raise PermissionError(f"permission denied: {model_dir}")
    except Exception as error:
        raise RunDirError(
            f"--model_dir {str(model_dir)!r} cannot be written ({first_line(error)}): give a writable --model_dir"
        ) from None


def remove_staging(model_dir):
    """Remove what killed writes leave: TensorFlow's `ckpt-N_temp/` save dirs and the `.tmp-*`
    files of atomic writes. Only under the lock: no other writer is running. Returns the
    paths removed."""
    gfile = _gfile()
    directory = checkpoint_dir(model_dir)
    leftovers = gfile.glob(f"{directory}/*_temp") + gfile.glob(path(model_dir, ".tmp-*"))
    leftovers += gfile.glob(f"{directory}/.tmp*")
    for found in leftovers:
        if gfile.isdir(found):
            if is_url(found):
                gfile.rmtree(found)
            else:
                shutil.rmtree(found, ignore_errors=True)
        else:
            with contextlib.suppress(Exception):
                gfile.remove(found)
    return sorted(leftovers)
