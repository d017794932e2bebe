"""A trained run's loss and metrics on a labelled CSV, read a chunk of rows at a time: what
`dltrain eval` and ``Run.evaluate`` report, in memory that does not grow with the file.

The CSV is read in chunks (data/chunks.py); each chunk's usable rows (``missing: drop`` skips
some) are copied into a buffer of EVAL_ROWS rows, scored together when it is full
(metrics.SplitScores), so the rows are scored in the very chunks ``metrics.evaluate`` cuts a
whole file's rows into: the metrics are equal, bit for bit, to those of the whole file read at
once. What the scores keep per row is the metrics' own: a regression's targets (R²), 4 bytes a
row; ROC AUC's scores (two classes) too, up to a million rows, beyond that in temporary files."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from .data import DataSchema
from .data.chunks import ChunkStream, read_in_chunks
from .data.rows import FeatureRows, LabelledRows, labelled_rows
from .engine.model import Sequential
from .errors import DataError
from .metrics import EVAL_ROWS, SplitScores


class Trained(Protocol):
    """What evaluating needs of a trained run (``api.Run`` is one)."""

    @property
    def schema(self) -> DataSchema: ...

    @property
    def model(self) -> Sequential: ...

    @property
    def loss(self): ...


# Rows read at a time: the usable ones are copied into a buffer of EVAL_ROWS rows, scored when full.
READ_ROWS = 1 << 14


class _Scoring:
    """The scores of one pass over a labelled CSV, added a chunk at a time."""

    def __init__(self, run: Trained):
        self.run = run
        self.reset()

    def reset(self) -> None:
        """Start over (the read starts over: a column turned out to hold text)."""
        schema = self.run.schema
        self.scores = SplitScores(schema.task, self.run.loss, schema.target_divisor)
        self.buffer: LabelledRows | None = None  # EVAL_ROWS rows of inputs, targets and lines, made once
        self.waiting = 0  # rows in the buffer, not yet scored
        self.scored = self.rows_skipped = self.skipped_for_target = 0
        self.skipped_lines: list = []
        self.first_bad: FeatureRows | None = None  # the first row whose outputs are not finite

    def take(self, columns) -> None:
        """A chunk of the file: its usable rows join the buffer, its skipped rows are counted."""
        labelled = labelled_rows(self.run.schema, columns, whole=False)
        self.rows_skipped += labelled.rows_skipped
        self.skipped_for_target += labelled.skipped_for_target
        room = LabelledRows.SHOWN_LINES - len(self.skipped_lines)
        self.skipped_lines += labelled.first_skipped_lines[:room]
        start, rows = 0, len(labelled.features)
        while start < rows:
            buffer = self.buffer or self._make_buffer(labelled)
            count = min(EVAL_ROWS - self.waiting, rows - start)
            for name in ("features", "targets", "lines"):
                getattr(buffer, name)[self.waiting : self.waiting + count] = getattr(labelled, name)[
                    start : start + count
                ]
            self.waiting += count
            start += count
            if self.waiting == EVAL_ROWS:
                self._score()

    def _make_buffer(self, labelled: LabelledRows) -> LabelledRows:
        def like(array):
            return np.empty((EVAL_ROWS, *array.shape[1:]), dtype=array.dtype)

        targets = labelled.targets
        assert targets is not None, "labelled rows hold targets"
        self.buffer = LabelledRows(
            labelled.path, like(labelled.lines), like(labelled.features), like(targets), 0, 0, 0, []
        )
        return self.buffer

    def _score(self) -> None:
        """Score the rows waiting in the buffer together (as ``metrics.evaluate`` cuts its chunks)."""
        assert self.buffer is not None
        count, buffer = self.waiting, self.buffer
        features, targets, lines = buffer.features[:count], buffer.targets[:count], buffer.lines[:count]  # type: ignore[index]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a NaN row is named instead
            logits = self.run.model.logits(features)
            if self.first_bad is None and not np.isfinite(logits).all():
                row = int(np.flatnonzero(~np.isfinite(logits).reshape(len(logits), -1).all(axis=1))[0])
                bad = features[row : row + 1].copy()
                self.first_bad = FeatureRows(buffer.path, lines[row : row + 1].copy(), bad, None)
            self.scores.add(logits, targets)  # it copies what it keeps
        self.scored += count
        self.waiting = 0

    def metrics(self, path) -> dict:
        """The metrics, as ``Run.evaluate`` gives them."""
        if self.waiting:
            self._score()
        if self.scored == 0:
            raise DataError(f"{path}: every row has an empty cell in a column with missing: drop; no rows are left")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            metrics = self.scores.result(detailed=True)
        if not math.isfinite(metrics["loss"]) and self.first_bad is not None:
            # Outputs that overflowed make the loss NaN or inf: name the row, never report
            # metrics computed over NaN.
            with np.errstate(over="ignore", invalid="ignore"):
                outputs = self.run.model.logits(self.first_bad.features)
            self.first_bad.refuse_non_finite(self.run.schema, outputs)
        per_target = metrics.pop("per_target", None)
        if per_target is not None:
            metrics["per_target"] = {
                target: {name: float(values[index]) for name, values in per_target.items()}
                for index, target in enumerate(self.run.schema.targets)
            }
        metrics["rows_scored"] = self.scored
        metrics["rows_skipped"] = self.rows_skipped
        metrics["rows_skipped_empty_target"] = self.skipped_for_target
        metrics["skipped_lines"] = self.skipped_lines
        return metrics


def evaluate_csv(run: Trained, csv_path, dialect: dict | None = None) -> dict:
    """Loss and every metric of ``run`` on a labelled CSV, read a chunk at a time (see ``api.Run.evaluate``)."""
    schema = run.schema
    table = schema.open(csv_path, dialect)
    scoring = _Scoring(run)
    stream = ChunkStream(min(READ_ROWS, EVAL_ROWS), scoring.take, replay=True, on_restart=scoring.reset)
    read_in_chunks(table, schema.column_request(table, with_target=True), stream)
    return scoring.metrics(table.path)
