"""The stored formats (model.json with its data schema and column encodings, checkpoint.npz's
metadata): a damaged field in any of them is one message in one wording, naming the file and the
field; run folders written by older versions load and predict as they did."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from dltrain import __version__
from dltrain.artifacts import npz_bytes
from dltrain.build import array_trainer
from dltrain.cli import app
from dltrain.config import TrainSpec

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
OLD_RUNS = Path(__file__).parent / "old_runs"
DAMAGED = "hint: the file is damaged or was changed; train again"
DROP = object()  # an edit that removes the key


@pytest.fixture
def work(bad_inputs_base, tmp_path, monkeypatch):
    shutil.copytree(bad_inputs_base, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    return tmp_path / "w"


def _edit(document, key_path, value):
    node = document
    for key in key_path[:-1]:
        node = node[key]
    if value is DROP:
        del node[key_path[-1]]
    else:
        node[key_path[-1]] = value


def _refused(args, *lines):
    """The command exits 2 with exactly these lines: ``error: …`` and ``hint: …``."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == list(lines), result.output


MANIFEST_FIELDS = {
    "manifest": (["training", "epochs_done"], -3, "training.epochs_done: must be >= 0 (got -3)"),
    "manifest_missing": (["model_sha256"], DROP, "model_sha256: is missing"),
    "config": (["config", "optimizer", "lr"], "fast", "config.optimizer.lr: must be a number (got 'fast')"),
    "schema": (["data", "binary"], "yes", "data.binary: must be true or false (got 'yes')"),
    "schema_csv": (["data", "csv", "na_values"], "?", "data.csv.na_values: must be a list (got '?')"),
    "schema_scaler": (["data", "scaler", "offset"], [0.0], "data.scaler.offset: has 1 values for 5 model inputs"),
    "target_scaler": (
        ["data", "target_scaler"],
        {"method": "standard", "offset": [0.0], "divisor": [0.0]},
        "data.target_scaler.divisor: holds NaN or infinite values, or values <= 0",
    ),
    "encoding": (
        ["data", "columns", 0, "missing"],
        "sometimes",
        "data.columns[0].missing: must be one of error, drop, mean, median, mode, constant (got 'sometimes')",
    ),
    "encoding_fitted": (
        ["data", "columns", 1, "categories"],
        [],
        "data.columns[1].categories: a categorical column without categories",
    ),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_FIELDS))
def test_a_damaged_field_of_model_json_is_named_in_the_one_wording(work, case):
    key_path, value, problem = MANIFEST_FIELDS[case]
    manifest_path = work / "run" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    _edit(manifest, key_path, value)
    manifest_path.write_text(json.dumps(manifest))
    _refused(["predict", "run", "base.csv"], f"error: run/model.json: {problem}", DAMAGED)


CHECKPOINT_FIELDS = {
    "meta": (["best", "wait"], -1, "best.wait: must be >= 0 (got -1)"),
    "meta_list": (["history_columns"], ["loss", 3], "history_columns[1]: must be text (got 3)"),
    "meta_resume": (["resume", "overrides"], "x", "resume.overrides: must be a list (got 'x')"),
}


def _edit_checkpoint(run: Path, key_path, value):
    with np.load(run / "checkpoint.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays.pop("meta.json")))
    meta["config"]["data.train"] = str((run.parent / "base.csv").resolve())  # the copy's own data
    meta = value if key_path is None else meta
    if key_path is not None:
        _edit(meta, key_path, value)
    arrays["meta.json"] = np.array(json.dumps(meta))
    (run / "checkpoint.npz").write_bytes(npz_bytes(arrays))


RESUME = ["fit", "base.yaml", "--out", "run", "--resume", "--set", "train.epochs=4", "--quiet"]


@pytest.mark.parametrize("case", sorted(CHECKPOINT_FIELDS))
def test_a_damaged_field_of_a_checkpoint_is_named_in_the_one_wording(work, case):
    key_path, value, problem = CHECKPOINT_FIELDS[case]
    _edit_checkpoint(work / "run", key_path, value)
    _refused(RESUME, f"error: run/checkpoint.npz: {problem}", f"{DAMAGED} without --resume")


def test_a_foreign_or_newer_file_is_named_as_such(work):
    manifest_path = work / "run" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 2}))
    _refused(
        ["predict", "run", "base.csv"],
        f"error: run/model.json: run format version 2 is not supported by dltrain {__version__} (it reads format 1)",
        "hint: use a matching dltrain version, or train again",
    )
    manifest_path.write_text("[1, 2]")
    _refused(["eval", "run", "base.csv"], "error: run/model.json: not a dltrain model manifest", DAMAGED)
    manifest_path.write_text('{"format_version": 1, "config": ')
    result = runner.invoke(app, ["predict", "run", "base.csv"])
    assert result.exit_code == 2 and "error: run/model.json: not valid JSON (" in result.output
    assert result.output.endswith(f"{DAMAGED}\n"), result.output
    _edit_checkpoint(work / "run", None, ["a", "list"])
    _refused(RESUME, "error: run/checkpoint.npz: not a dltrain checkpoint", f"{DAMAGED} without --resume")


# ---------------------------------------------------------------- older run folders


def _predictions(path: Path) -> np.ndarray:
    """The numbers of a predictions CSV: each class's probability, or the predicted values."""
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    numbers = [index for index, name in enumerate(header) if name.startswith("prob_")] or range(len(header))
    return np.array([[float(row[index]) for index in numbers] for row in rows])


# Run folders written by earlier versions of dltrain (see old_runs/README.md), the CSV they
# predict, and what that version's `dltrain predict` wrote for it.
OLD = {
    # The first version: no column encodings, CSV options or target scaling stored, no gelu marker.
    "iris_0.1_spine": (ROOT / "data" / "iris.csv", "gelu_tanh", "none"),
    # Categorical and boolean columns, a regression target not yet scaled, gelu still the tanh form.
    "shop_before_gelu_marker": (OLD_RUNS / "shop.csv", "gelu_tanh", "none"),
}


@pytest.mark.parametrize("name", sorted(OLD))
def test_a_run_folder_of_an_older_version_loads_and_predicts_as_it_did(tmp_path, name):
    data, activation, target_scale = OLD[name]
    run_dir = shutil.copytree(OLD_RUNS / name, tmp_path / name)
    stored = (run_dir / "model.json").read_text()
    run = dltrain.load(run_dir)
    # Upgraded in the words of this version: gelu then meant the tanh form; targets were not scaled.
    assert run.config.model.layers[0].activation == activation
    assert run.config.data.target_scale == target_scale
    assert run.metadata == json.loads(stored)  # metadata is the file as stored, not the upgrade
    assert (run_dir / "model.json").read_text() == stored  # loading never rewrites a run folder
    expected = _predictions(OLD_RUNS / f"{name}.predictions.csv")
    np.testing.assert_allclose(run.predict(data).numbers, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the loop's options


def test_the_loop_reads_the_train_section_as_validated():
    settings = {
        "model": {"layers": [{"units": 3}]},
        "optimizer": {"name": "gd", "lr": 0.1},
        "train": {"epochs": 3, "batch_size": 4, "early_stopping": {"monitor": "loss", "patience": 2}},
    }
    features = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    trainer = array_trainer(settings, features, (features[:, 0] > 0).astype(np.int64), ["no", "yes"])
    options = trainer.options
    assert isinstance(options, TrainSpec) and options.full_batch  # gd: every step sees every row
    assert (
        options.model_dump(exclude={"full_batch"})
        == TrainSpec.model_validate({**settings["train"], "metrics": ["accuracy"]}).model_dump()
    )
    assert trainer.early_stopping is options.early_stopping and trainer.early_stopping.patience == 2
