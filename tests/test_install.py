"""Installing: every command a message or a document gives installs this project, and the README's
set-up is what CI runs."""

import re
import shlex

import pytest

from dltrain.errors import install_hint

tomllib = pytest.importorskip("tomllib")  # Python 3.11 on; the suite's other tests still run on 3.10

# The name on the public package index belongs to an unrelated project: `pip install` of it with
# an extra (in any quoting, or with rich's markup escape) must appear nowhere a user reads.
_BY_NAME = re.compile(r"dltrain\\*\[")


def _user_facing_files(root):
    return [
        *sorted((root / "src" / "dltrain").rglob("*.py")),
        root / "README.md",
        *sorted((root / "docs").rglob("*.md")),
        *sorted((root / "bench").rglob("*.py")),
        *sorted((root / ".ci").iterdir()),
    ]


def test_no_message_or_document_installs_an_extra_by_the_package_name(root):
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in _user_facing_files(root)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _BY_NAME.search(line)
    ]
    assert offenders == []


def test_the_install_hint_installs_from_the_project_folder(root):
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"plot", "onnx", "tune"} <= set(extras)
    for extra, declared in extras.items():
        hint = install_hint(extra)
        assert hint.startswith(f"pip install '.[{extra}]' in dltrain's project folder")
        alternative = re.search(r"\(or: pip install (.*)\)$", hint)  # the packages themselves
        assert alternative and [_name(text) for text in shlex.split(alternative.group(1))] == list(map(_name, declared))


def _name(requirement: str) -> str:
    """A requirement's distribution name, with its extras: psycopg[binary] of 'psycopg[binary]>=3.1'."""
    return re.match(r"[A-Za-z0-9._-]+(\[[^\]]*\])?", requirement.strip()).group(0)


def _setup_lines(root) -> list[str]:
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block, "the Set-up section has no command block"
    return block.group(1).splitlines()


def test_the_readme_set_up_starts_in_a_virtual_environment_and_names_the_python(root):
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    lines = _setup_lines(root)
    # Two commands, one a line: the first makes the environment, installs and trains; the second tests.
    assert lines == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install . && dltrain fit configs/iris.yaml",
        "pip install '.[test]' && pytest",
    ]
    requires = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.10" and "Python 3.10 or newer" in section


def test_ci_runs_exactly_the_readme_test_command(root):
    test_line = _setup_lines(root)[-1]
    ci_lines = (root / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci_lines[-1] == test_line
