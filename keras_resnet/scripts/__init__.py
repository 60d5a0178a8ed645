"""The command-line programs, one module each: its docstring is its --help text, its absl flags
are defined when it is imported, and its `main()` runs it. pyproject.toml's [project.scripts]
names these `main`s, and the repository's train/*.py and export/*.py call them, so a wheel
carries every command and a command and its script cannot drift apart. Import one program per
process: two programs may define the same flag."""

import sys

from absl import app, flags


def run_program(program, main, flags_parser=app.parse_flags_with_usage):
    """`app.run(main, flags_parser=flags_parser)` for the module named `program`.

    absl's --help prints the `__main__` module's docstring and the key flags of the module named
    sys.argv[0]; under a console script or a repository script those are a wrapper's, which
    defines neither, so they are given the program's."""
    sys.modules["__main__"].__doc__ = sys.modules[program].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(program):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, flags_parser=flags_parser)
