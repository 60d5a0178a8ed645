"""The one way every export format is published: check the target, lock it, remove a killed
export's leftovers, stage every file in a hidden directory beside it, check float32 against
the float64 network, check each reduced-precision copy against its bounds, and only then
rename the files into place; on any failure (a check, a full disk, Ctrl-C) nothing is left
at the target.

A format supplies only what differs (`Format`): how it writes its files from the serving
graph, how its float32 file is verified, how a file runs (for the copies' checks), and which
files make one copy. Where the files go is a `Target`: the files of a single output path
(`file_target`), or a directory such as a TF Serving version (saved_model.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

from keras_resnet.export import staging, variants, verify
from keras_resnet.run_dir import is_url

# What a full disk, a read-only file system or missing permissions raise while files are written.
TARGET_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


class TargetError(ValueError):
    """The target cannot take the export's files (disk full, read-only, no permission): one
    line naming the path and what to do. Nothing was left there."""


def _one_file(path):
    return (path,)


@dataclasses.dataclass(frozen=True)
class Format:
    """What one export format supplies to the publishing path.

    write(graph, staged, **options): write every copy ({tag: path in the staging dir}).
    verify(path, graph, reference, log=, **bound): the float32 copy against the float64
    network (a VerificationError when it is further than float32 rounding explains).
    runner(path): `images -> {output: array}` of a copy, for the reduced-precision checks
    (None: the format has no copies). files(path): every file of one copy, a companion before
    the file that names it (an OpenVINO .bin before its .xml). A single-file format names its
    output's `suffix` (`note`: why), and the `variants` written beside it."""

    name: str
    write: Callable
    verify: Callable
    runner: Callable | None = None
    files: Callable = _one_file
    suffix: str = ""
    variants: tuple = ()
    note: str = ""

    def family(self, path):
        """{tag: path} of the copies an export to `path` may write: "fp32" at `path`, each
        variant beside it (`model.onnx` -> `model.int8.onnx`)."""
        return staging.family(path, self.suffix, self.variants)

    def check_output(self, path, overwrite):
        """Refuse, before any model is loaded, an output that does not end in the suffix or
        is not in a writable directory, or whose files (an earlier export's copies included)
        exist without overwrite."""
        every_file = lambda path: [file for copy in self.family(path).values() for file in self.files(copy)]  # noqa: E731
        staging.check_targets(path, self.suffix, every_file, overwrite, self.note)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where an export's files go. `lock`: the path whose export lock is held (its parent is
    created first); `leftovers`: (directory, target names or None for all) whose staging
    names killed exports may have left; `resolve()`: under the lock, the checks again and
    {tag: final path} of every copy an export there may write; `flag`: the option that
    chooses the place, named in errors."""

    lock: str
    leftovers: tuple
    resolve: Callable
    flag: str


@dataclasses.dataclass(frozen=True)
class Published:
    """What the publishing path measured and where each copy landed ({tag: path})."""

    paths: dict
    differences: dict
    reports: dict
    accuracy: dict | None


def file_target(fmt, path, overwrite):
    """The Target of `fmt`'s output file `path` and the copies beside it."""

    def resolve():
        fmt.check_output(path, overwrite)
        return fmt.family(path)

    names = [os.path.basename(member) for member in fmt.family(path).values()]
    return Target(path, (os.path.dirname(os.path.abspath(path)), names), resolve, "--output")


def export_file(fmt, make_graph, output_path, tags, *, overwrite=False, log=print, **checks):
    """Export `tags` of the graph `make_graph()` builds to `output_path` and the copies beside
    it, every input refused before the graph is built; `checks`: `publish`'s keywords.
    Returns a Published; each file landed is printed with its size."""
    fmt.check_output(output_path, overwrite)
    check_calibration("int8" in tags, checks.get("calibration_images"))
    if is_url(output_path):
        return _export_file_to_url(fmt, make_graph, output_path, tags, overwrite=overwrite, log=log, **checks)
    target = file_target(fmt, output_path, overwrite)
    result = publish(fmt, make_graph(), target, tags, overwrite=overwrite, log=log, **checks)
    for tag, path in result.paths.items():
        size = sum(os.path.getsize(file) for file in fmt.files(path))
        log(f"{fmt.name} {tag}: {path} ({size / 1e6:.1f} MB)")
    return result


def _export_file_to_url(fmt, make_graph, url, tags, *, overwrite, log, **checks):
    """`export_file` to a `gs://`, `ram://`... URL: exported and verified in a local temporary
    directory, then each copy's files uploaded (a companion before the file naming it); with
    overwrite, copies an earlier export left that this one did not write are removed."""
    import tensorflow as tf

    staging.url_note(url, log)
    with tempfile.TemporaryDirectory(prefix="keras_resnet-export-") as local:
        result = export_file(fmt, make_graph, os.path.join(local, url.rsplit("/", 1)[-1]), tags, log=log, **checks)
        finals = fmt.family(url)
        for tag, path in result.paths.items():
            for source, target in zip(fmt.files(path), fmt.files(finals[tag])):
                staging.upload_file(source, target)
            log(f"{fmt.name} {tag}: {finals[tag]}")
    for tag, target in finals.items():
        if tag not in result.paths and overwrite and tf.io.gfile.exists(target):
            for file in fmt.files(target):
                if tf.io.gfile.exists(file):
                    tf.io.gfile.remove(file)
            log(f"removed {target}: an earlier export's {tag} copy, not written this time")
    return dataclasses.replace(result, paths={tag: finals[tag] for tag in result.paths})


def check_calibration(int8, calibration_images):
    """int8 needs real calibration images: refused before any model is built without them."""
    if int8 and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 needs calibration_images: a few hundred real training images (--dataset)")


def _make_dirs(path):
    """Create `path` and its missing parents; return those created, deepest first."""
    created = []
    while not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path) or "."
    for directory in reversed(created):
        os.mkdir(directory)
    return created


def _is_target_fault(error):
    """A write refused by the file system (full, read-only, not permitted), raised as
    OSError by Python or as an OpError by TensorFlow's own file writers."""
    if isinstance(error, OSError):
        return error.errno in TARGET_ERRNOS
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return False
    text = str(error)
    return any(os.strerror(number) in text for number in TARGET_ERRNOS)


def _reason(error):
    """What the file system said, in a few words."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return next(os.strerror(number) for number in TARGET_ERRNOS if os.strerror(number) in str(error))


@contextlib.contextmanager
def refused_writes(path, flag):
    """Turn a write the file system refuses inside the block (full, read-only, not
    permitted) into a TargetError naming the file (`path` where the error names none) and
    `flag`, the option that chooses the place."""
    try:
        yield
    except Exception as error:
        if not _is_target_fault(error):
            raise
        where = getattr(error, "filename", None) or path  # a file elsewhere (a temporary one) is named
        raise TargetError(
            f"cannot write {os.path.abspath(where)!r} ({_reason(error)}): nothing was published; free space there "
            f"or choose another {flag}"
        ) from None


def publish(
    fmt,
    graph,
    target,
    tags,
    *,
    reference=None,
    calibration_images=None,
    eval_images=None,
    eval_labels=None,
    int8_min_agreement=variants.INT8_MIN_AGREEMENT,
    overwrite=False,
    log=print,
    write_options=None,
    **bound,
):
    """Write `tags` ("fp32" first) of `graph` in `fmt`, verify them and publish them at
    `target`. float32 must be within float32's rounding of the float64 network (`bound`:
    verify.check_float32's factor and floor); each copy is compared with the float64 network
    on `eval_images` (held-out, with `eval_labels` its accuracy; else the calibration images,
    else photos) within its bounds. With overwrite, copies an earlier export left that this
    one does not write are removed. Returns a Published; raises TargetError when the file
    system refuses a write, leaving nothing behind."""
    reference = reference or verify.Reference(graph.source)
    created = []
    try:
        with refused_writes(target.lock, target.flag):
            created = _make_dirs(os.path.dirname(os.path.abspath(target.lock)))
            with staging.lock(target.lock):
                staging.remove_leftovers(*target.leftovers, log)
                finals = target.resolve()
                created = _make_dirs(os.path.dirname(finals["fp32"])) + created
                staged_dir = staging.staging_dir(finals["fp32"])
                try:
                    staged = {tag: os.path.join(staged_dir, os.path.basename(finals[tag])) for tag in tags}
                    fmt.write(graph, staged, calibration_images=calibration_images, **(write_options or {}))
                    graph.release()
                    differences = fmt.verify(staged["fp32"], graph, reference, log=log, **bound)
                    log(f"{fmt.name} float32 within float32's rounding of the float64 network")
                    reports, accuracy = {}, None
                    if fmt.runner is not None and (len(staged) > 1 or eval_labels is not None):
                        images, labels, where = variants.comparison_images(
                            graph, calibration_images, eval_images, eval_labels
                        )
                        runs = {tag: fmt.runner(path) for tag, path in staged.items()}
                        reports, accuracy = variants.check_all(
                            fmt.name, runs, graph, reference, images, labels, where, int8_min_agreement, log
                        )
                    published = staging.publish(staged, finals, overwrite, log, fmt.files)
                finally:
                    shutil.rmtree(staged_dir, ignore_errors=True)
    except BaseException:
        for directory in created:
            if os.path.isdir(directory) and not os.listdir(directory):
                os.rmdir(directory)
        raise
    return Published(published, differences, reports, accuracy)
