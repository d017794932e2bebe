"""The command line's own face: it starts at once (help and --version load no heavy library),
every command's help shows an example, and every command-line mistake is reported one way:
one ``error:`` line naming the option, a ``hint:`` line, exit code 2, before any work."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from dltrain.cli import app
from dltrain.commands import export
from dltrain.errors import ConfigError, DltrainError

runner = CliRunner()

# Libraries (and dltrain modules) a command needs only when it runs; rich may load for the help.
HEAVY = [
    "numpy",
    "numba",
    "pydantic",
    "yaml",
    "optuna",
    "starlette",
    "uvicorn",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "dltrain.config",
    "dltrain.report",
    "dltrain.api",
    "dltrain.build",
    "dltrain.fit_session",
]

_PROBE = """
import json, sys
from dltrain.cli import app

def loaded():
    return sorted(name for name in json.loads(sys.argv[1]) if name in sys.modules)

seen = {"import dltrain.cli": loaded() + (["rich"] if "rich" in sys.modules else [])}
for args in json.loads(sys.argv[2]):
    try:
        app(args, prog_name="dltrain")
    except SystemExit:
        pass
    seen["dltrain " + " ".join(args)] = loaded()
print(json.dumps(seen))
"""


def test_help_and_version_load_no_heavy_library():
    names = ["--help", *(f"{command.name} --help" for command in typer.main.get_command(app).commands.values())]
    invocations = [name.split() for name in names] + [["--version"]]
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), json.dumps(invocations)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert len(seen) == len(invocations) + 1 and "dltrain tune --help" in seen
    assert {invocation: modules for invocation, modules in seen.items() if modules} == {}


def test_every_command_help_shows_an_example():
    commands = typer.main.get_command(app).commands
    assert len(commands) >= 11
    for name, command in commands.items():
        assert f"\nExample: dltrain {name} " in command.help, f"dltrain {name} --help has no example"
        shown = runner.invoke(app, [name, "--help"])
        assert shown.exit_code == 0 and f"Example: dltrain {name} " in shown.output, shown.output


def _one_error(result, *words):
    """Exit 2, and an error line then a hint line, nothing else (no typer box, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: see "), result.output
    for word in words:
        assert word in lines[0], (word, result.output)


MISTAKES = [
    (["fit", "c.yaml", "--epochs", "3"], ["No such option: --epochs"]),
    (["fitt"], ["No such command 'fitt'", "'fit'"]),
    (["init", "data.csv"], ["Missing option '--target'"]),
    (["explain", "run", "data.csv", "--repeats", "0"], ["'--repeats'", "greater than or equal to 1"]),
    (["tune", "c.yaml", "--trials", "0"], ["'--trials'", "greater than or equal to 1"]),
    (["tune", "c.yaml", "--workers", "0"], ["'--workers'", "greater than or equal to 1"]),
    (["tune", "c.yaml", "--workers", "two"], ["'--workers'", "integer"]),
    (["tune", "c.yaml", "--timeout", "0"], ["'--timeout'", "0: give a finite number above 0"]),
    (["tune", "c.yaml", "--timeout", "nan"], ["'--timeout'", "nan: give a finite number above 0"]),
    (["tune", "c.yaml", "--timeout", "inf"], ["'--timeout'", "inf: give a finite number above 0"]),
    (["serve", "run", "--port", "70000"], ["'--port'", "65535"]),
    (["serve", "run", "--workers", "0"], ["'--workers'", "greater than or equal to 1"]),
    (["serve", "run", "--max-rows", "0"], ["'--max-rows'", "greater than or equal to 1"]),
    (["serve", "run", "--max-body", "-1"], ["'--max-body'", "-1: give a finite number above 0"]),
    (["export", "run", "--format", "tflite"], ["'--format'", "'tflite'", "'onnx'"]),
    (["export", "run", "--inputs", "matrix"], ["'--inputs'", "'matrix'", "'columns'", "'features'"]),
    (["predict", "run", "data.csv", "--delimiter", "x"], ["'--delimiter'", "'x': use one of , ; tab |"]),
    (["check", "c.yaml", "--set", "train.epochs", "5"], ["--set train.epochs 5: write --set train.epochs=5"]),
    (["fit", "c.yaml", "extra"], ["unexpected argument 'extra'"]),
]


@pytest.mark.parametrize("args, words", MISTAKES, ids=[" ".join(args) for args, _ in MISTAKES])
def test_command_line_mistakes_are_one_error_before_any_work(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)  # nothing here: a command that ran would fail on its missing files instead
    result = runner.invoke(app, args)
    _one_error(result, *words)
    assert list(tmp_path.iterdir()) == []


def test_the_hint_names_the_help_to_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["explain", "run", "d.csv", "--repeats", "0"], prog_name="dltrain")
    assert result.output.splitlines()[1] == "hint: see dltrain explain --help"
    assert runner.invoke(app, ["--bogus"], prog_name="dltrain").output.splitlines()[1] == "hint: see dltrain --help"


def test_export_choices_are_the_exporters():
    from dltrain.cli import ExportFormat, ExportInputs

    assert tuple(item.value for item in ExportFormat) == export.FORMATS
    assert tuple(item.value for item in ExportInputs) == export.INPUT_FORMS


def test_a_hint_is_kept_apart_from_the_message():
    error = ConfigError("x.yaml:3: bad")
    assert error.hint is None and str(error) == "x.yaml:3: bad"
    error.add_hint("fix it")
    error.add_hint("then run again")
    assert error.message == "x.yaml:3: bad" and error.hint == "fix it; then run again"
    assert str(error) == "x.yaml:3: bad; fix it; then run again"
    assert DltrainError("m", hint="h").hint == "h"
