"""Every `$ dltrain ...` example in README.md and docs/*.md runs and prints what it shows.

An example is a fenced block whose lines start with ``$ dltrain``, each followed by the
output it shows. A line ``...`` stands for any number of lines; numbers may differ in their
last digits, durations (``0.00s``) not at all matter, and rich's table borders may be wider
or narrower. The commands of one document run in order in one folder holding ``configs/``,
``data/`` and ``docs/examples/``, so ``fit`` comes before the ``eval`` that reads its run.
"""

import contextlib
import io
import re
import shlex
import shutil

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from dltrain.cli import app

MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?s\b")
_BOX = re.compile(r"([━─═┃│┏┓┗┛┡┩└┘┳┻╇╈┼╋┠┨├┤])\1+")


def examples(document):
    """[(command, expected lines)] of a document, in order."""
    found = []
    for block in _FENCE.findall(document.read_text(encoding="utf-8")):
        lines = block.rstrip("\n").split("\n")
        if not lines[0].startswith("$ dltrain "):
            continue
        for line in lines:
            if line.startswith("$ dltrain "):
                found.append((line[2:], []))
            else:
                found[-1][1].append(line)
    return found


DOCUMENTS = [path for path in MARKDOWN if examples(path)]


def test_the_examples_are_found():
    names = {path.name for path in DOCUMENTS}
    assert {"README.md", "data.md"} <= names
    commands = [command for command, _ in examples(ROOT / "README.md")]
    assert commands[:2] == ["dltrain check bad.yaml", "dltrain check configs/iris.yaml"]
    assert "dltrain eval runs/iris data/iris.csv --json" in commands


def _normal(line: str) -> str:
    """Spacing and table-border widths vary with the numbers shown; durations are left out."""
    line = _DURATION.sub("<seconds>", line)
    return " ".join(_BOX.sub(r"\1", line).split())


def _numbers_close(shown: str, actual: str) -> bool:
    expected, got = float(shown), float(actual)
    decimals = len(shown.split(".")[1].split("e")[0].split("E")[0]) if "." in shown else 0
    exponent = int(re.split("[eE]", shown)[1]) if re.search("[eE]", shown) else 0
    last_digit = 10.0 ** (exponent - decimals)
    return abs(expected - got) <= max(1e-3 * abs(expected), 10 * last_digit)


def line_matches(shown: str, actual: str) -> bool:
    """Equal text, with numbers equal up to their last digits."""
    shown, actual = _normal(shown), _normal(actual)
    if _NUMBER.sub("#", shown) != _NUMBER.sub("#", actual):
        return False
    return all(_numbers_close(a, b) for a, b in zip(_NUMBER.findall(shown), _NUMBER.findall(actual)))


def output_matches(shown: list, actual: list) -> bool:
    """``shown`` against ``actual`` line by line, a ``...`` line matching any run of lines."""
    if not shown:
        return not actual
    if shown[0] == "...":
        return any(output_matches(shown[1:], actual[start:]) for start in range(len(actual) + 1))
    return bool(actual) and line_matches(shown[0], actual[0]) and output_matches(shown[1:], actual[1:])


def test_the_matcher_allows_last_digits_and_nothing_more():
    assert line_matches('{"loss": 0.09221882142056226}', '{"loss": 0.09221882142056789}')
    assert line_matches("epoch 1/30  loss 1.6325  0.00s", "epoch 1/30 loss 1.6326 0.13s")
    assert not line_matches("loss 1.6325", "loss 1.7325")
    assert not line_matches('{"loss": 0.1}', '{"loss": 0.1, "accuracy": 0.9}')
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert not output_matches(["a", "d"], ["a", "b", "d"])


def _example_folder(tmp_path, monkeypatch):
    """A folder holding configs/, data/ and docs/examples/, made the working directory."""
    for folder in ("configs", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns(".dltrain-cache"))
    shutil.copytree(ROOT / "docs" / "examples", tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)


_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def python_examples(document):
    """[(code, shown lines)]: each python block that uses dltrain, with the text block after it."""
    blocks = _BLOCK.findall(document.read_text(encoding="utf-8"))
    return [
        (code, following.rstrip("\n").split("\n"))
        for (kind, code), (next_kind, following) in zip(blocks, blocks[1:])
        if kind == "python" and next_kind == "text" and "import dltrain" in code
    ]


def test_the_python_api_example_is_found():
    (code, shown), *_ = python_examples(ROOT / "README.md")
    assert "dltrain.fit(" in code and "dltrain.load(" in code and shown[0] == "epochs done 20"


@pytest.mark.parametrize("document", [path for path in MARKDOWN if python_examples(path)], ids=lambda path: path.name)
def test_every_python_example_prints_what_it_shows(document, tmp_path, monkeypatch):
    _example_folder(tmp_path, monkeypatch)
    for code, shown in python_examples(document):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{document.name} example", "exec"), {})
        actual = printed.getvalue().rstrip("\n").split("\n")
        assert output_matches(shown, actual), f"{document.name} printed:\n{printed.getvalue()}\nwhere it shows:\n" + (
            "\n".join(shown)
        )


@pytest.mark.parametrize("document", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_every_example_in_the_docs_prints_what_it_shows(document, tmp_path, monkeypatch):
    cases = examples(document)
    _example_folder(tmp_path, monkeypatch)
    runner = CliRunner()
    for command, shown in cases:
        result = runner.invoke(app, shlex.split(command)[1:], prog_name="dltrain")
        actual = result.output.rstrip("\n").split("\n") if result.output else []
        assert output_matches(shown, actual), (
            f"{document.name}: `{command}` printed:\n{result.output}\nwhere the document shows:\n" + "\n".join(shown)
        )
