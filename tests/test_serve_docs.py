"""The serving examples in README.md and docs/serve.md run against a real server and print what they show.

A ``$ curl ...`` line in a console block runs in bash, followed by the output it shows (``...``
and numbers' last digits as in test_docs_examples); a python block that posts to the server
runs, and prints what the ``text`` block after it shows. ``localhost:8000`` becomes the test
server's address."""

import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from dltrain.commands import fit
from test_docs_examples import output_matches

pytest.importorskip("uvicorn")
from test_serve import Server  # noqa: E402

DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "serve.md"]
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _examples(document):
    """[(kind, code, shown lines)]: each curl command with its output; each python block with the text after it."""
    blocks = _BLOCK.findall(document.read_text(encoding="utf-8"))
    found = []
    for index, (kind, text) in enumerate(blocks):
        lines = text.rstrip("\n").split("\n")
        if kind == "console" and lines[0].startswith("$ curl "):
            for line in lines:
                if line.startswith("$ curl "):
                    found.append(("curl", line[2:], []))
                else:
                    found[-1][2].append(line)
        elif kind == "python" and "localhost:8000" in text:
            after = blocks[index + 1] if index + 1 < len(blocks) and blocks[index + 1][0] == "text" else ("", "")
            found.append(("python", text, after[1].rstrip("\n").split("\n") if after[1] else []))
    return found


def test_the_serving_examples_are_found():
    kinds = [kind for document in DOCUMENTS for kind, _, _ in _examples(document)]
    assert kinds.count("curl") >= 5 and kinds.count("python") == 1


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_docs")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns(".dltrain-cache"))
    fit.fit(folder / "configs" / "iris.yaml", out=folder / "runs" / "iris")
    running = Server(folder, ["runs/iris"])
    yield folder, running
    assert running.stop() == 0


@pytest.mark.parametrize("document", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_every_serving_example_prints_what_it_shows(document, served):
    folder, running = served
    for kind, code, shown in _examples(document):
        code = code.replace("localhost:8000", f"127.0.0.1:{running.port}")
        command = ["bash", "-c", code] if kind == "curl" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{document.name}: {code}\n{result.stderr}"
        actual = result.stdout.rstrip("\n").split("\n") if result.stdout else []
        assert output_matches(shown, actual), (
            f"{document.name}: `{code}` printed:\n{result.stdout}\nwhere the document shows:\n" + "\n".join(shown)
        )
