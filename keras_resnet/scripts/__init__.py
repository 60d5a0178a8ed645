"""The command-line programs, one module each: its docstring is its --help text, its absl flags
are defined when it is imported, and its `main()` runs it. pyproject.toml's [project.scripts]
names these `main`s, and the repository's train/*.py and export/*.py call them, so a wheel
carries every command and a command and its script cannot drift apart. Import one program per
process: two programs may define the same flag.

Every program ends a failure the user can cause (a bad value, an unreadable file: ValueError,
OSError) with one line, `error: ...`, and status 1; any other exception is a bug and shows
its traceback. --verbose, or TRACEBACK_ENV=1, shows the traceback of user errors too."""

import contextlib
import os
import sys

from absl import app, flags

TRACEBACK_ENV = "KERAS_RESNET_TRACEBACK"
USER_ERRORS = (ValueError, OSError)

flags.DEFINE_bool(
    "verbose",
    False,
    f"Show the traceback of a failure (also {TRACEBACK_ENV}=1); without it, one line says what failed.",
)


def error_line(error):
    """`error: <message>` on one line: the message's lines joined."""
    return "error: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def traceback_asked(verbose=False):
    """Whether a user error should show its traceback: `verbose`, --verbose or TRACEBACK_ENV."""
    return verbose or flags.FLAGS["verbose"].value or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


@contextlib.contextmanager
def user_errors(verbose=False):
    """Exit with status 1 and `error_line` on a ValueError or OSError raised inside, unless
    `traceback_asked(verbose)`."""
    try:
        yield
    except USER_ERRORS as error:
        if traceback_asked(verbose):
            raise
        sys.exit(error_line(error))


def run_program(program, main, flags_parser=app.parse_flags_with_usage):
    """`app.run(main, flags_parser=flags_parser)` for the module named `program`, user errors
    ending in one line (`user_errors`).

    absl's --help prints the `__main__` module's docstring and the key flags of the module named
    sys.argv[0]; under a console script or a repository script those are a wrapper's, which
    defines neither, so they are given the program's."""
    sys.modules["__main__"].__doc__ = sys.modules[program].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(program) + [flags.FLAGS["verbose"]]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def checked_main(argv):
        with user_errors():
            return main(argv)

    app.run(checked_main, flags_parser=flags_parser)
