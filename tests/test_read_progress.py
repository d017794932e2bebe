"""Progress while a large CSV file is read: a bar on a terminal, plain lines elsewhere, nothing with --quiet."""

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dltrain import report
from dltrain.cli import app
from dltrain.data import csv as csv_module
from dltrain.data.csv import CsvFile


@pytest.fixture
def many_blocks(tmp_path, monkeypatch):
    """A CSV file read in many blocks (by the plain reader: no numba needed), with a config."""
    monkeypatch.setattr(csv_module, "BLOCK_CHARS", 2048)
    monkeypatch.setattr(csv_module.fastcsv, "MIN_BYTES", 1 << 40)
    path = tmp_path / "data.csv"
    path.write_text("a,b,y\n" + "".join(f"{index},{index / 8},{index % 2}\n" for index in range(4000)))
    (tmp_path / "config.yaml").write_text(
        "name: p\ndata: {train: data.csv, target: y, cache: false}\nmodel: {layers: []}\ntrain: {epochs: 1}\n"
    )
    return path


def _read(path, console, monkeypatch, **thresholds):
    for name, value in thresholds.items():
        monkeypatch.setattr(report.ReadProgress, name, value)
    with csv_module.reading_progress(lambda read_path, total: report.ReadProgress(read_path, total, console)):
        CsvFile.open(path).read(numeric=["a", "b", "y"])


def test_off_a_terminal_a_slow_read_prints_a_line_per_quarter_and_one_at_the_end(many_blocks, monkeypatch):
    out = io.StringIO()
    _read(many_blocks, Console(file=out, force_terminal=False, width=200), monkeypatch, LINES_AFTER=0)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"reading {many_blocks}"] * 3 + [f"read {many_blocks}"]
    assert re.fullmatch(rf"reading {re.escape(str(many_blocks))}: 2\d% of 55.0 kB, .*/s, about \d+ s left", lines[0])
    assert lines[-1].startswith(f"read {many_blocks}: ") and " in " in lines[-1]


def test_a_quick_read_prints_nothing(many_blocks, monkeypatch):
    out = io.StringIO()
    _read(many_blocks, Console(file=out, force_terminal=False), monkeypatch)  # well under 2 s
    _read(many_blocks, Console(file=out, force_terminal=True), monkeypatch)  # well under 0.5 s
    assert out.getvalue() == ""


def test_on_a_terminal_a_bar_shows_the_bytes_and_goes_away(many_blocks, monkeypatch):
    out = io.StringIO()
    _read(many_blocks, Console(file=out, force_terminal=True, width=120), monkeypatch, BAR_AFTER=0)
    shown = out.getvalue()
    assert f"reading {many_blocks}" in shown and "kB" in shown and "/s" in shown


@pytest.mark.parametrize("command", [["check", "config.yaml"], ["fit", "config.yaml"]])
def test_quiet_silences_the_progress_and_it_goes_to_stderr(many_blocks, monkeypatch, command):
    monkeypatch.setattr(report.ReadProgress, "LINES_AFTER", 0)
    monkeypatch.chdir(many_blocks.parent)
    loud = CliRunner().invoke(app, command + ["--out", "run1"] if command[0] == "fit" else command)
    assert loud.exit_code == 0, loud.output
    assert re.search(r"^reading data.csv: 2\d% of 55.0 kB", loud.stderr, re.M) and "reading" not in loud.stdout
    quiet = CliRunner().invoke(app, command + (["--out", "run2"] if command[0] == "fit" else []) + ["--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "reading" not in quiet.stderr
