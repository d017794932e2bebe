"""`dltrain predict` and `dltrain eval` read their CSV a chunk of rows at a time. predict writes
each block as it goes, to stdout or to an --out file that appears whole: the bytes are those of
the whole file predicted at once (``predictions_csv(*predict_rows(...))``); eval's metrics are
those of the whole file scored at once. On awkward inputs, with chunks forced small."""

import datetime
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain import api, csv_text, evaluation, metrics, report
from dltrain.cli import app
from dltrain.commands import predict
from dltrain.data import csv, fastcsv, read_labelled
from dltrain.engine.model import Sequential

runner = CliRunner()
SMALL_BATCH = 8  # the engine's prediction batch, and a block of output, forced small in these tests


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A classifier on dates, a categorical column with a comma, a boolean, a numeric column with a
    marker (?) and empty cells; a regression of two targets; and the CSVs to predict."""
    folder = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    lines = ["id,when,size,colour,member,weight,label,price,volume"]
    for index in range(90):
        when = datetime.date(2020, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 900)))
        size = "?" if index % 17 == 0 else f"{rng.normal():.4f}"
        colour = ["red", "green", "blue", '"light, blue"'][index % 4]
        weight = "" if index % 13 == 0 else f"{rng.normal() * 100:.2f}"
        label = ["big", "small", 'say "mid"'][index % 3]
        label = f'"{label.replace(chr(34), chr(34) * 2)}"' if '"' in label else label
        lines.append(
            f"id{index},{when},{size},{colour},{'yes' if index % 2 else 'no'},{weight},{label},"
            f"{rng.normal() * 1e6:.1f},{rng.normal() * 1e-3:.6f}"
        )
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    (folder / "crlf.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    # Blank lines inside, empty records and blank lines at the end (dropped, as a whole read drops them)
    gaps = lines[:40] + ["", "  "] + lines[40:] + [",,,,,,,,", ",,,,,,,,", ""]
    (folder / "gaps.csv").write_text("\n".join(gaps) + "\n")
    # Rows whose target is empty, skipped by eval (missing: drop); one a chunk of their own
    holes = [line if index % 7 or index == 0 else _emptied(line, (6, 7)) for index, line in enumerate(lines)]
    holes[20:40] = [_emptied(line, (6, 7)) for line in lines[20:40]]
    (folder / "holes.csv").write_text("\n".join(holes) + "\n")
    common = (
        "data:\n  train: train.csv\n  exclude: [id]\n  na_values: ['?']\n  columns:\n"
        "    size: {missing: mean}\n    weight: {missing: median}\n    colour: {unknown: ignore}\n"
        "model: {layers: [{units: 5}]}\ntrain: {epochs: 2}\n"
    )
    runs = (("classes", "label", "price, volume"), ("values", "[price, volume]", "label"))
    for name, target, excluded in runs + (("binary", "member", "label, price, volume"),):
        config = common.replace("exclude: [id]", f"exclude: [id, {excluded}]").replace(
            "data:\n", f"data:\n  target: {target}\n"
        )
        for dropped in target.strip("[]").split(", "):  # eval skips the rows where one is empty
            config = config.replace("model:", f"    {dropped}: {{missing: drop}}\nmodel:")
        (folder / f"{name}.yaml").write_text(f"name: {name}\n" + config)
    for name in ("classes", "values", "binary"):
        api.fit(folder / f"{name}.yaml", out=folder / name)
    return folder


def _emptied(line: str, fields) -> str:
    """A CSV line (no quoted commas before the fields) with those fields made empty."""
    cells = line.split(",")
    if len(cells) != 9:  # "light, blue" holds a comma: count from the end instead
        fields = [field - 9 for field in fields]
    for field in fields:
        cells[field] = ""
    return ",".join(cells)


@pytest.fixture(params=["plain reader", "fast reader"])
def small_blocks(monkeypatch, request):
    """Blocks of SMALL_BATCH rows, the fast path's kernels whatever the size, and the engine's
    prediction batch the same size (a row's outputs depend on the batch it is computed in); the
    CSV read in small pieces by the plain reader, or by the fast one (fastcsv.py)."""
    if request.param == "fast reader":
        monkeypatch.setattr(fastcsv, "MIN_BYTES", 0)
        monkeypatch.setattr(fastcsv, "compile_when_cold", True)  # compiled here if need be, not left to a helper
        monkeypatch.setattr(fastcsv, "CHUNK_BYTES", 700)
    logits = Sequential.logits
    monkeypatch.setattr(Sequential, "logits", lambda self, x, batch_size=4096: logits(self, x, SMALL_BATCH))
    monkeypatch.setattr(predict, "BLOCK_ROWS", SMALL_BATCH * 2)
    monkeypatch.setattr(csv_text, "FAST_MIN_CELLS", 0)
    monkeypatch.setattr(csv, "BLOCK_CHARS", 300)  # the reader's own blocks: a few rows each


CASES = [
    ("classes", "train.csv", []),
    ("classes", "crlf.csv", ["id", "label"]),
    ("values", "train.csv", ["id", "when", "colour"]),
    ("values", "crlf.csv", ["price"]),
    ("classes", "gaps.csv", ["id"]),
]


@pytest.mark.parametrize("run_name, data, keep", CASES)
def test_streamed_output_is_the_whole_file_at_once(runs, small_blocks, tmp_path, run_name, data, keep):
    expected = predict.predictions_csv(*predict.predict_rows(runs / run_name, runs / data, keep)).encode()
    options = [arg for name in keep for arg in ("--keep", name)]
    shown = runner.invoke(app, ["predict", str(runs / run_name), str(runs / data), *options])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout_bytes == expected
    out = tmp_path / "deep" / "predictions.csv"
    written = runner.invoke(app, ["predict", str(runs / run_name), str(runs / data), *options, "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_bytes() == expected
    assert "wrote 90 predictions" in written.stderr


def test_a_file_that_goes_wrong_late_gives_the_same_message_and_no_file(runs, small_blocks, tmp_path):
    """A cell the model cannot use, after blocks have been written: the whole-file read's message
    (exit 2); stdout has the rows before it, and --out is never created."""
    lines = (runs / "train.csv").read_text().splitlines()
    lines[70] = lines[70].replace(lines[70].split(",")[1], "not a date", 1)
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception) as whole:
        predict.predict_rows(runs / "classes", tmp_path / "late.csv")
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(runs / "classes"), str(tmp_path / "late.csv"), "--out", str(out)])
    assert result.exit_code == 2 and str(whole.value) in result.stderr, result.stderr
    assert not out.exists() and [path.name for path in tmp_path.iterdir()] == ["late.csv"]


DRIVER = Path(__file__).with_name("fault_driver.py")


def _predict_with_fault(runs, out, fault):
    env = dict(os.environ, DLTRAIN_FAULT=fault, DLTRAIN_FAULT_BLOCK_ROWS="16")
    command = [sys.executable, str(DRIVER), "predict", str(runs / "values"), str(runs / "train.csv"), "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fault, code", [("kill-write:3", -signal.SIGKILL), ("signal-write:2:3", 130)])
def test_kill_or_ctrl_c_mid_write_leaves_the_old_file(runs, tmp_path, fault, code):
    out = tmp_path / "predictions.csv"
    out.write_text("old predictions\n")
    data = (runs / "train.csv").read_bytes()
    result = _predict_with_fault(runs, out, fault)
    assert result.returncode == code, result.stderr
    assert out.read_text() == "old predictions\n"
    assert (runs / "train.csv").read_bytes() == data  # the input is only read
    left = sorted(path.name for path in tmp_path.iterdir() if path != out)
    if code == 130:  # Ctrl-C: the temporary file is removed too
        assert left == [] and "interrupted" in result.stderr
    else:  # kill -9: at most a temporary dot file beside it, never under the name
        assert all(name.startswith(".predictions.csv.") and name.endswith(".tmp") for name in left)


def test_a_full_disk_mid_write_is_one_message_and_leaves_the_old_file(runs, small_blocks, tmp_path, monkeypatch):
    out = tmp_path / "predictions.csv"
    out.write_text("old predictions\n")
    writes = []

    def full_disk(handle, payload):
        writes.append(len(payload))
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        handle.write(payload)

    monkeypatch.setattr(predict, "write_all", full_disk)
    arguments = ["predict", str(runs / "classes"), str(runs / "train.csv"), "--out", str(out), "--quiet"]
    result = runner.invoke(app, arguments)  # --quiet: on a busy machine a read may report its progress
    assert result.exit_code == 1, result.output  # as every command's full disk: not the user's typing
    assert result.stderr.strip() == f"error: {out}: cannot write: no space left on the device; free some space"
    assert out.read_text() == "old predictions\n" and [path.name for path in tmp_path.iterdir()] == [out.name]


def _whole_file_metrics(run_dir, data, chunk_rows: int) -> dict:
    """Run.evaluate as it was: the whole file read at once (read_labelled), then scored in chunks
    of ``chunk_rows`` (metrics.evaluate's are EVAL_ROWS)."""
    run = api.load(run_dir)
    read = read_labelled(data, run.schema, dialect=api.csv_dialect())
    chunks = metrics.array_chunks(read.features, read.targets, chunk_rows)
    schema = run.schema
    scores = metrics.evaluate_chunks(run.model, run.loss, chunks, schema.task, True, schema.target_divisor)
    per_target = scores.pop("per_target", None)
    if per_target is not None:
        scores["per_target"] = {
            target: {name: float(values[index]) for name, values in per_target.items()}
            for index, target in enumerate(schema.targets)
        }
    skipped = {"rows_skipped": read.rows_skipped, "rows_skipped_empty_target": read.skipped_for_target}
    return {**scores, "rows_scored": len(read.features), **skipped, "skipped_lines": read.first_skipped_lines}


def _same(streamed, whole) -> bool:
    """Equal values, bit for bit (NaN equal to NaN), in nested dicts, lists and arrays."""
    if isinstance(whole, dict):
        return streamed.keys() == whole.keys() and all(_same(streamed[key], whole[key]) for key in whole)
    if isinstance(whole, (np.ndarray, list)):
        return np.array_equal(np.asarray(streamed), np.asarray(whole), equal_nan=np.asarray(whole).dtype.kind == "f")
    return type(streamed) is type(whole) and (streamed == whole or (streamed != streamed and whole != whole))


@pytest.mark.parametrize(
    "run_name, data",
    [("classes", "holes.csv"), ("values", "holes.csv"), ("binary", "crlf.csv"), ("classes", "gaps.csv")],
)
def test_streamed_eval_scores_what_the_whole_file_scores(runs, small_blocks, monkeypatch, run_name, data):
    """The metrics of the whole file at once (as eval gave them), and with chunks of a few rows
    read, skipped and scored in turn: those of the whole file scored in chunks of that size."""
    assert _same(
        api.load(runs / run_name).evaluate(runs / data), _whole_file_metrics(runs / run_name, runs / data, 65536)
    )
    monkeypatch.setattr(evaluation, "EVAL_ROWS", SMALL_BATCH)
    streamed = api.load(runs / run_name).evaluate(runs / data)
    assert _same(streamed, _whole_file_metrics(runs / run_name, runs / data, SMALL_BATCH))
    if data == "holes.csv":  # a whole chunk of skipped rows on the way, and the first lines shown
        assert streamed["rows_skipped"] == streamed["rows_skipped_empty_target"] == 29
        assert streamed["skipped_lines"] == [8, 15, 21, 22, 23, 24, 25, 26, 27, 28]


def test_a_reader_that_goes_away_stops_predict_quietly(runs, small_blocks, monkeypatch):
    """`dltrain predict ... | head`: the pipe closes after the first block; no traceback, the
    exit status a writer killed by SIGPIPE has."""
    blocks = []

    def closed_after_one(data: bytes):
        if blocks:
            raise BrokenPipeError(32, "Broken pipe")
        blocks.append(data)

    monkeypatch.setattr(report, "write_bytes", closed_after_one)
    result = runner.invoke(app, ["predict", str(runs / "classes"), str(runs / "train.csv"), "--quiet"])
    assert result.exit_code == 128 + signal.SIGPIPE and result.stderr == "", result.stderr
    assert blocks[0].startswith(b"label,prob_big")


def test_a_row_of_empty_cells_keeps_its_place_beside_the_kept_column(tmp_path):
    """A record of empty cells is a row of missing values for predict (filled here): the kept
    column has an empty cell there, in the whole-file answer (predict_rows: the IndexError of a
    kept column read without that row) and in the streamed one alike."""
    rng = np.random.default_rng(0)
    lines = ["id,a,b,y"] + [f"r{i},{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f}" for i in range(40)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.yaml").write_text(
        "name: k\ndata: {train: train.csv, target: y, exclude: [id], missing: mean}\n"
        "model: {layers: [{units: 3}]}\ntrain: {epochs: 1}\n"
    )
    api.fit(tmp_path / "c.yaml", out=tmp_path / "run")
    (tmp_path / "new.csv").write_text("\n".join(lines[:5] + [",,,"] + lines[5:10]) + "\n")
    header, rows = predict.predict_rows(tmp_path / "run", tmp_path / "new.csv", keep=["id"])
    assert len(rows) == 10 and rows[4][0] == "" and rows[5][0] == "r4"
    shown = runner.invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "--keep", "id"])
    assert shown.exit_code == 0 and shown.stdout_bytes == predict.predictions_csv(header, rows).encode()
