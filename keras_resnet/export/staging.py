"""Publishing an export safely: one writer per target, files staged beside it, leftovers of
killed exports removed by the next export of the same target.

Every exporter of a target holds `lock(target)` (`locks.FileLock`, released by the kernel
when the process ends, even by kill -9) from before its first write until its files are in place;
a second exporter of the same target is refused at once. Staging names start with
`.tmp-<target name>-`, so the lock holder knows that any such name it finds was left by an
export that no longer runs, and removes it.

A `gs://`, `ram://`... target is exported exactly as a local one into a local temporary
directory, and only the verified files are then copied to it through tf.io.gfile; such a
target has no lock (object stores have no file locks), which the export says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid

from keras_resnet import locks
from keras_resnet.run_dir import is_url

STAGING_PREFIX = ".tmp-"
RETIRED_PREFIX = ".retired-"


def nearest_directory(path):
    """The deepest existing directory on the way to `path` (itself if it exists)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_url(url, flag):
    """Refuse a URL whose file system TensorFlow does not know (a misspelt scheme)."""
    import tensorflow as tf

    try:
        tf.io.gfile.exists(url)
    except tf.errors.OpError as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"{url!r} cannot be reached through tf.io.gfile ({reason}): choose another {flag}") from None


def url_note(url, log=print):
    """Say that an export to a URL holds no lock (object stores have no file locks)."""
    log(f"{url} is not on a local disk: the export is not locked; run one export to it at a time")


def upload_file(local, url):
    """Copy the local file to `url` through tf.io.gfile, under a hidden name then renamed:
    readers of `url` never see it half-written."""
    import tensorflow as tf

    parent, name = url.rsplit("/", 1)
    tf.io.gfile.makedirs(parent)
    hidden = f"{parent}/{STAGING_PREFIX}{name}-{uuid.uuid4().hex}"
    tf.io.gfile.copy(local, hidden, overwrite=True)
    tf.io.gfile.rename(hidden, url, overwrite=True)


def upload_dir(local, url, last=()):
    """Copy the local directory to `url` (an existing one replaced) through tf.io.gfile, file
    by file with `upload_file`, the files named in `last` (a SavedModel's saved_model.pb)
    after all others: a poller that loads once that file is there never sees a part.
    Directories are not renamed: gs:// cannot, and ram:// renames only the name, not the
    files under it."""
    import tensorflow as tf

    if tf.io.gfile.exists(url):
        tf.io.gfile.rmtree(url)
    files = [
        os.path.relpath(os.path.join(directory, name), local)
        for directory, _, names in os.walk(local)
        for name in names
    ]
    for relative in sorted(files, key=lambda relative: (relative in last, relative)):
        staged = os.path.join(local, relative)
        upload_file(staged, f"{url.rstrip('/')}/{relative.replace(os.sep, '/')}")


def exists(path):
    """os.path.exists, through tf.io.gfile for a URL."""
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def isdir(path):
    """os.path.isdir, through tf.io.gfile for a URL."""
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def check_writable(path, flag):
    """Refuse, before any model is loaded, a target under which no file can be written: the
    nearest existing directory on its way must accept one (a real write, so a read-only
    mount is caught as well as permissions). `flag` names the option to change."""
    if is_url(path):
        check_url(path, flag)
        return
    directory = nearest_directory(path)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is a file, not a directory: choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f"{STAGING_PREFIX}write-test-")
    except OSError as error:
        raise ValueError(
            f"cannot write under {directory!r} ({error.strerror}): choose a writable {flag} "
            f"(for {os.path.abspath(path)!r})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def family(path, suffix, variants):
    """{tag: path} of the files an export to `path` may write: "fp32" at `path`, each of
    `variants` beside it (`model.onnx` -> `model.int8.onnx`)."""
    return {"fp32": path, **{tag: f"{path[: -len(suffix)]}.{tag}{suffix}" for tag in variants}}


def check_targets(path, suffix, targets, overwrite, note=""):
    """Refuse, before any model is loaded, an output `path` not ending in `suffix` (`note` says
    why it must) or not in a writable directory, or any of `targets(path)` (every file an
    export to it may write) that is a directory or exists without overwrite."""
    if not str(path).endswith(suffix):
        raise ValueError(f"output path {path!r} must end in {suffix}{note}")
    check_writable(os.path.dirname(path) or ".", "--output")
    directory = os.path.dirname(path if is_url(path) else os.path.abspath(path))
    if exists(directory) and not isdir(directory):
        raise ValueError(f"{directory!r} is a file, not a directory")
    for target in targets(path):
        if isdir(target):
            raise ValueError(f"{target!r} is a directory")
        if exists(target) and not overwrite:
            raise ValueError(f"{target!r} exists: pass overwrite=True (--overwrite) to replace it")


def _lock_path(target):
    return os.path.join(os.path.dirname(os.path.abspath(target)), f".{os.path.basename(target)}.lock")


@contextlib.contextmanager
def lock(target):
    """Hold the export lock of `target` (a file or directory path whose parent exists); a
    ValueError names the process holding it. The lock file is removed on release."""
    try:
        with locks.FileLock(_lock_path(target)):
            yield
    except locks.LockHeld as held:
        raise ValueError(
            f"another export to {os.path.abspath(target)!r} is running (process {held.holder.get('pid', 'unknown')}): "
            "wait for it to finish, or export elsewhere"
        ) from None


def staging_dir(target):
    """A new hidden directory beside `target`, named for it."""
    directory, name = os.path.split(os.path.abspath(target))
    return tempfile.mkdtemp(dir=directory, prefix=f"{STAGING_PREFIX}{name}-")


def remove_leftovers(directory, names, log=print):
    """Remove the staging files and dirs of `names` (targets in `directory`; None: all of
    them) that killed exports left behind. Call only while holding the lock of every one."""
    if not os.path.isdir(directory):
        return []
    names = [""] if names is None else [f"{name}-" for name in names]
    prefixes = tuple(f"{prefix}{name}" for name in names for prefix in (STAGING_PREFIX, RETIRED_PREFIX))
    removed = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(prefixes):
            path = os.path.join(directory, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
            removed.append(path)
    if removed:
        log(f"removed {len(removed)} leftover(s) of an interrupted export: {', '.join(removed)}")
    return removed


def replace(source, target):
    """Move the staged file or directory `source` onto `target`, world-readable. A file is
    replaced atomically; an existing directory (a version replaced with overwrite) is moved
    aside only just before, and deleted after."""
    os.chmod(source, 0o755 if os.path.isdir(source) else 0o644)
    if not os.path.isdir(target):
        os.replace(source, target)
        return
    retired = os.path.join(os.path.dirname(target), f"{RETIRED_PREFIX}{os.path.basename(target)}-{os.getpid()}")
    os.rename(target, retired)
    os.rename(source, target)
    shutil.rmtree(retired)


def publish(staged, targets, overwrite, log, files=lambda path: (path,)):
    """Move every staged copy ({tag: path}) onto its target ({tag: path}); with overwrite,
    remove the copies an earlier export left that this one did not write. `files(path)`: the
    files of a copy, a companion before the file that names it (an OpenVINO .bin before its
    .xml). Returns {tag: published path}."""
    for tag, path in staged.items():
        for source, target in zip(files(path), files(targets[tag])):
            replace(source, target)
    for tag, target in targets.items():
        if tag not in staged and overwrite and os.path.exists(target):
            for path in files(target):
                if os.path.exists(path):
                    os.unlink(path)
            log(f"removed {target}: an earlier export's {tag} copy, not written this time")
    return {tag: targets[tag] for tag in staged}
