"""A trained run's predictions, one way for every caller: `dltrain predict`, ``Run.predict`` and
`dltrain serve` all turn raw cells (a CSV's, or columns of them) into model inputs with the
stored fills, encoding and scaling, run the network, and read its outputs as labels and
probabilities, or values in the targets' own units."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .csv_text import format_number, rows_text
from .data import DataSchema, read_rows
from .data.rows import feature_rows
from .engine.model import Sequential
from .errors import DataError
from .metrics import predicted_classes


class Trained(Protocol):
    """What predicting needs of a trained run (``api.Run`` is one): its preprocessing and network."""

    @property
    def schema(self) -> DataSchema: ...

    @property
    def model(self) -> Sequential: ...


@dataclass
class Predictions:
    """A run's predictions, one entry per input row: what `dltrain predict` writes, as arrays."""

    header: list[str]  # predict's columns: the target (or each regression target), then prob_<label> per class
    labels: np.ndarray | None  # classification: each row's predicted label (str)
    probabilities: np.ndarray | None  # classification: (rows, classes) float32, in the header's order
    values: np.ndarray | None  # regression: (rows, targets) float32, in the targets' own units
    classes: np.ndarray | None = None  # classification: each row's predicted class index (int64)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def numbers(self) -> np.ndarray:
        """Each row's numbers: its values (regression) or its class probabilities."""
        numbers = self.values if self.values is not None else self.probabilities
        assert numbers is not None, "predictions hold values or probabilities"
        return numbers

    def part(self, start: int, stop: int) -> "Predictions":
        """The predictions of rows ``start`` to ``stop`` (a slice of each array)."""

        def cut(array):
            return None if array is None else array[start:stop]

        return Predictions(self.header, cut(self.labels), cut(self.probabilities), cut(self.values), cut(self.classes))

    def text_rows(self) -> list[list[str]]:
        """The rows as `dltrain predict` writes them (see ``format_number``)."""
        if self.values is not None:
            return [[format_number(value) for value in row] for row in self.values.tolist()]
        return [
            [label] + [format_number(p) for p in row]
            for label, row in zip(self.labels.tolist(), self.probabilities.tolist())  # type: ignore[union-attr]
        ]

    def csv_text(self, class_labels, kept=(), encoding: str = "utf-8") -> bytes:
        """``text_rows`` as CSV lines (``\\n`` after each), encoded, with the ``kept`` columns first
        (each a pair: its distinct cells, and each row's index among them); ``class_labels``
        in class-index order. Numbers formatted by the fast path when it pays (csv_text.py)."""
        if self.values is not None:
            return rows_text(list(kept), self.values, encoding)
        assert self.classes is not None, "classification predictions hold their class indices"
        labels = (np.asarray(class_labels, dtype=object), self.classes)
        return rows_text([*kept, labels], self.probabilities, encoding)  # type: ignore[arg-type]


def prediction_header(schema: DataSchema) -> list[str]:
    """Predict's columns: the target (or each regression target), then prob_<label> per class."""
    if schema.task == "regression":
        return list(schema.targets)
    return [schema.targets[0]] + [f"prob_{label}" for label in schema.class_labels]


def predictions_from_features(run: Trained, features: np.ndarray) -> Predictions:
    """The network on scaled model inputs, its outputs as labels and probabilities, or values."""
    schema = run.schema
    outputs = run.model.predict(features)
    if schema.task == "regression":  # one column per target
        with np.errstate(over="ignore"):  # beyond float32: inf, which the callers refuse by row
            values = schema.unscale_targets(outputs.astype(np.float64)).astype(np.float32)
        return Predictions(prediction_header(schema), None, None, values)
    probabilities = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]]) if schema.binary else outputs
    classes = predicted_classes(outputs)
    labels = np.asarray(schema.class_labels, dtype=object)[classes]
    probabilities = probabilities.astype(np.float32, copy=False)
    return Predictions(prediction_header(schema), labels, probabilities, None, classes)


def predict_chunk(run: Trained, columns) -> Predictions:
    """Predictions for a chunk of a CSV's rows (data.chunks): as ``predict_csv`` gives them for those rows."""
    read = feature_rows(run.schema, columns)
    predictions = predictions_from_features(run, read.features)
    read.refuse_non_finite(run.schema, predictions.numbers)
    return predictions


def predict_csv(run: Trained, data_path, dialect: dict | None = None, content: bytes | None = None) -> Predictions:
    """Predictions for every row of a CSV (with ``content``, those bytes are the file): one per
    row, an empty one included; a row whose outputs overflow is an error naming its line."""
    read = read_rows(data_path, run.schema, dialect, content)
    predictions = predictions_from_features(run, read.features)
    # Never a label beside NaN probabilities, nor a NaN printed as a prediction.
    read.refuse_non_finite(run.schema, predictions.numbers)
    return predictions


def predict_cells(run: Trained, cells: Mapping[str, Sequence], source: str = "row") -> Predictions:
    """Predictions for columns of raw cells ({column: [cell, ...]}: numbers, texts, true/false,
    None for a missing cell), equal to `dltrain predict` on a CSV holding the same cells.

    A cell the model cannot use is a DataError starting ``{source}:{row}:`` (rows from 0)."""
    schema = run.schema
    columns = schema.read_cells(cells, source)
    features = schema.encode_features(columns, schema.usable_rows(columns, labelled=False))
    return predictions_from_features(run, features)


def cells_from_rows(rows: Sequence[Mapping], names: Sequence[str], source: str = "row") -> dict[str, list]:
    """Row mappings ([{column: cell}, ...]) as columns of cells for ``names``; other keys are ignored.

    Every row must hold every column (None for a missing cell), so that a misspelt key is an
    error naming it rather than a silently missing value."""
    cells: dict[str, list] = {name: [] for name in names}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{source}:{index}: is {type(row).__name__}, not an object of column: cell")
        try:
            for name, column in cells.items():
                column.append(row[name])
        except KeyError:
            absent = next(name for name in names if name not in row)
            raise DataError(
                f"{source}:{index}: column {absent!r} is absent; give every column the model needs "
                "in every row (null for a missing value)"
            ) from None
    return cells
