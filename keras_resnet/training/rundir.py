"""Guarding a run dir: one training at a time, leftovers of killed saves removed, the newest
checkpoint that can be read found (never a silent restart that rotates the good ones away),
and a full disk reported in one line."""

from __future__ import annotations

import contextlib
import datetime
import errno
import glob
import json
import os
import re
import shutil
import socket

LOCK_NAME = "training.lock"
CHECKPOINT_STATE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
UNREADABLE_SUFFIX = ".unreadable"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


class RunDirError(RuntimeError):
    """The run dir cannot be used as it is (in use, unreadable checkpoints, disk full)."""


def _process_alive(pid):
    """Whether process `pid` of this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _read_lock(path):
    """The lock's {"pid", "host", "started"}, or None if it is unreadable (a write cut short)."""
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def acquire_lock(model_dir):
    """Take the run dir for this process: `<model_dir>/training.lock` holding our pid and host,
    created exclusively. A lock whose process is gone (same host) is stale and replaced,
    saying so; a live one is a RunDirError naming its holder. Returns (path, message or None)."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_NAME)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat("T", "seconds"),
    }
    message = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is not None and (holder.get("host") != me["host"] or _process_alive(holder["pid"])):
                raise RunDirError(
                    f"{model_dir!r} is in use by another training (pid {holder['pid']} on {holder.get('host')}, "
                    f"started {holder.get('started')}): wait for it or stop it, or use another --model_dir "
                    f"(if that process is gone, delete {path})"
                ) from None
            stale = f"{path}.stale-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):  # another starter may have taken it first
                os.replace(path, stale)
                os.unlink(stale)
                who = f"pid {holder['pid']} on {holder.get('host')}" if holder else "an unreadable lock"
                message = f"removed the stale lock {path} of {who}: that process is gone"
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path, message
    raise RunDirError(f"could not take the lock {path}: other processes keep creating it")


def release_lock(path):
    """Remove our lock (only if it is still ours)."""
    holder = _read_lock(path)
    if holder is not None and holder["pid"] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_staging(model_dir, checkpoint_dir):
    """Remove what killed writes leave: TensorFlow's `ckpt-N_temp/` save dirs and the `.tmp-*`
    files of atomic writes. Only under the lock: no other writer is running. Returns the
    paths removed."""
    leftovers = glob.glob(os.path.join(glob.escape(checkpoint_dir), "*_temp"))
    leftovers += glob.glob(os.path.join(glob.escape(model_dir), ".tmp-*"))
    leftovers += glob.glob(os.path.join(glob.escape(checkpoint_dir), ".tmp*"))
    for path in leftovers:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return sorted(leftovers)


def _step_of(prefix):
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


def checkpoint_prefixes(directory):
    """Every checkpoint `directory` names or holds, newest (highest step) first: the index
    files present and the entries of the CheckpointManager's list (whose files may be gone)."""
    found = {p[: -len(".index")] for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))}
    import tensorflow as tf

    with contextlib.suppress(Exception):  # a damaged list: the files themselves still count
        state = tf.train.get_checkpoint_state(directory)
        if state is not None:
            for path in state.all_model_checkpoint_paths:
                found.add(path if os.path.isabs(path) else os.path.join(directory, path))
    return sorted(found, key=_step_of, reverse=True)


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def restore_newest_readable(checkpoint, directory, chief=True):
    """Restore `checkpoint` (a tf.train.Checkpoint) from the newest checkpoint in `directory`
    that reads whole; returns (path or None, [messages]).

    A newest checkpoint that is missing or unreadable (a truncated file, a disk error) is
    skipped, saying so; the chief moves an unreadable one aside (`*.unreadable`) and writes
    the CheckpointManager's list anew, so that rotation never deletes the good ones for it.
    None: nothing to resume from. If checkpoints exist but none reads, a RunDirError: a fresh
    start would rotate them away.
    """
    prefixes = checkpoint_prefixes(directory)
    messages, unreadable = [], []
    for prefix in prefixes:
        name = os.path.basename(prefix)
        if not os.path.exists(prefix + ".index"):
            messages.append(
                f"checkpoint {name} is listed in {os.path.join(directory, CHECKPOINT_STATE)} but its files are gone"
            )
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

    for prefix in unreadable:
        for path in glob.glob(glob.escape(prefix) + ".*"):
            if not path.endswith(UNREADABLE_SUFFIX):
                os.replace(path, path + UNREADABLE_SUFFIX)
        messages.append(
            f"moved {os.path.basename(prefix)}'s files aside as {os.path.basename(prefix)}.*{UNREADABLE_SUFFIX}"
        )
    state = None
    with contextlib.suppress(Exception):
        state = tf.train.get_checkpoint_state(directory)
    saved_at = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)) if state else {}
    readable = [p for p in checkpoint_prefixes(directory) if os.path.exists(p + ".index")]
    kept = sorted((p for p in readable if _step_of(p) <= _step_of(resumed)), key=_step_of)
    tf.compat.v1.train.update_checkpoint_state(  # with their save times, so that rotation still deletes the oldest
        directory,
        resumed,
        all_model_checkpoint_paths=kept,
        all_model_checkpoint_timestamps=[saved_at.get(p, os.path.getmtime(p + ".index")) for p in kept],
        last_preserved_timestamp=state.last_preserved_timestamp if state else 0.0,
    )


def is_disk_full(error):
    """Whether an OSError or TensorFlow error says the disk (or quota, or file size limit) is full."""
    if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
        return True
    return any(text in str(error) for text in NO_SPACE_TEXTS)
