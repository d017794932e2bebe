"""`dltrain predict`: one output row per input row, as CSV text.

``predict_cells`` is the same prediction for columns of raw cells (a JSON request, a Python
caller): the stored fills, encoding, scaling and network, as arrays."""

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import holds_run
from ..data import DataSchema, read_rows
from ..errors import ArtifactError, ConfigError, DataError
from ..metrics import predicted_classes
from .common import LoadedRun, _check_argument_order, csv_dialect, file_dialect, load_run


def format_number(value) -> str:
    """The shortest text that reads back as the same float32, the model's precision: 0.5,
    151.25, 2.55662e-11. One format for predicted values and probabilities alike."""
    single = np.float32(value)
    if single == 0 or 1e-4 <= abs(single) < 1e16 or not np.isfinite(single):
        return np.format_float_positional(single, unique=True, trim="-")
    return np.format_float_scientific(single, unique=True, trim="-")


@dataclass
class Predictions:
    """A run's predictions, one entry per input row: what `dltrain predict` writes, as arrays."""

    header: list[str]  # predict's columns: the target (or each regression target), then prob_<label> per class
    labels: np.ndarray | None  # classification: each row's predicted label (str)
    probabilities: np.ndarray | None  # classification: (rows, classes) float32, in the header's order
    values: np.ndarray | None  # regression: (rows, targets) float32, in the targets' own units

    def __len__(self) -> int:
        return len(self.values if self.values is not None else self.labels)  # type: ignore[arg-type]

    def part(self, start: int, stop: int) -> "Predictions":
        """The predictions of rows ``start`` to ``stop`` (a slice of each array)."""

        def cut(array):
            return None if array is None else array[start:stop]

        return Predictions(self.header, cut(self.labels), cut(self.probabilities), cut(self.values))

    def text_rows(self) -> list[list[str]]:
        """The rows as `dltrain predict` writes them (see ``format_number``)."""
        if self.values is not None:
            return [[format_number(value) for value in row] for row in self.values.tolist()]
        return [
            [label] + [format_number(p) for p in row]
            for label, row in zip(self.labels.tolist(), self.probabilities.tolist())  # type: ignore[union-attr]
        ]


def predictions_from_features(run: LoadedRun, features: np.ndarray) -> Predictions:
    """The network on scaled model inputs, its outputs as labels and probabilities, or values."""
    schema = run.schema
    outputs = run.model.predict(features)
    if schema.task == "regression":  # one column per target
        with np.errstate(over="ignore"):  # beyond float32: inf, which the callers refuse by row
            values = schema.unscale_targets(outputs.astype(np.float64)).astype(np.float32)
        return Predictions(list(schema.targets), None, None, values)
    probabilities = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]]) if schema.binary else outputs
    labels = np.asarray(schema.class_labels, dtype=object)[predicted_classes(outputs)]
    header = [schema.target] + [f"prob_{label}" for label in schema.class_labels]
    return Predictions(header, labels, probabilities.astype(np.float32, copy=False), None)


def predict_cells(run: LoadedRun, cells: Mapping[str, Sequence], source: str = "row") -> Predictions:
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


def _kept_columns(data_path, schema: DataSchema, keep, dialect: dict, content: bytes | None) -> list[np.ndarray]:
    """The ``--keep`` columns of the CSV, as written, to pass through beside the predictions."""
    if not keep:
        return []
    table = schema.open(data_path, dialect, content)
    for name in keep:
        table.index(name, "--keep")
    columns = table.read(text=list(keep))
    return [columns.text[name] for name in keep]


PREDICTED_PREFIX = "predicted_"


def _prediction_names(header: list, keep: list) -> list:
    """The prediction columns' names: as the target (and prob_<label>), or ``predicted_<name>``
    where a kept column has that name (``--keep species``: the truth beside the prediction)."""
    renamed = [PREDICTED_PREFIX + name if name in keep else name for name in header]
    clashes = [name for name in renamed if name in keep]
    if clashes:
        raise ConfigError(
            f"--keep {clashes[0]}: the predictions have a column of that name already; "
            f"keep other columns, or rename {clashes[0]!r} in a copy of the CSV"
        )
    return renamed


def predict_rows(
    run_dir, data_path, keep=(), dialect: dict | None = None, on_note=None
) -> tuple[list[str], list[list]]:
    """Header and rows of predictions: the ``keep`` columns as given, then the target's predicted
    label or value, then prob_<label> per class; a prediction column named like a kept one is
    ``predicted_<name>``. ``dialect``: see ``csv_dialect`` (default: detected), and ``file_dialect``
    for the encoding's fallback, which ``on_note`` is told of."""
    _check_argument_order("predict", run_dir, data_path)
    run = load_run(run_dir)
    dialect = file_dialect(run.schema, data_path, dialect or csv_dialect(), on_note)
    return predict_table(run, data_path, keep, dialect)


def predict_table(
    run: LoadedRun, data_path, keep=(), dialect: dict | None = None, content: bytes | None = None
) -> tuple[list[str], list[list]]:
    """``predict_rows`` for a loaded run; with ``content`` (a request's body) those bytes are the CSV."""
    dialect = dialect or csv_dialect()
    schema = run.schema
    keep = list(dict.fromkeys(keep))
    kept = _kept_columns(data_path, schema, keep, dialect, content)
    read = read_rows(data_path, schema, dialect, content)
    predictions = predictions_from_features(run, read.features)
    # Never a label beside NaN probabilities, nor a NaN printed as a prediction.
    read.refuse_non_finite(schema, predictions.values if predictions.values is not None else predictions.probabilities)
    header, rows = list(predictions.header), predictions.text_rows()
    if kept:
        header = keep + _prediction_names(header, keep)
        rows = [[column[index] for column in kept] + row for index, row in enumerate(rows)]
    return header, rows


def predictions_csv(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def refuse_overwriting_inputs(out, inputs, run_dir):
    """An output file must not be one of the command's inputs, nor a file inside a run folder."""
    out = Path(out)
    for path in inputs:
        if out.exists() and Path(path).exists() and os.path.samefile(out, path):
            raise ArtifactError(
                f"--out {out} is the input {path}; writing there would replace the data. Give another file name"
            )
    parent = out.parent.resolve()
    if parent == Path(run_dir).resolve() or holds_run(parent):
        raise ArtifactError(
            f"--out {out} is inside a run folder ({out.parent}); writing there could break the run. "
            "Write the predictions elsewhere"
        )
