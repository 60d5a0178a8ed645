"""The one flag set of the four exporters' entry points (where the model comes from, how the
served model answers, where its files go and which reduced-precision copies to write) and
the main body they share."""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags, logging

from keras_resnet.preprocessing import MODES


def define_source_flags(flag_values=flags.FLAGS):
    """--model_dir | --keras_file | --model (+ --weights), and what serving must know beside."""
    flags.DEFINE_string(
        "model_dir",
        None,
        "A training run dir (config.json + checkpoints/): its newest checkpoint, with the preprocessing and class "
        "names the run recorded.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "keras_file",
        None,
        "A model saved with model.save('x.keras'): a keras_resnet model brings its record (architecture, "
        "preprocessing, class names); any other needs --preprocess_mode.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "model",
        None,
        "A registered architecture (e.g. resnet50, resnet20), rebuilt as --weights record it; untrained without "
        "--weights.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "weights",
        None,
        "With --model: weights as the builders take them (a converted or own .weights.h5, a keras.applications "
        ".h5, a .keras file, a run dir); their record says the architecture and preprocessing.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "preprocess_mode",
        None,
        MODES,
        "Only where nothing records the preprocessing (a plain model.save_weights file, a .keras file not made by "
        "keras_resnet, an untrained --model), and then required; one that contradicts the record is an error.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "mean_file",
        None,
        "With --preprocess_mode pixel_mean: a .npy mean image (HxWx3) or 3 channel means.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "labels",
        None,
        "A text file naming the classes, one per line, in output order (adds the class_names output).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "model_name",
        None,
        "The served name (default: the run dir's name, the .keras file's name, or the registry name).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "dataset",
        None,
        "The data set the model was trained on, for int8 calibration (a run dir names its own): digits, cifar10, imagenet, ...",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "data_dir",
        None,
        "Where that data set lives (see keras_resnet.data); a run dir names its own.",
        flag_values=flag_values,
    )


def define_export_flags(overwrite_help, flag_values=flags.FLAGS):
    """--overwrite and --top_k: what every exporter takes beside the source flags."""
    flags.DEFINE_bool("overwrite", False, overwrite_help, flag_values=flag_values)
    flags.DEFINE_integer(
        "top_k",
        None,
        "How many classes top_k_classes / top_k_scores return (default: 5, or all if fewer).",
        flag_values=flag_values,
    )


def define_file_flags(suffix, copies, int8_help, flag_values=flags.FLAGS):
    """The flags of an exporter of one `suffix` file with reduced-precision `copies` (their
    tags, as the help prints them) beside it: the source flags, --overwrite, --top_k,
    --output, --int8, --calibration_count, --int8_min_agreement, --eval_count."""
    define_source_flags(flag_values)
    define_export_flags(
        f"Replace existing output files (and remove an earlier export's {copies} copies not rewritten).", flag_values
    )
    flags.DEFINE_string(
        "output",
        None,
        f"The {suffix} file to write (the {copies} copies go beside it).",
        required=True,
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "int8",
        False,
        f"Also write {int8_help}, calibrated on --calibration_count training images of --dataset.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer("calibration_count", 300, "Training images for int8 calibration.", flag_values=flag_values)
    flags.DEFINE_float(
        "int8_min_agreement",
        0.95,
        "The least top-1 agreement of the int8 copy with the float64 network on the test images; 0 for a net "
        "that has not been trained, whose nearly tied logits make agreement meaningless.",
        lower_bound=0.0,
        upper_bound=1.0,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "eval_count",
        1000,
        f"Test images on which the {copies} copies are compared with the float64 network (accuracy and top-1 "
        "agreement).",
        flag_values=flag_values,
    )


def source_from_flags(flag_values=flags.FLAGS):
    """The ModelSource the parsed flags name, or a ValueError saying which flag is wrong."""
    from keras_resnet.export import sources

    f = flag_values
    given = [name for name in ("model_dir", "keras_file", "model") if getattr(f, name)]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of --model_dir, --keras_file, --model (got {', '.join('--' + g for g in given) or 'none'})"
        )
    if f.weights and not f.model:
        raise ValueError("--weights goes with --model")
    names = sources.read_labels(f.labels) if f.labels else None
    if f.model_dir:
        if f.mean_file:
            raise ValueError("--mean_file goes with --keras_file or --model: a run dir records its own mean")
        source = sources.from_run_dir(
            f.model_dir, preprocess_mode=f.preprocess_mode, class_names=names, name=f.model_name
        )
        overrides = {key: getattr(f, key) for key in ("dataset", "data_dir") if getattr(f, key)}
        return default_name_made_valid(dataclasses.replace(source, **overrides), f)
    mean = sources.load_mean(f.mean_file) if f.mean_file else None
    common = dict(
        preprocess_mode=f.preprocess_mode,
        mean=mean,
        class_names=names,
        name=f.model_name,
        dataset=f.dataset,
        data_dir=f.data_dir,
    )
    if f.keras_file:
        return default_name_made_valid(sources.from_keras_file(f.keras_file, **common), f)
    return sources.from_builder(f.model, weights=f.weights, **common)


def default_name_made_valid(source, flag_values=flags.FLAGS):
    """A served name taken from a path (no --model_name given) made valid, saying so."""
    from keras_resnet.export import tf_serving

    if flag_values.model_name or tf_serving.MODEL_NAME.match(source.name):
        return source
    name = tf_serving.valid_model_name(source.name)
    print(f"serving {source.name!r} as {name!r} (a model name is letters, digits, '_', '-' or '.'; --model_name)")
    return dataclasses.replace(source, name=name)


def exit_on_error(function, *args, **kwargs):
    """Run an export; a bad input or a failed check exits non-zero with its message."""
    from keras_resnet.export.verify import VerificationError
    from keras_resnet.scripts import traceback_asked

    try:
        return function(*args, **kwargs)
    except (ValueError, VerificationError) as error:
        if traceback_asked():
            raise
        sys.exit(f"error: {error}")


def real_images(source, other_copies, flag_values=flags.FLAGS):
    """(calibration images, test images, test labels) when --int8 is asked (it needs them), or
    `other_copies` are and the model's data set is known (for their accuracy); else Nones."""
    from keras_resnet.export.calibration import source_images

    f = flag_values
    if f.int8 or (other_copies and source.dataset is not None):
        return source_images(source, f.calibration_count, f.eval_count)
    return None, None, None


def export_from_flags(argv, check, export, **options):
    """An exporter's main: `check()` (the target, before the model loads), then
    `export(source, **options)`; a bad input or a failed check exits non-zero with its
    message. Returns what `export` returns."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Read at TensorFlow's first allocation: oneDNN's own allocator pools freed tensors for the
    # process's life, so the folded net an export drops once its files are written
    # (ServingGraph.release) would stay in memory beside the check's process.
    from keras_resnet.export.graph import SYSTEM_ALLOCATOR

    os.environ.setdefault(SYSTEM_ALLOCATOR, "1")
    logging.set_verbosity(logging.WARNING)  # the converters log every step at INFO
    exit_on_error(check)
    source = exit_on_error(source_from_flags)
    return exit_on_error(export, source, **options)


def export_file_from_flags(argv, check_output, export_file, *, other_copies=False, flag_values=flags.FLAGS, **options):
    """The main of an exporter defined by define_file_flags: `check_output(--output,
    --overwrite)`, then `export_file(source, --output, ...)` with the real images int8 and
    the other copies need; `options`: its own flags' values. `other_copies`: copies besides
    int8 are asked for."""
    f = flag_values

    def export(source):
        calibration_images, eval_images, eval_labels = real_images(source, other_copies, f)
        return export_file(
            source,
            f.output,
            int8=f.int8,
            calibration_images=calibration_images,
            eval_images=eval_images,
            eval_labels=eval_labels,
            top_k=f.top_k,
            overwrite=f.overwrite,
            int8_min_agreement=f.int8_min_agreement,
            **options,
        )

    return export_from_flags(argv, lambda: check_output(f.output, f.overwrite), export)
