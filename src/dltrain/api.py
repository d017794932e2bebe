"""dltrain from Python: train a run, load one, predict and evaluate, as the command line does.

    import dltrain

    run = dltrain.fit("configs/iris.yaml", out="runs/iris", overrides={"train.epochs": 50})
    predictions = run.predict("data/iris.csv")  # or {column: cells} or [{column: cell}, ...]
    predictions.labels, predictions.probabilities
    dltrain.load("runs/iris").evaluate("data/iris.csv")["accuracy"]

`dltrain fit`, `eval` and `predict`, `dltrain serve` and the benchmarks call these functions. A
mistake raises the DltrainError subclass (ConfigError, DataError, ArtifactError, ...) whose
message the command line prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .build import build_model, prediction_device
from .config import DELIMITER_ALIASES, Config, ConfigSource
from .data import DataSchema
from .data.dialect import DELIMITERS
from .engine.losses import make_loss
from .engine.model import Sequential
from .errors import ArtifactError, ConfigError
from .evaluation import evaluate_csv
from .files import decodes_as, text_codec
from .fit_session import FitResult, run_fit
from .metrics import epoch_line
from .predictions import Predictions, cells_from_rows, predict_cells, predict_csv
from .run_folder import read_run
from .train import Callbacks


@dataclass
class Run:
    """A trained run, rebuilt from its folder alone: its config (every ``auto`` resolved), the
    fitted preprocessing (``schema``), the network, and ``metadata`` (model.json as stored)."""

    run_dir: Path
    config: Config
    schema: DataSchema
    model: Sequential
    manifest: dict
    fit_result: FitResult | None = None  # how the fit that made it went (history, stop reason), from fit()

    @property
    def metadata(self) -> dict:
        """model.json: versions, the resolved config, the data schema, the final metrics, the
        training's stop reason and best epoch, and how the run was made."""
        return self.manifest

    @property
    def loss(self):
        """The loss the run was trained with (its ``value`` on outputs and targets)."""
        return make_loss(self.config.loss, self.config.model.output.activation)

    def predict(self, rows, *, delimiter: str | None = None, encoding: str | None = None, on_note=None) -> Predictions:
        """Predictions for every row, as `dltrain predict` makes them: ``labels`` and
        ``probabilities`` (one column per class, in ``schema.class_labels`` order) for classes,
        ``values`` (one column per target) for regression.

        ``rows``: a CSV file's path (read as predict reads it: ``delimiter`` and ``encoding``
        detected unless given, ``on_note`` told when the run's own encoding is used); a mapping
        of column -> cells; or a list of row mappings, column -> cell. A cell is a number, a
        text, true/false, or None for a missing value; columns the model does not use are ignored."""
        if isinstance(rows, (str, os.PathLike)):
            dialect = file_dialect(self.schema, rows, csv_dialect(delimiter, encoding), on_note)
            return predict_csv(self, rows, dialect)
        if isinstance(rows, Mapping):
            return predict_cells(self, rows)
        if isinstance(rows, Iterable):
            return predict_cells(self, cells_from_rows(list(rows), self.schema.feature_names))
        raise TypeError(f"rows: give a CSV path, a mapping of column -> cells or a list of rows, not {type(rows)}")

    def evaluate(self, csv_path, *, delimiter: str | None = None, encoding: str | None = None, on_note=None) -> dict:
        """Loss and every metric on a labelled CSV, as `dltrain eval` reports them.

        Classes: ``accuracy``, ``balanced_accuracy``, macro ``precision``/``recall``/``f1``,
        ``per_class`` arrays and ``confusion_matrix`` (in ``schema.class_labels`` order);
        regression: ``mse``, ``rmse``, ``mae``, ``r2`` (with several targets their means, and
        ``per_target``). Beside them: ``rows_scored``, ``rows_skipped`` (rows ``missing: drop``
        left out, of them ``rows_skipped_empty_target``, and the first ones' ``skipped_lines``)."""
        dialect = file_dialect(self.schema, csv_path, csv_dialect(delimiter, encoding), on_note)
        return evaluate_csv(self, csv_path, dialect)  # a chunk of rows at a time


def fit(
    config_path,
    out=None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    quiet: bool = True,
    *,
    force: bool = False,
    resume: bool = False,
    callbacks: Callbacks | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
    command_line: list[str] | None = None,
    cv: int | None = None,
    on_fold: Callable[[int, Any], None] | None = None,
    device: str | None = None,
) -> Run:
    """Train the run a YAML config describes and commit its folder, as `dltrain fit` does.

    ``out``: the run folder (default runs/<name>/, or runs/<name>-2/ ... when taken); a folder
    holding a run is replaced only with ``force``, and ``resume`` continues its checkpoint.
    ``overrides``: {key path: value} (``{"train.epochs": 50, "model.layers[0].units": 32}``) or
    ``--set`` texts (``["train.epochs=50"]``). ``quiet=False`` writes a line per epoch to stderr;
    ``callbacks`` (a ``train.Callbacks``) gets every epoch and batch instead. ``cv=K`` first
    cross-validates the config on K folds of the training rows (``run.fit_result.cross_validation``:
    each fold's held-out scores, and ``summary()``: {name: (mean, spread)}; ``on_fold(index,
    result)`` after each fold); the run trained after is the one trained without ``cv``.
    ``device`` ("auto", "cpu" or "cuda") replaces the config's ``train.device``."""
    if callbacks is None and not quiet:
        callbacks = _EpochLines()
    result = run_fit(
        config_path,
        _override_texts(overrides),
        out,
        force,
        callbacks,
        on_run_dir=on_run_dir,
        resume=resume,
        command_line=command_line,
        cv=cv,
        on_fold=on_fold,
        device=device,
    )
    run = load(result.run_dir)
    run.fit_result = result
    return run


def _override_texts(overrides) -> list[str]:
    """``--set`` texts from {key path: value} (each value written as JSON, which YAML reads) or texts."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


class _EpochLines(Callbacks):
    """fit(quiet=False): one line per epoch on stderr, as `dltrain fit` prints them off a terminal."""

    def on_train_begin(self, epochs, batches_per_epoch, start_epoch=0):
        self.epochs = epochs
        if start_epoch:
            print(f"resuming after epoch {start_epoch} of {epochs}", file=sys.stderr)

    def on_epoch_end(self, epoch, record):
        print(epoch_line(record, self.epochs), file=sys.stderr)


def load(run_dir, device: str | None = None) -> Run:
    """A trained run rebuilt from its folder alone, the weights' checksum checked; a damaged or
    unfinished folder is an ArtifactError saying what to do. ``device`` (auto, cpu or cuda)
    is where it predicts (default: see ``build.prediction_device``); the weights are stored as
    NumPy arrays, so a run trained on either device loads on either."""
    run_dir = Path(run_dir)
    manifest, arrays = read_run(run_dir)  # model.json checked whole, older formats upgraded
    stored = run_dir / "model.json"
    config, schema = manifest.config, manifest.data
    backend = prediction_device(config, schema, device).backend
    try:
        model = build_model(config, schema, source=ConfigSource(str(stored), {}, {}), backend=backend)
    except ConfigError as error:
        raise ArtifactError(str(error)) from None
    try:
        model.load_state(arrays)
    except (KeyError, ValueError) as error:
        raise ArtifactError(f"{run_dir / 'model.npz'}: does not fit the stored model ({error}); train again") from None
    return Run(run_dir, config, schema, model, manifest.document)


def csv_dialect(delimiter: str | None = None, encoding: str | None = None) -> dict:
    """The delimiter and encoding to read a CSV with (``--delimiter``/``--encoding``), checked
    (None: detect the delimiter, and read UTF-8)."""
    if delimiter is not None:
        delimiter = DELIMITER_ALIASES.get(delimiter, delimiter)
        if delimiter not in DELIMITERS:
            raise ConfigError(f"--delimiter {delimiter!r}: use one of , ; tab |, or leave it out to detect it")
    return {"delimiter": delimiter, "encoding": encoding}


def file_dialect(schema: DataSchema, data_path, dialect: dict, on_note=None) -> dict:
    """The dialect to read a file from elsewhere with (eval, predict): as given, except that
    without an encoding a file that is not UTF-8 is read in the encoding the run was trained on
    (its data.encoding, e.g. latin-1), and ``on_note`` is told so."""
    if dialect.get("encoding") is not None:
        return dialect
    try:
        trained = text_codec(schema.encoding)
    except ValueError:
        return dialect
    if trained == text_codec("utf-8") or decodes_as(data_path, text_codec("utf-8")):
        return dialect
    if on_note is not None:
        on_note(
            f"{data_path} is not UTF-8 text; reading it as {schema.encoding}, the encoding the run was "
            "trained with (data.encoding); pass --encoding to read it as another"
        )
    return {**dialect, "encoding": schema.encoding}
