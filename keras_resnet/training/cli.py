"""absl flags from the TrainConfig dataclass: one flag per field, its help text and allowed
values from the field's metadata, its default from the recipe the entry point trains.

`--help` lists them by topic (TOPICS), as Model Garden users expect; each topic is the absl
"module" its flags are registered under, so `--helpfull` groups them the same way.
`--flagfile=FILE` (absl's) is the config-file route: one `--flag=value` per line.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags, logging

from keras_resnet.training.config import TrainConfig

# Every TrainConfig field, by the topic --help lists it under.
TOPICS = {
    "data": (
        "dataset", "data_dir", "preprocess_mode", "image_size", "val_split", "shuffle_buffer", "cache",
        "synthetic_data",
    ),
    "model": ("model", "shortcut", "stride_in", "classes", "dtype", "jit_compile"),
    "schedule": (
        "batch_size", "train_steps", "train_epochs", "learning_rate", "momentum", "weight_decay",
        "decay_all_weights", "label_smoothing", "lr_schedule", "lr_boundaries", "lr_boundary_epochs", "lr_decay",
        "lr_scaling", "base_batch_size", "warmup_epochs", "error_warmup", "error_warmup_lr",
        "error_warmup_threshold", "plateau_patience", "plateau_min_delta",
    ),
    "fine-tuning": ("init_weights", "freeze", "freeze_bn"),
    "distribution": ("strategy", "cluster_resolver", "tpu", "sync_bn", "steps_per_loop"),
    "run": (
        "model_dir", "seed", "deterministic", "checkpoint_interval", "keep_checkpoints", "checkpoint_iterator",
        "eval_interval", "log_interval",
    ),
}  # fmt: skip
HELP_ARGS = ("--help", "-help", "--helpshort", "-helpshort", "-?", "-h")
FLAGFILE_HELP = (
    "config files: --flagfile=FILE reads flags from FILE, one --flag=value per line (# starts a comment); "
    "flags after it on the command line override it, e.g. train/imagenet.py --flagfile=r50.flags "
    "--model_dir=runs/r50b. --helpfull also lists absl's own flags."
)


def topic_of(name):
    """The --help topic of a TrainConfig field."""
    for topic, names in TOPICS.items():
        if name in names:
            return topic
    raise ValueError(f"TrainConfig field {name!r} has no --help topic: add it to one of {tuple(TOPICS)}")


def _kind(field):
    """(base type name, optional?) of a TrainConfig field's annotation."""
    annotation = str(field.type).replace(" ", "")
    optional = annotation.endswith("|None")
    return annotation.removesuffix("|None"), optional


def define_flags(defaults: TrainConfig, flag_values=flags.FLAGS):
    """Define one absl flag per TrainConfig field, defaulting to `defaults`' value, registered
    under its topic."""
    for field in dataclasses.fields(TrainConfig):
        name, default, text = field.name, getattr(defaults, field.name), field.metadata["help"]
        kind, _ = _kind(field)
        choices = [c for c in (field.metadata.get("choices") or ()) if c is not None]
        where = dict(flag_values=flag_values, module_name=topic_of(name))
        if choices:
            flags.DEFINE_enum(name, default, choices, text, **where)
        elif kind == "bool":
            flags.DEFINE_bool(name, default, text, **where)
        elif kind == "int":
            flags.DEFINE_integer(name, default, text, **where)
        elif kind == "float":
            flags.DEFINE_float(name, default, text, **where)
        elif kind.startswith("tuple"):
            flags.DEFINE_list(name, [str(v) for v in default], text, **where)
        else:
            flags.DEFINE_string(name, default, text, **where)


def grouped_help(flag_values=flags.FLAGS, program=None):
    """The flags of an entry point by topic, then the program's own flags, then the
    --flagfile route."""
    program = program or sys.argv[0]
    parts = [flag_values.module_help(topic) for topic in TOPICS]
    parts.append(flag_values.module_help(program))
    parts.append("\n" + flags.text_wrap(FLAGFILE_HELP, indent="  ", firstline_indent=""))
    return "\n".join(part for part in parts if part)


def parse_flags(argv):
    """absl's flag parsing for `app.run(..., flags_parser=parse_flags)`, with --help (-h, -?)
    printing the module docstring and grouped_help() instead of one long list."""
    if any(arg in HELP_ARGS for arg in argv[1:]):
        doc = sys.modules["__main__"].__doc__ or f"USAGE: {argv[0]} [flags]\n"
        sys.stdout.write(doc + "\nflags:\n" + grouped_help(program=argv[0]) + "\n")
        sys.exit(0)
    return app.parse_flags_with_usage(argv)


def config_from_flags(flag_values=flags.FLAGS):
    """The TrainConfig the parsed flags describe (lists become tuples of numbers)."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = flag_values[field.name].value
        kind, _ = _kind(field)
        if kind.startswith("tuple"):
            convert = int if "int" in kind else float
            try:
                value = tuple(convert(v) for v in value)
            except ValueError:
                raise ValueError(
                    f"--{field.name}={','.join(value)}: expected comma-separated {convert.__name__}s"
                ) from None
        values[field.name] = value
    if values.get("init_weights") and not flag_values["model"].present:
        values["model"] = recorded_model(values["init_weights"], values["model"])
    return TrainConfig(**values)


def recorded_model(init_weights, default):
    """The registered network --init_weights record (a run dir, .keras or .weights.h5 file):
    --model defaults to it; `default` for weights that record none ("imagenet": the recipe's).
    Its other architecture arguments come with the weights (`weights.build_kwargs`)."""
    from keras_resnet import weights

    if init_weights == "imagenet":
        return default
    record = weights.recorded(init_weights)
    return default if record is None else record.architecture.name


def absl_main(body):
    """The `main(argv)` of an entry point running `body()`: stray arguments are a usage error,
    logs stay quiet unless --verbosity is given, and a bad value, a non-finite loss or an
    unusable run dir ends the program with its message instead of a traceback (status 1).
    A run that stopped early with a good checkpoint (`body()` returned a preempted
    TrainResult, or a worker was lost) ends with PREEMPTED_STATUS: rerun to resume."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        from keras_resnet.run_dir import RunDirError
        from keras_resnet.scripts import traceback_asked
        from keras_resnet.training.loop import NonFiniteLossError
        from keras_resnet.training.preemption import PREEMPTED_STATUS
        from keras_resnet.training.strategy import WorkerLostError

        try:
            result = body()
        except (ValueError, NonFiniteLossError, RunDirError) as error:
            if traceback_asked():
                raise
            sys.exit(f"error: {error}")
        except KeyboardInterrupt:  # Ctrl-C before the first loop or after the last save: nothing to save
            sys.stderr.write("interrupted (Ctrl-C) outside the training loop; the checkpoints are as they were\n")
            sys.exit(130)
        except WorkerLostError as error:
            # TensorFlow's shutdown would wait for the lost worker at its exit barrier: leave now.
            sys.stderr.write(f"error: {error}\n")
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(PREEMPTED_STATUS)
        if getattr(result, "preempted", False):
            sys.exit(PREEMPTED_STATUS)

    return main
