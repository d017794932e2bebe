"""Every mistake in tests/bad_inputs/ exits 2 with a message naming it, and never a traceback."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import bounded
from dltrain.cli import app

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(path.parent for path in CORPUS.glob("*/case.yaml"))
runner = CliRunner()


def _edit(folder: Path, step: dict):
    if "truncate" in step:
        path = folder / step["truncate"]
        path.write_bytes(path.read_bytes()[: step["keep"]])
    elif "flip_byte" in step:
        path = folder / step["flip_byte"]
        payload = bytearray(path.read_bytes())
        payload[step["at"]] ^= 0xFF
        path.write_bytes(bytes(payload))
    elif "delete" in step:
        (folder / step["delete"]).unlink()
    elif "write" in step:
        (folder / step["write"]).write_text(step["text"])
    elif "json" in step:
        path = folder / step["json"]
        document = json.loads(path.read_text())
        node = document
        for key in step["key"][:-1]:
            node = node[key]
        node[step["key"][-1]] = step["value"]
        path.write_text(json.dumps(document))
    elif "fifo" in step:
        path = folder / step["fifo"]
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    elif "symlink" in step:
        path = folder / step["symlink"]
        path.unlink(missing_ok=True)
        path.symlink_to(step["to"])
    elif "mkdir" in step:
        path = folder / step["mkdir"]
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
    elif "copy" in step:
        shutil.copyfile(folder / step["copy"], folder / step["to"])
    elif "chmod" in step:
        (folder / step["chmod"]).chmod(int(str(step["mode"]), 8))
    elif "sha" in step:
        run_dir = folder / step["sha"]
        manifest = json.loads((run_dir / "model.json").read_text())
        manifest["model_sha256"] = hashlib.sha256((run_dir / "model.npz").read_bytes()).hexdigest()
        (run_dir / "model.json").write_text(json.dumps(manifest))
    else:
        raise ValueError(f"unknown edit step {step}")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_exits_2_with_its_message(case, tmp_path, bad_inputs_base, monkeypatch):
    spec = yaml.safe_load((case / "case.yaml").read_text())
    work = tmp_path / case.name
    shutil.copytree(case, work)
    if spec.get("run"):
        shutil.copytree(bad_inputs_base / "run", work / "run")
    for step in spec.get("edit", []):
        _edit(work, step)
    monkeypatch.chdir(work)
    if spec.get("unprivileged") and os.geteuid() == 0:
        pytest.skip("permissions do not bind root")
    with bounded(seconds=spec.get("seconds", 30)):
        result = runner.invoke(app, spec["args"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == spec.get("exit", 2), result.output
    assert spec["expect"] in result.output, result.output
    assert "Traceback" not in result.output
