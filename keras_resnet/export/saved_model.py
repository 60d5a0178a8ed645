"""SavedModel for TF Serving: `<base>/<model_name>/<version>/`, written atomically.

TF Serving polls the base path and loads any integer directory it finds, so a version is
built and verified in a hidden temporary directory beside it and renamed into place only
after the check passed: a failed export leaves nothing TF Serving could pick up. One
export per model name at a time (a lock beside it); a new version must serve the same task
as the newest one (classes, input size, signatures, preprocessing) unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile

from keras_resnet.export import publish, sources, staging, tf_serving, verify
from keras_resnet.export.graph import (
    BYTES_SIGNATURE,
    FLOAT_SIGNATURE,
    MAX_PIXELS,
    NUMERIC_OUTPUTS,
    ServingGraph,
    save_serving_graph,
)
from keras_resnet.run_dir import is_url

SERVING_FACTS = os.path.join("assets.extra", "keras_resnet_serving.json")


@dataclasses.dataclass(frozen=True)
class SavedModelExport:
    """Where a verified SavedModel landed and how closely it matched the float64 network."""

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


def check_base_path(base_path):
    """Refuse a base path that is a file, where nothing can be written, or whose models.config
    does not parse, before any model is loaded."""
    if os.path.exists(base_path) and not os.path.isdir(base_path):
        raise ValueError(f"base path {base_path!r} is a file, not a directory")
    staging.check_writable(base_path, "--base_path")
    tf_serving.read_models_config(base_path)


def check_target(base_path, model_name, version, overwrite):
    """(model dir, version) after refusing every bad target before anything is written."""
    tf_serving.check_model_name(model_name)
    check_base_path(base_path)
    model_base = os.path.join(base_path, model_name)
    if os.path.exists(model_base) and not os.path.isdir(model_base):
        raise ValueError(f"{model_base!r} is a file, not a directory")
    if os.path.isdir(model_base):
        staging.check_writable(model_base, "--base_path")
    existing = tf_serving.integer_versions(model_base)
    version = (max(existing, default=0) + 1) if version is None else parse_version(version)
    if version in existing and not overwrite:
        raise ValueError(
            f"{os.path.join(model_base, str(version))!r} exists: pass overwrite=True (--overwrite) to replace it"
        )
    return model_base, version


def serving_facts(graph):
    """What a client of the served model relies on: compared between versions of one name."""
    mean = graph.source.mean
    return {
        "classes": int(graph.source.model.output_shape[-1]),
        "class_names": list(graph.class_names) if graph.class_names is not None else None,
        "input_size": list(graph.image_size),
        "signatures": {
            FLOAT_SIGNATURE: ["images"],
            BYTES_SIGNATURE: ["image_bytes"],
            "outputs": list(NUMERIC_OUTPUTS) + (["class_names"] if graph.class_names is not None else []),
            "top_k": graph.top_k,
        },
        "preprocessing": {
            "mode": graph.source.preprocess_mode,
            "mean_sha1": None if mean is None else hashlib.sha1(json.dumps(mean.tolist()).encode()).hexdigest(),
            "centre_view": f"shorter side {graph.resize}, centre {graph.image_size[0]}",
        },
    }


def _recorded_facts(version_dir):
    """The serving facts a version was exported with, or None for one exported without them."""
    path = os.path.join(version_dir, SERVING_FACTS)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _describe(value):
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _flat(facts, prefix=""):
    """{"preprocessing.mode": ..., ...}: nested facts by dotted name."""
    flat = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_task(model_base, facts):
    """Refuse a new version whose serving facts differ from the newest version's, naming
    each difference; a newest version exported without facts is not compared."""
    existing = tf_serving.integer_versions(model_base)
    if not existing:
        return
    newest = os.path.join(model_base, str(max(existing)))
    recorded = _recorded_facts(newest)
    if recorded is None:
        return
    recorded, facts = _flat(recorded), _flat(facts)
    differences = [
        f"{key}: {_describe(recorded.get(key))} there, {_describe(facts[key])} here"
        for key in facts
        if recorded.get(key) != facts[key]
    ]
    if differences:
        raise ValueError(
            f"{newest!r} serves a different model ({'; '.join(differences)}): clients of "
            f"{os.path.basename(model_base)!r} would break. Pass overwrite=True (--overwrite) to add it anyway, "
            "or give it its own model_name (--model_name)"
        )


def write_saved_model(graph, directory, model_name, warmup_batch_sizes=(1,)):
    """Write the two signatures over the folded model (one graph, its weights variables in
    the SavedModel's checkpoint as TF Serving loads them best: `graph.save_serving_graph`),
    the warm-up records (one request per signature and batch size) and the facts."""
    save_serving_graph(
        graph.folded, directory, {FLOAT_SIGNATURE: graph.float_entry, BYTES_SIGNATURE: graph.bytes_entry}, frozen=False
    )
    tf_serving.write_warmup(directory, model_name, graph.image_size, warmup_batch_sizes)
    sources.write_record(directory, graph.source)
    with open(os.path.join(directory, SERVING_FACTS), "w") as f:
        json.dump(serving_facts(graph), f, indent=1)


def _write(graph, staged, *, calibration_images=None, model_name, warmup_batch_sizes):
    write_saved_model(graph, staged["fp32"], model_name, warmup_batch_sizes)


FORMAT = publish.Format("SavedModel", _write, verify.verify_saved_model)


def _mirror(base_url, model_name, local):
    """Copy into `local` what numbering and checking a new version of `model_name` reads at
    `base_url`: models.config, the batching parameters, and each integer version's dir with
    only its serving facts."""
    import tensorflow as tf

    gfile = tf.io.gfile
    for name in (tf_serving.MODELS_CONFIG, tf_serving.BATCHING_PARAMETERS):
        if gfile.exists(f"{base_url}/{name}"):
            gfile.copy(f"{base_url}/{name}", os.path.join(local, name))
    model_url = f"{base_url}/{model_name}"
    for entry in gfile.listdir(model_url) if gfile.isdir(model_url) else []:
        entry = entry.rstrip("/")
        if entry.isdigit() and gfile.isdir(f"{model_url}/{entry}"):
            facts = os.path.join(local, model_name, entry, SERVING_FACTS)
            os.makedirs(os.path.dirname(facts))
            if gfile.exists(f"{model_url}/{entry}/{SERVING_FACTS}"):
                gfile.copy(f"{model_url}/{entry}/{SERVING_FACTS}", facts)


def _export_to_url(source, base_url, options):
    """`export_saved_model` to a `gs://`, `ram://`... base path: the version is exported and
    verified under a local temporary base path holding a copy of the URL's models.config,
    batching parameters and versions' facts, then uploaded (tf.io.gfile), followed by the
    merged models.config (and batching parameters). No lock: one export there at a time."""
    from keras_resnet import run_dir

    staging.check_url(base_url, "--base_path")
    tf_serving.check_model_name(options["model_name"])
    base_url, log = base_url.rstrip("/"), options["log"]
    staging.url_note(base_url, log)
    with tempfile.TemporaryDirectory(prefix="keras_resnet-export-") as local:
        _mirror(base_url, options["model_name"], local)
        result = export_saved_model(source, local, **options)
        final = f"{base_url}/{options['model_name']}/{result.version}"
        staging.upload_dir(result.path, final, last=("saved_model.pb",))
        log(f"SavedModel: {final}")
        for name in (tf_serving.MODELS_CONFIG, tf_serving.BATCHING_PARAMETERS):
            written = os.path.join(local, name)
            if os.path.isfile(written) and (name == tf_serving.MODELS_CONFIG or options["batching"]):
                with open(written, "rb") as f:
                    run_dir.atomic_write_bytes(f"{base_url}/{name}", f.read())
    return dataclasses.replace(result, path=final, models_config=f"{base_url}/{tf_serving.MODELS_CONFIG}")


def version_target(base_path, model_name, version, overwrite, facts):
    """The Target of a new version of `model_name`: its lock and leftovers are the model
    dir's (only that model's exports write there); under the lock the version is numbered
    and checked again, and must serve the newest version's task unless `overwrite`."""

    def resolve():
        model_base, number = check_target(base_path, model_name, version, overwrite)
        if not overwrite:
            check_same_task(model_base, facts)
        return {"fp32": os.path.join(model_base, str(number))}

    model_base = os.path.join(base_path, model_name)
    return publish.Target(model_base, (model_base, None), resolve, "--base_path")


def export_saved_model(
    source,
    base_path,
    *,
    model_name=None,
    version=None,
    overwrite=False,
    top_k=None,
    crop_fraction=None,
    max_pixels=MAX_PIXELS,
    serving_base="/models",
    reference=None,
    batching=False,
    version_label=None,
    log=print,
    **bound,
):
    """Export `source` (a `sources.ModelSource`) to `<base_path>/<model_name>/<version>/`.
    `batching=True` also writes `<base_path>/batching_parameters.txt` chosen from latencies
    measured here; the warm-up requests cover every batch size the base path's batching
    parameters allow. `version_label` labels the new version so in models.config.

    The SavedModel's signatures are verified in a new process against the float64 network
    before the version dir appears (`bound`: verify.check_float32's factor and floor); on
    any failure nothing is left at the target. A second export of the same model name while
    one runs is refused; leftovers of killed exports are removed. Then merges the model's
    entry into `<base_path>/models.config`, keeping every other entry as it was.
    """
    model_name = model_name or source.name
    if is_url(base_path):
        options = dict(
            model_name=model_name, version=version, overwrite=overwrite, top_k=top_k, crop_fraction=crop_fraction,
            max_pixels=max_pixels, serving_base=base_path if serving_base is None else serving_base,
            reference=reference, batching=batching, version_label=version_label, log=log, **bound,
        )  # fmt: skip
        return _export_to_url(source, base_path, options)
    check_target(base_path, model_name, version, overwrite)
    if version_label is not None:
        tf_serving.check_label(version_label)
    graph = ServingGraph(source, top_k=top_k, crop_fraction=crop_fraction, max_pixels=max_pixels)
    batching = tf_serving.measured_batching(graph, log) if batching else None
    result = publish.publish(
        FORMAT,
        graph,
        version_target(base_path, model_name, version, overwrite, serving_facts(graph)),
        ["fp32"],
        reference=reference,
        overwrite=overwrite,
        log=log,
        write_options={
            "model_name": model_name,
            "warmup_batch_sizes": tf_serving.serving_batch_sizes(base_path, batching),
        },
        **bound,
    )
    final = result.paths["fp32"]
    version = int(os.path.basename(final))
    log(f"SavedModel verified in a new process against the float64 network: {final}")
    labels = {version_label: version} if version_label else None
    config_path = os.path.join(base_path, tf_serving.MODELS_CONFIG)
    with publish.refused_writes(config_path, "--base_path"), staging.lock(config_path):
        config = tf_serving.write_models_config(base_path, model_name, serving_base, labels)
    if batching:
        batching_path = os.path.join(base_path, tf_serving.BATCHING_PARAMETERS)
        with publish.refused_writes(batching_path, "--base_path"), staging.lock(batching_path):
            log(f"batching parameters: {tf_serving.write_batching_parameters(base_path, batching)}")
    return SavedModelExport(final, version, config, result.differences)
