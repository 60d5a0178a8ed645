"""SavedModel for TF Serving: `<base>/<model_name>/<version>/`, written atomically.

TF Serving polls the base path and loads any integer directory it finds, so a version is
built and verified in a hidden temporary directory beside it and renamed into place only
after the check passed: a failed export leaves nothing TF Serving could pick up.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile

from keras_resnet.export import sources, tf_serving, verify
from keras_resnet.export.graph import BYTES_SIGNATURE, FLOAT_SIGNATURE, ServingGraph

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class SavedModelExport:
    """Where a verified SavedModel landed and how closely it matched the Keras model."""

    path: str
    version: int
    models_config: str
    differences: dict


def parse_version(version):
    """A TF Serving version: a positive integer (int or digit string)."""
    if isinstance(version, bool) or not (isinstance(version, int) or (isinstance(version, str) and version.isdigit())):
        raise ValueError(f"version={version!r} is not an integer: TF Serving only loads integer version dirs")
    if int(version) < 1:
        raise ValueError(f"version={version!r} must be >= 1")
    return int(version)


def check_target(base_path, model_name, version, overwrite):
    """(model dir, version) after refusing every bad target before anything is written."""
    if not _NAME.match(str(model_name)):
        raise ValueError(f"model_name={model_name!r} must be letters, digits, '_', '-' or '.' (a directory name)")
    if os.path.exists(base_path) and not os.path.isdir(base_path):
        raise ValueError(f"base path {base_path!r} is a file, not a directory")
    model_base = os.path.join(base_path, model_name)
    if os.path.exists(model_base) and not os.path.isdir(model_base):
        raise ValueError(f"{model_base!r} is a file, not a directory")
    existing = tf_serving.integer_versions(model_base)
    version = (max(existing, default=0) + 1) if version is None else parse_version(version)
    if version in existing and not overwrite:
        raise ValueError(
            f"{os.path.join(model_base, str(version))!r} exists: pass overwrite=True (--overwrite) to replace it"
        )
    return model_base, version


def write_saved_model(graph, directory, model_name):
    """Write the two signatures (over the folded model) and the warm-up records."""
    import keras

    archive = keras.export.ExportArchive()
    archive.add_endpoint(FLOAT_SIGNATURE, graph.serve_images, input_signature=[graph.images_spec()])
    archive.add_endpoint(BYTES_SIGNATURE, graph.serve_image_bytes, input_signature=[graph.bytes_spec()])
    archive.write_out(directory, verbose=False)
    tf_serving.write_warmup(directory, model_name, graph.image_size)
    sources.write_record(directory, graph.source)


def _make_dirs(path):
    """Create `path` and its missing parents; return those created, deepest first."""
    created = []
    while not os.path.isdir(path):
        created.append(path)
        path = os.path.dirname(path) or "."
    for directory in reversed(created):
        os.mkdir(directory)
    return created


def _move_into_place(staging, final):
    """Rename the verified staging dir to `final`; an existing version (overwrite) is moved
    aside only just before, and deleted after."""
    if not os.path.exists(final):
        os.rename(staging, final)
        return
    retired = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=".retired-")
    os.rename(final, os.path.join(retired, "old"))
    os.rename(staging, final)
    shutil.rmtree(retired)


def export_saved_model(
    source,
    base_path,
    *,
    model_name=None,
    version=None,
    overwrite=False,
    top_k=5,
    crop_fraction=None,
    serving_base="/models",
    rtol=verify.FLOAT32_RTOL,
    log=print,
):
    """Export `source` (a `sources.ModelSource`) to `<base_path>/<model_name>/<version>/`.

    The SavedModel's signatures are verified in a new process against the Keras model before
    the version dir appears; on any failure nothing is left at the target. Also (re)writes
    `<base_path>/models.config` listing every model under the base path.
    """
    model_name = model_name or source.name
    model_base, version = check_target(base_path, model_name, version, overwrite)
    graph = ServingGraph(source, top_k=top_k, crop_fraction=crop_fraction)
    created = _make_dirs(model_base)
    staging = tempfile.mkdtemp(dir=model_base, prefix=f".tmp-{version}-")
    final = os.path.join(model_base, str(version))
    try:
        write_saved_model(graph, staging, model_name)
        differences = verify.verify_saved_model(staging, graph, rtol=rtol)
        os.chmod(staging, 0o755)
        _move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in created:
            if not os.listdir(directory):
                os.rmdir(directory)
        raise
    worst = max(max(d.values()) for d in differences.values())
    log(f"SavedModel verified in a new process (worst relative difference {worst:.2e} <= {rtol:g}): {final}")
    config = tf_serving.write_models_config(base_path, serving_base)
    return SavedModelExport(final, version, config, differences)
