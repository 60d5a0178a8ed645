"""The console scripts pyproject.toml declares: each names the `main` of a program in
keras_resnet/scripts/, and a wheel built from the package alone, installed away from the
checkout, gives commands that answer --help exactly as the repository's train/ and export/
scripts do."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def declared_scripts():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def repository_script(module):
    """The repository's script running program `module` (keras_resnet.scripts.NAME): train/NAME.py
    or export/NAME.py."""
    name = module.rsplit(".", 1)[1]
    (script,) = [f"{d}/{name}.py" for d in ("train", "export") if os.path.isfile(os.path.join(REPO, d, f"{name}.py"))]
    return script


# Imports each program in a forked child of a process that imported what they share: a fresh
# flag registry per program (two programs may define the same flag) without paying for
# TensorFlow's import each time. Prints what absl registered: the key flags --help must list.
IMPORT_EACH_PROGRAM = """
import importlib, json, os, sys, traceback
from absl import flags
import keras_resnet.export.cli, keras_resnet.training.cli
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            program = importlib.import_module(module)
            key_flags = sorted(flag.name for flag in flags.FLAGS.get_key_flags_for_module(module))
            print(json.dumps([module, callable(program.main), program.__doc__, key_flags]), flush=True)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, module
"""


@pytest.fixture(scope="module")
def programs():
    """{module: (main is callable, docstring, key flag names)} of every declared command's program."""
    modules = {target.split(":")[0] for target in declared_scripts().values()}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_PROGRAM, *sorted(modules)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {module: tuple(rest) for module, *rest in map(json.loads, done.stdout.splitlines())}


def test_every_declared_command_names_the_main_of_a_program_with_its_repository_script(programs):
    for command, target in declared_scripts().items():
        module, function = target.split(":")
        assert module.startswith("keras_resnet.scripts.") and function == "main", target
        main_is_callable, doc, _ = programs[module]
        assert main_is_callable, target
        assert f"\n    python {repository_script(module)} --" in doc, command  # its usage shows the script


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The site dir of a wheel built from pyproject.toml, README.md and keras_resnet/ alone and
    installed with pip --target: its bin/ holds the console scripts pip generates."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(
        os.path.join(REPO, "keras_resnet"), source / "keras_resnet", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(source)]
    subprocess.run(build, check=True, timeout=300, cwd=root)
    (wheel,) = (root / "dist").glob("keras_resnet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops == {"keras_resnet", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    site = root / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    return site


def flag_names(text):
    return set(re.findall(r"^\s+--(?:\[no\])?(\w+)", text, flags=re.MULTILINE))


# Training's help (flags by topic, then the program's own: --demo) runs in every step; the
# other commands, most with absl's own usage, in the slow step.
FAST_COMMANDS = ("keras-resnet-train-cifar10",)


def command_cases():
    return [
        pytest.param(
            command,
            repository_script(target.split(":")[0]),
            marks=() if command in FAST_COMMANDS else pytest.mark.slow,
            id=command,
        )
        for command, target in declared_scripts().items()
    ]


@pytest.mark.parametrize("command, script", command_cases())
def test_an_installed_command_answers_help_as_its_repository_script(programs, installed, tmp_path, command, script):
    """The command runs from a directory outside the checkout with only the installed wheel on
    PYTHONPATH (its other dependencies from this interpreter's environment): the same usage
    text (the program's docstring), every flag the program makes key to it, and the same output
    and exit status as `python <script> --help` in the checkout, but for the program name absl
    prints above the program's own flags."""
    program = str(installed / "bin" / command)
    env = {**ENV, "PYTHONPATH": str(installed)}
    where = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('keras_resnet').origin)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert where.stdout.strip() == str(installed / "keras_resnet" / "__init__.py"), where.stdout
    commanded = subprocess.Popen(
        [program, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    scripted = subprocess.run(
        [sys.executable, script, "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**ENV, "PYTHONPATH": REPO},
        cwd=REPO,
    )
    command_out, command_err = commanded.communicate(timeout=300)
    assert commanded.returncode == scripted.returncode, command_err[-2000:]  # absl's --help exits 1
    _, doc, key_flags = programs[declared_scripts()[command].split(":")[0]]
    assert command_out.startswith(doc + "\nflags:\n"), command_out[:2000]
    assert set(key_flags) <= flag_names(command_out), set(key_flags) - flag_names(command_out)
    assert command_out.replace(f"\n{program}:\n", f"\n{script}:\n") == scripted.stdout
