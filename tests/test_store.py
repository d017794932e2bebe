"""The on-disk store as training's source: the same model as from memory, a seeded block shuffle,
the plan `dltrain check` prints, and faults while the CSV is parsed into it (kill -9, a full disk)."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain import batches
from dltrain.cli import app
from dltrain.commands import fit
from dltrain.data import cache as datacache
from dltrain.data import placement, split, store
from dltrain.files import human_bytes

runner = CliRunner()
DRIVER = Path(__file__).with_name("fault_driver.py")
CONFIG = """name: small
seed: 4
data:
  train: small.csv
  target: {target}
  validation: 0.2
  missing: mean
  columns: {{c: {{missing: median}}}}
model: {{layers: [{{units: 8, activation: relu}}]}}
optimizer: {{name: adam, lr: 0.01}}
train: {{epochs: 2, batch_size: 16, {extra}}}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small CSV (numbers with empty cells, a text column, a text target) and two configs."""
    monkeypatch.delenv(datacache.CACHE_ENV, raising=False)
    rng = np.random.default_rng(0)
    lines = ["a,b,color,c,label"]
    for _ in range(600):
        a, b = rng.standard_normal(2)
        color = rng.choice(["red", "green", "blue"])
        label = "yes" if a + b + (color == "red") > 0.3 else "no"
        cells = [f"{a:.4f}", "" if rng.random() < 0.05 else f"{b:.4f}", color if rng.random() > 0.03 else ""]
        lines.append(",".join([*cells, str(rng.integers(0, 5)), label]))
    (tmp_path / "small.csv").write_text("\n".join(lines) + "\n")
    classes = CONFIG.format(target="label", extra="class_weight: balanced, metrics: [accuracy, roc_auc]")
    (tmp_path / "classes.yaml").write_text(classes)
    (tmp_path / "numbers.yaml").write_text(CONFIG.format(target="a", extra="metrics: [mse, r2]"))
    return tmp_path


def _weights(run: Path) -> dict:
    with np.load(run / "model.npz", allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.mark.parametrize("config", ["classes.yaml", "numbers.yaml"])
def test_the_store_and_memory_give_bit_identical_weights(project, config):
    in_memory = fit.fit(project / config, ["data.store=false"], out=project / "memory")
    stored = fit.fit(project / config, ["data.store=true"], out=project / "stored")
    memory_weights, stored_weights = _weights(project / "memory"), _weights(project / "stored")
    assert memory_weights.keys() == stored_weights.keys()
    assert all(np.array_equal(memory_weights[name], stored_weights[name]) for name in memory_weights)
    drop_seconds = [{k: v for k, v in row.items() if k != "seconds"} for row in in_memory.history]
    assert drop_seconds == [{k: v for k, v in row.items() if k != "seconds"} for row in stored.history]


class _Split:
    """Rows 0..n-1 of a table whose features are the row numbers."""

    def __init__(self, n):
        self.rows = np.arange(n)
        self.columns = self
        self.schema = self

    def __len__(self):
        return len(self.rows)

    def take(self, rows):
        return rows

    def encode_features(self, columns, rows):
        return np.asarray(columns)[rows].astype(np.float32)[:, None] if columns is not self else rows[:, None]

    def encode_target(self, columns, rows):
        return np.zeros(len(rows))


def test_rows_kept_under_drop_are_the_same_whatever_the_check_blocks(project, monkeypatch):
    """Rows skipped under missing: drop, found a block at a time (blocks with none to skip keep
    no row numbers): many small blocks, some skipping rows and some not, train the same model."""
    from dltrain.data import checks, prepare

    kept = []

    def spied(*args, **kwargs):
        kept.append(checks.checked_rows(*args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(prepare, "checked_rows", spied)
    fit.fit(project / "classes.yaml", ["data.missing=drop"], out=project / "whole")
    monkeypatch.setattr(checks, "CHECK_ROWS", 7)
    fit.fit(project / "classes.yaml", ["data.missing=drop"], out=project / "blocks")
    assert kept[0] is not None and 500 < len(kept[0]) < 600  # about 8% of the rows skipped
    assert kept[0].dtype == kept[1].dtype == np.int32
    np.testing.assert_array_equal(kept[0], kept[1])
    whole_weights, block_weights = _weights(project / "whole"), _weights(project / "blocks")
    assert all(np.array_equal(whole_weights[name], block_weights[name]) for name in whole_weights)


def test_the_block_shuffle_visits_every_row_once_an_epoch_in_a_seeded_order(monkeypatch):
    monkeypatch.setattr(batches, "SHUFFLE_BLOCK_ROWS", 40)
    monkeypatch.setattr(batches, "BLOCKS_MIXED", 3)

    def epoch(seed):
        iterator = batches.StoredBatches(_Split(1000), None, 20, True, np.random.default_rng(seed), order="blocks")
        return np.concatenate([features[:, 0] for _, features, _, _ in iterator])

    first = epoch(1)
    assert np.array_equal(np.sort(first), np.arange(1000))  # each row once
    assert np.array_equal(first, epoch(1)) and not np.array_equal(first, epoch(2))
    assert not np.array_equal(first, np.arange(1000))
    # Rows travel with their block: 3 blocks of 40 rows are read and mixed together.
    assert np.ptp(first[:120] // 40) >= 1 and len(np.unique(first[:120] // 40)) == 3


def test_auto_keeps_small_data_in_memory_and_shuffles_by_blocks_beyond_memory(project, monkeypatch):
    from dltrain.data.csv import CsvFile

    table = CsvFile.open(project / "small.csv")
    request = {"numeric": ["a", "b", "c"], "text": ["color", "label"]}
    assert not placement.place("auto", "auto", table, request).from_store
    monkeypatch.setattr(placement, "STORE_ABOVE", 1000)
    chosen = placement.place("auto", "auto", table, request)
    assert chosen.from_store and chosen.shuffle == "rows"
    monkeypatch.setattr(placement, "available_memory", lambda: 1000)
    assert placement.place("auto", "auto", table, request).shuffle == "blocks"
    assert placement.place("auto", "rows", table, request).shuffle == "rows"


def test_check_reports_the_plan(project):
    result = runner.invoke(app, ["check", str(project / "classes.yaml"), "--set", "data.store=true"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("plan: "))
    assert "600 rows; batches from the on-disk store (" in line and "shuffled by rows" in line
    assert "expected peak memory of a fit about" in line
    result = runner.invoke(app, ["check", str(project / "classes.yaml")])
    assert "600 rows; batches from memory (" in result.output


@pytest.mark.parametrize("integers", [False, True])
def test_check_without_the_cache_parses_into_memory_and_plans_the_stores_size(project, integers):
    """data.cache: false and a store planned: check writes nothing (the store would be thrown
    away) yet prints what the store would take, as a check that wrote it does; for integers,
    with empty cells, the store's compact type and bits."""
    if integers:
        rows = ["a,b,c,label"] + [
            f"{i % 7},{'' if i % 11 == 0 else i % 300},{i % 5},{'yes' if i % 3 else 'no'}" for i in range(600)
        ]
        (project / "small.csv").write_text("\n".join(rows) + "\n")
        (project / "classes.yaml").write_text(
            CONFIG.format(target="label", extra="metrics: [accuracy]").replace("{c: {missing: median}}", "{}")
        )

    def plan(cache: str):
        result = runner.invoke(
            app, ["check", str(project / "classes.yaml"), "--set", "data.store=true", "--set", cache]
        )
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if line.startswith(("plan: ", "data: "))]

    without = plan("data.cache=false")
    assert not (project / ".dltrain-cache").exists() or not any((project / ".dltrain-cache").iterdir())
    assert plan("data.cache=true") == without and "batches from the on-disk store (" in without[1]
    entry = next(path for path in (project / ".dltrain-cache").iterdir() if path.is_dir())
    on_disk = sum(
        np.load(path, mmap_mode="r").nbytes for path in entry.glob("*.npy") if not path.name.startswith("words_")
    )
    assert f"({human_bytes(on_disk)} on disk)" in without[1]


def _tidy_cache(project: Path) -> list:
    """What a cut-short parse left in the cache: never a record, nor an .incomplete- folder read later."""
    return sorted(path.name for path in (project / ".dltrain-cache").iterdir())


@pytest.mark.parametrize(
    "where, what",
    [
        ("matrix", "the parsed data of "),
        ("-inputs-", "the model inputs and targets of the train rows"),
        ("train-targets", "the model inputs and targets of the train rows"),
    ],
)
def test_a_full_disk_while_writing_the_store_is_one_message(project, monkeypatch, where, what):
    before = (project / "small.csv").read_bytes(), os.stat(project / "small.csv").st_mtime_ns
    write = store.write_all

    def full(handle, payload):
        if where in handle.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(handle, payload)

    monkeypatch.setattr(store, "write_all", full)
    result = runner.invoke(app, ["fit", str(project / "classes.yaml"), "--set", "data.store=true", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {project / '.dltrain-cache'}: cannot write {what}")
    for words in ("no space left on the device; free some space", "DLTRAIN_CACHE_DIR", "data.store: false"):
        assert words in result.output
    assert not [name for name in _tidy_cache(project) if name.startswith(".incomplete-")]
    records = [name for name in _tidy_cache(project) if name.endswith(".json")]
    assert len(records) == (0 if where == "matrix" else 1)  # a parse cut short has no record; a whole store has one
    monkeypatch.undo()
    assert (
        runner.invoke(app, ["fit", str(project / "classes.yaml"), "--set", "data.store=true", "--quiet"]).exit_code == 0
    )
    assert ((project / "small.csv").read_bytes(), os.stat(project / "small.csv").st_mtime_ns) == before


def test_kill_9_while_parsing_into_the_store_leaves_nothing_that_is_used(project):
    before = (project / "small.csv").read_bytes(), os.stat(project / "small.csv").st_mtime_ns
    command = [sys.executable, str(DRIVER), "fit", "classes.yaml", "--set", "data.store=true", "--quiet"]
    killed = subprocess.run(
        command + ["--out", "killed"], cwd=project, env=dict(os.environ, DLTRAIN_FAULT="kill-store:4"), timeout=120
    )
    assert killed.returncode == -9
    left = _tidy_cache(project)
    assert left and all(name.startswith(".incomplete-") for name in left)  # arrays without a record
    fit.fit(project / "classes.yaml", ["data.store=false", "data.cache=false"], out=project / "reference")
    fit.fit(project / "classes.yaml", ["data.store=true"], out=project / "after")
    assert (project / "after" / "model.npz").read_bytes() == (project / "reference" / "model.npz").read_bytes()
    assert not [name for name in _tidy_cache(project) if name.startswith(".incomplete-")]  # the abandoned one is gone
    assert ((project / "small.csv").read_bytes(), os.stat(project / "small.csv").st_mtime_ns) == before


def test_a_fit_shuffled_by_blocks_is_seeded_and_trains(project, monkeypatch):
    monkeypatch.setattr(batches, "SHUFFLE_BLOCK_ROWS", 64)  # 480 training rows: 8 blocks, mixed 3 at a time
    monkeypatch.setattr(batches, "BLOCKS_MIXED", 3)
    runs = {}
    for name, shuffle in (("blocks", "blocks"), ("again", "blocks"), ("rows", "rows")):
        result = fit.fit(project / "classes.yaml", ["data.store=true", f"data.shuffle={shuffle}"], out=project / name)
        assert result.history[-1]["val_accuracy"] > 0.8
        runs[name] = _weights(project / name)
    assert all(np.array_equal(runs["blocks"][name], runs["again"][name]) for name in runs["blocks"])
    assert not all(np.array_equal(runs["blocks"][name], runs["rows"][name]) for name in runs["blocks"])
    assert "shuffle: blocks" in (project / "blocks" / "config.yaml").read_text()


@pytest.mark.parametrize("n_classes", [0, 2, 3])
def test_the_split_taken_a_block_at_a_time_is_the_split_of_whole_arrays(monkeypatch, n_classes):
    """The validation split finds each class's rows, and the training rows left, a block at a
    time in 4-byte integers (a big file's 8-byte positions would cost 8 bytes a row): the same
    rows, from the same draws, as the plain whole-array rule, across many small blocks."""
    n_rows, fraction = 1003, 0.2
    labels = None if n_classes == 0 else np.random.default_rng(1).integers(0, n_classes, n_rows).astype(np.int16)
    rng = np.random.default_rng(7)
    if labels is None:
        order = rng.permutation(n_rows)
        expected_validation = np.sort(order[: round(fraction * n_rows)])
    else:
        picked = []
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            picked.append(members[: round(fraction * members.size)])
        expected_validation = np.sort(np.concatenate(picked))
    expected_train = np.setdiff1d(np.arange(n_rows), expected_validation)
    monkeypatch.setattr(split, "CHUNK_ROWS", 2)  # blocks of 32 rows
    train, validation = split.stratified_split(labels, n_rows, fraction, np.random.default_rng(7))
    assert train.dtype == validation.dtype == np.int32
    np.testing.assert_array_equal(validation, expected_validation)
    np.testing.assert_array_equal(train, expected_train)
    if labels is not None:
        counts = split.class_counts(labels, n_classes)
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=n_classes))
