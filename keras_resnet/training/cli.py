"""absl flags from the TrainConfig dataclass: one flag per field, its help text and allowed
values from the field's metadata, its default from the recipe the entry point trains."""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags, logging

from keras_resnet.training.config import TrainConfig


def _kind(field):
    """(base type name, optional?) of a TrainConfig field's annotation."""
    annotation = str(field.type).replace(" ", "")
    optional = annotation.endswith("|None")
    return annotation.removesuffix("|None"), optional


def define_flags(defaults: TrainConfig, flag_values=flags.FLAGS):
    """Define one absl flag per TrainConfig field, defaulting to `defaults`' value."""
    for field in dataclasses.fields(TrainConfig):
        name, default, text = field.name, getattr(defaults, field.name), field.metadata["help"]
        kind, _ = _kind(field)
        choices = [c for c in (field.metadata.get("choices") or ()) if c is not None]
        if choices:
            flags.DEFINE_enum(name, default, choices, text, flag_values=flag_values)
        elif kind == "bool":
            flags.DEFINE_bool(name, default, text, flag_values=flag_values)
        elif kind == "int":
            flags.DEFINE_integer(name, default, text, flag_values=flag_values)
        elif kind == "float":
            flags.DEFINE_float(name, default, text, flag_values=flag_values)
        elif kind.startswith("tuple"):
            flags.DEFINE_list(name, [str(v) for v in default], text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, text, flag_values=flag_values)


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
    return TrainConfig(**values)


def absl_main(body):
    """The `main(argv)` of an entry point running `body()`: stray arguments are a usage error,
    logs stay quiet unless --verbosity is given, and a bad value or a non-finite loss ends
    the program with its message instead of a traceback."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        from keras_resnet.training.loop import NonFiniteLossError

        try:
            body()
        except (ValueError, NonFiniteLossError) as error:
            sys.exit(f"error: {error}")

    return main
