"""Inputs built to hurt: endless files, forged headers, inconsistent checkpoints, huge models.

Each case runs under a time and memory bound (conftest.bounded), so a hang or a blow-up
fails the test instead of the test run, and must end in exit 2 with one message."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import Overrun, bounded
from dltrain.artifacts import CHECKPOINT_FORMAT_VERSION, npz_bytes
from dltrain.cli import app

runner = CliRunner()


@pytest.fixture
def work(bad_inputs_base, tmp_path, monkeypatch):
    shutil.copytree(bad_inputs_base, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    return tmp_path / "w"


def invoke(args, seconds=30):
    with bounded(seconds=seconds):
        result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def expect_error(args, *parts, seconds=30):
    result = invoke(args, seconds)
    assert result.exit_code == 2, result.output
    for part in parts:
        assert part in result.output, result.output
    return result


# ---------------------------------------------------------------- the bounds themselves


def test_bounded_turns_a_hang_into_a_failure():
    with pytest.raises(Overrun):
        with bounded(seconds=0.2):
            while True:
                pass


def test_bounded_turns_a_memory_blow_up_into_a_failure():
    with pytest.raises(MemoryError):
        with bounded(memory=256 << 20):
            np.ones(1 << 30, dtype=np.uint8)


# ---------------------------------------------------------------- run folder files


def _rewrite_weights(run: Path, arrays: dict):
    payload = npz_bytes(arrays)
    (run / "model.npz").write_bytes(payload)
    manifest = json.loads((run / "model.json").read_text())
    manifest["model_sha256"] = hashlib.sha256(payload).hexdigest()
    (run / "model.json").write_text(json.dumps(manifest))


def _weights(run: Path) -> dict:
    with np.load(run / "model.npz") as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused_at_load(work, value):
    arrays = _weights(work / "run")
    arrays["dense_0.W"][0, 0] = value
    _rewrite_weights(work / "run", arrays)
    expect_error(["predict", "run", "base.csv"], "model.npz: parameter 'dense_0.W' holds NaN or infinite values")


def _forged_npz(shape) -> bytes:
    """An .npz whose one member's header claims ``shape`` but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("0.W.npy", np.lib.format.MAGIC_PREFIX + b"\x02\x00" + header.getvalue()[8:] + bytes(16))
    return buffer.getvalue()


def test_a_forged_npy_header_in_the_weights_is_refused(work):
    run = work / "run"
    payload = _forged_npz((10**6, 10**6))
    (run / "model.npz").write_bytes(payload)
    manifest = json.loads((run / "model.json").read_text())
    manifest["model_sha256"] = hashlib.sha256(payload).hexdigest()
    (run / "model.json").write_text(json.dumps(manifest))
    expect_error(
        ["predict", "run", "base.csv"], "model.npz: cannot be read as weights", "claims shape (1000000, 1000000)"
    )


def test_a_forged_npy_header_in_the_checkpoint_is_refused(work):
    (work / "run" / "checkpoint.npz").write_bytes(_forged_npz((10**6, 10**6)))
    expect_error(
        ["fit", "base.yaml", "--out", "run", "--resume", "--set", "train.epochs=4", "--quiet"],
        "checkpoint.npz: cannot be read as a checkpoint",
        "claims shape (1000000, 1000000)",
    )


def test_a_forged_npy_header_in_the_cache_is_ignored(tmp_path, monkeypatch):
    from dltrain.data import cache as datacache
    from dltrain.data.csv import CsvFile
    from dltrain.data.store import npy_header

    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    data = tmp_path / "d.csv"
    data.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(50)))
    table = CsvFile.open(data)
    request = {"numeric": ["a"], "wide": ["b"]}
    datacache.read_columns(table, request, tmp_path / "cache")
    [entry] = [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    matrix = entry / "matrix.npy"
    matrix.write_bytes(npy_header(np.dtype(np.float32), (10**6, 10**6)) + matrix.read_bytes()[128:])
    for mapped in (False, True):
        with bounded():
            columns = datacache.read_columns(table, request, tmp_path / "cache", mapped=mapped)
        assert columns.n_rows == 50


def _edit_checkpoint(run: Path, meta_edit=None, array_edit=None):
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays.pop("meta.json")))
    meta["config"]["data.train"] = str((run.parent / "base.csv").resolve())  # the copy's own data
    if meta_edit:
        meta_edit(meta)
    if array_edit:
        array_edit(arrays)
    arrays["meta.json"] = np.array(json.dumps(meta))
    (run / "checkpoint.npz").write_bytes(npz_bytes(arrays))


def _set(key, value):
    def edit(meta):
        meta[key] = value

    return edit


def _pop(name):
    def edit(arrays):
        arrays.pop(name)

    return edit


def _reshape(name, shape):
    def edit(arrays):
        arrays[name] = np.zeros(shape, dtype=np.float32)

    return edit


def _add(name, value):
    def edit(arrays):
        arrays[name] = value

    return edit


INCONSISTENT_CHECKPOINTS = {
    "epoch_as_text": (_set("epoch", "two"), None, "checkpoint.npz: epoch: must be a whole number (got 'two')"),
    "negative_steps": (_set("optimizer_steps", -1), None, "checkpoint.npz: optimizer_steps: must be >= 0 (got -1)"),
    "history_too_short": (_set("epoch", 1), None, "history: has shape (2, 7), but 1 epochs of 7 columns were"),
    "best_after_last": (lambda meta: meta["best"].update(epoch=9), None, "best.epoch: the best epoch 9 comes after"),
    "rng_state_garbage": (_set("shuffle_rng", {"bit_generator": "MT19937"}), None, "does not fit this model"),
    "param_missing": (None, _pop("param/dense_0.W"), "arrays missing ['param/dense_0.W']"),
    "param_wrong_shape": (None, _reshape("param/dense_0.W", (7, 4)), "parameter dense_0.W has shape (7, 4)"),
    "moment_wrong_shape": (None, _reshape("optimizer/m/dense_0.W", (3,)), "does not fit this model"),
    "best_wrong_shape": (None, _add("best/dense_0.W", np.zeros((2, 2), dtype=np.float32)), "best epoch's parameters"),
    "nan_param": (
        None,
        _add("param/dense_0.b", np.full(4, np.nan, dtype=np.float32)),
        "dense_0.b: holds NaN or infinite",
    ),
    "meta_not_mapping": (
        lambda meta: meta.clear() or meta.update(format_version=CHECKPOINT_FORMAT_VERSION),
        None,
        "checkpoint.npz: epoch: is missing",
    ),
}


@pytest.mark.parametrize("name", sorted(INCONSISTENT_CHECKPOINTS))
def test_an_inconsistent_checkpoint_is_refused_on_resume(work, name):
    meta_edit, array_edit, message = INCONSISTENT_CHECKPOINTS[name]
    _edit_checkpoint(work / "run", meta_edit, array_edit)
    expect_error(
        ["fit", "base.yaml", "--out", "run", "--resume", "--set", "train.epochs=4", "--quiet"],
        "checkpoint.npz",
        message,
    )


# ---------------------------------------------------------------- model size


@pytest.mark.parametrize("command", ["check", "fit"])
def test_a_model_beyond_memory_is_refused_naming_the_layer(work, command):
    args = [command, "base.yaml", "--set", "model.layers=[{units: 8}, {units: 1000000000000}]"]
    if command == "fit":
        args += ["--out", "big", "--quiet"]
    expect_error(
        args,
        "model.layers[1].units: dense layer 1 (8 inputs x 1000000000000 units) needs",
        "of memory available; use fewer units",
    )
    assert not (work / "big").exists()


# ---------------------------------------------------------------- files that are not regular files


ENDLESS_ROLES = {
    "train": lambda path: ["fit", "base.yaml", "--set", f"data.train={path}", "--quiet", "--out", "o"],
    "validation": lambda path: ["fit", "base.yaml", "--set", f"data.validation={path}", "--quiet", "--out", "o"],
    "test": lambda path: ["fit", "base.yaml", "--set", f"data.test={path}", "--quiet", "--out", "o"],
    "config": lambda path: ["check", path],
    "predict": lambda path: ["predict", "run", path],
    "eval": lambda path: ["eval", "run", path],
    "init": lambda path: ["init", path, "--target", "label", "--out", "new.yaml"],
}


@pytest.mark.parametrize("role", sorted(ENDLESS_ROLES))
@pytest.mark.parametrize("source", ["dev_zero", "fifo"])
def test_an_endless_input_is_refused(work, role, source):
    if source == "dev_zero":
        path = "/dev/zero"
    else:
        path = str(work / ("pipe.yaml" if role == "config" else "pipe.csv"))
        os.mkfifo(path)
    expect_error(ENDLESS_ROLES[role](path), path, "not a regular file", seconds=20)


@pytest.mark.parametrize("name", ["model.json", "model.npz", "history.csv"])
def test_a_run_file_linked_to_an_endless_file_is_refused(work, name):
    run = work / "run"
    (run / name).unlink()
    (run / name).symlink_to("/dev/zero")
    args = ["plot", "run", "--out", "c.png"] if name == "history.csv" else ["predict", "run", "base.csv"]
    expect_error(args, f"{name}: is a character device, not a regular file", seconds=20)


def test_a_checkpoint_linked_to_a_fifo_is_refused(work):
    checkpoint = work / "run" / "checkpoint.npz"
    checkpoint.unlink()
    os.mkfifo(checkpoint)
    # Refused before it is opened ("no checkpoint"), or when opened ("a FIFO"): never waited on.
    result = expect_error(
        ["fit", "base.yaml", "--out", "run", "--resume", "--set", "train.epochs=4", "--quiet"],
        "run/checkpoint.npz: ",
        seconds=20,
    )
    assert "no checkpoint to resume from" in result.output or "is a FIFO (named pipe)" in result.output


def test_an_oversized_config_is_refused_before_it_is_read(work):
    with open("big.yaml", "wb") as handle:
        handle.truncate(64 << 20)  # sparse: 64 MiB of NUL bytes, no disk used
    expect_error(["check", "big.yaml"], "big.yaml: is 67.1 MB, more than a config file may be (4.2 MB)")


def test_the_cli_survives_an_endless_config_in_a_fresh_process(tmp_path):
    """The same bound from the outside: a real process, a real rlimit, a real timeout."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY)); "
        "from dltrain.cli import main; sys.argv = ['dltrain', 'check', '/dev/zero']; main()"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert process.returncode == 2, process.stderr
    assert "/dev/zero: is a character device, not a regular file" in process.stderr
    assert "Traceback" not in process.stderr


def test_a_batch_larger_than_the_data_is_not_mistaken_for_a_huge_model(work):
    result = invoke(["check", "base.yaml", "--set", "train.batch_size=1000000000000"])
    assert result.exit_code == 0, result.output


def test_an_unclosed_quote_in_a_large_file_is_answered_in_one_pass(tmp_path, monkeypatch):
    """Counting the quotes again after every line read made this quadratic: a 50 MB file ran for minutes."""
    lines = ["a,b,label", "1,2,x", '"oops,2,x'] + [f"{index},{index},y" for index in range(600_000)]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")  # beyond one block of the reader
    (tmp_path / "config.yaml").write_text("name: q\ndata: {train: data.csv, target: label, cache: false}\n")
    monkeypatch.chdir(tmp_path)
    expect_error(["check", "config.yaml"], "data.csv:3: cannot parse the row", seconds=20)


def test_blank_lines_before_the_header_are_skipped_in_one_pass(tmp_path):
    """Skipping them stays linear (slicing the block once per skipped line took 20 s for these 30,000)."""
    from dltrain.data.csv import CsvFile

    path = tmp_path / "data.csv"
    path.write_text("\n" * 30_000 + "a,b\n" + "".join(f"{index},{index % 7}\n" for index in range(400_000)))
    with bounded(seconds=10):
        columns = CsvFile.open(path).read(numeric=["a", "b"])
    assert columns.n_rows == 400_000 and columns.line(0) == 30_002
