"""A CSV file, or rows given as JSON cells, read for eval or predict as training read its data:
the trained schema's columns, markers and encodings, and the rows' lines for messages."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, did_you_mean
from .cells import FLOAT32_MAX, MISSING_TOKENS, numeric_markers, refuse_beyond_float32, to_numbers, to_text
from .csv import listed
from .parsed import Columns

if TYPE_CHECKING:
    from .schema import DataSchema


def read_cells(schema: DataSchema, cells: Mapping[str, Sequence], source: str = "row") -> Columns:
    """The feature columns of ``cells`` ({column: cells}, as from JSON), typed as ``read_columns``
    types a CSV's: a cell is a number, a text, a boolean or None, and is read as the same text
    in a CSV file would be (None, NaN and the missing-value tokens are empty cells). Rows are
    numbered from 0 in messages, which start ``{source}:{row}:``; extra columns are ignored."""
    where = Path(source)
    for name in schema.feature_names:
        if name not in cells:
            raise DataError(
                f"{where}: feature column {name!r} not found{did_you_mean(name, list(cells))}; "
                f"the model needs {listed(schema.feature_names)}"
            )
    lengths = {name: len(cells[name]) for name in schema.feature_names}
    n_rows = lengths[schema.feature_names[0]]
    if n_rows == 0 or any(length != n_rows for length in lengths.values()):
        other = next((name for name, length in lengths.items() if length != n_rows), None)
        raise DataError(
            f"{where}: no rows to predict; give each column a list of cells"
            if other is None
            else f"{where}: column {schema.feature_names[0]!r} has {n_rows} cells and {other!r} "
            f"{lengths[other]}; give every column one cell per row"
        )
    numeric = [column.name for column in schema.columns if column.type == "numeric"]
    lines = np.arange(n_rows)
    matrix = np.empty((n_rows, len(numeric)), dtype=np.float64)
    for position, name in enumerate(numeric):
        matrix[:, position] = _cell_numbers(cells[name], where, name, frozenset(schema.missing_tokens(name)))
    refuse_beyond_float32(where, matrix, lines, numeric)
    text = {
        column.name: to_text(
            [_cell_text(value, where, column.name, row) for row, value in enumerate(cells[column.name])],
            frozenset(schema.missing_tokens(column.name)),
        )
        for column in schema.columns
        if column.type != "numeric"
    }
    return Columns(where, lines, numeric, matrix.astype(np.float32), {}, text)


def _cell_text(value, where: Path, name: str, row: int) -> str:
    """A JSON cell as the text a CSV would hold: None and NaN are empty, true is "true", 3 is "3"."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + " …"
    raise DataError(
        f"{where}:{row}: column {name!r} has {shown}, a {type(value).__name__}; a cell is a number, "
        "a text, true/false or null"
    )


_NUMBER_TYPES = {int, float, type(None)}


def _cell_numbers(values: Sequence, where: Path, name: str, tokens: frozenset = MISSING_TOKENS) -> np.ndarray:
    """A numeric column's cells as float64 (NaN: missing, or a marker in ``tokens``); text that is not a
    number names its row."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return _without_markers(values.astype(np.float64).reshape(-1), tokens)
    if set(map(type, values)) <= _NUMBER_TYPES:  # map and set at C speed: no Python loop per cell
        try:
            return _without_markers(np.array(values, dtype=np.float64).reshape(-1), tokens)  # None becomes NaN
        except OverflowError:  # an integer beyond float64: read as text, like a CSV's
            pass
    texts = [_cell_text(value, where, name, row) for row, value in enumerate(values)]
    numbers, bad = to_numbers(texts, ".", tokens)
    _without_markers(numbers, tokens)
    if bad is not None:
        raise DataError(
            f"{where}:{bad}: column {name!r} has {texts[bad].strip()!r}, which is not a number; "
            "the model was trained on numbers in this column"
        )
    return numbers


# A server reads a few rows a call: the markers of each column's tokens are worked out once.
_numeric_markers = functools.lru_cache(maxsize=256)(numeric_markers)


def _without_markers(numbers: np.ndarray, tokens: frozenset) -> np.ndarray:
    """``numbers`` with the cells equal to a numeric marker among ``tokens`` made NaN, in place."""
    markers = _numeric_markers(tokens)
    if markers:
        numbers[np.isin(numbers, markers)] = np.nan
    return numbers


@dataclass
class FeatureRows:
    """Model inputs read from a CSV for eval or predict, and the CSV line of each row."""

    path: Path
    lines: np.ndarray
    features: np.ndarray
    targets: np.ndarray | None

    def refuse_non_finite(self, schema: DataSchema, outputs: np.ndarray) -> None:
        """A row whose model outputs (in the units shown) are not finite float32 numbers is an
        error naming its line and its input farthest from 0 once scaled: finite inputs can
        still overflow inside the network, and a label beside NaN probabilities, or a metric
        over them, would be a wrong answer given as a right one."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(outputs) <= FLOAT32_MAX).reshape(len(outputs), -1).all(axis=1)
        if not bad.any():
            return
        row = int(np.flatnonzero(bad)[0])
        scaled = self.features[row].astype(np.float64)
        position = int(np.argmax(np.abs(scaled)))
        raw = scaled[position] * float(schema.divisor[position]) + float(schema.offset[position])
        raise DataError(
            f"{self.path}:{int(self.lines[row])}: the model's output for this row is not a number: it "
            f"overflows inside the network. The input farthest from 0 once scaled is "
            f"{schema.input_names[position]!r} = {raw:.6g} (scaled: {scaled[position]:.3g}); correct or "
            "remove the value"
        )


@dataclass
class LabelledRows(FeatureRows):
    """A labelled CSV read as training data is: the usable rows' inputs and targets, and what the
    ``missing: drop`` policies skipped (a target's or a feature's empty cell)."""

    rows_read: int
    rows_skipped: int
    skipped_for_target: int  # of the skipped rows, those whose target cell is empty
    first_skipped_lines: list  # the first few skipped rows' lines in the file

    SHOWN_LINES = 10


def _encoded_features(schema: DataSchema, columns: Columns, rows) -> np.ndarray:
    """``encode_features``, where a number that fits float32 but not once scaled (3e38 over a
    divisor below 1) is an error naming its cell, instead of an input of inf that the model
    would turn into NaN."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, by cell
        features = schema.encode_features(columns, rows)
    finite = np.isfinite(features)
    if finite.all():
        return features
    row, position = (int(index) for index in np.argwhere(~finite)[0])
    offset, divisor = float(schema.offset[position]), float(schema.divisor[position])
    source = row if rows is None else int(rows[row])
    # The cell itself may be scaled in place by now; what passes the limit is known.
    raise DataError(
        f"{columns.path}:{columns.line(source)}: column {schema.input_names[position]!r} has a number too "
        f"large for this model (beyond about ±{FLOAT32_MAX * divisor:.3g}): scaled with the training "
        f"statistics, (x - {offset:.6g}) / {divisor:.6g}, it passes float32's largest number "
        f"({FLOAT32_MAX:.3g}); correct or remove the value"
    )


def read_labelled(path, schema: DataSchema, dialect: dict | None = None, content: bytes | None = None) -> LabelledRows:
    """Read a labelled CSV (eval, a validation or test file): see ``read_features``, and say which
    rows were skipped."""
    table = schema.open(path, dialect, content)
    return labelled_rows(schema, schema.read_columns(table, with_target=True))


def labelled_rows(schema: DataSchema, columns: Columns, whole: bool = True) -> LabelledRows:
    """The model inputs and targets of labelled rows, and which were skipped: a whole file's, or
    (``whole`` False) a chunk's, whose rows may all be skipped."""
    rows = schema.usable_rows(columns, labelled=True, whole=whole)
    skipped = np.zeros(columns.n_rows, dtype=bool)
    if rows is not None:
        skipped[:] = True
        skipped[rows] = False
    empty_target = np.zeros(columns.n_rows, dtype=bool)
    for name in schema.targets:
        empty_target |= columns.text[name] == "" if name in columns.text else np.isnan(columns.numbers(name))
    skipped_rows = np.flatnonzero(skipped)
    return LabelledRows(
        columns.path,
        columns.lines if rows is None else columns.lines[rows],
        _encoded_features(schema, columns, rows),
        schema.encode_target(columns, rows),
        columns.n_rows,
        len(skipped_rows),
        int(empty_target[skipped_rows].sum()),
        [columns.line(row) for row in skipped_rows[: LabelledRows.SHOWN_LINES]],
    )


def read_rows(path, schema: DataSchema, dialect: dict | None = None, content: bytes | None = None) -> FeatureRows:
    """Read a CSV for predict: one row of scaled inputs per row of the file, even an empty one
    (filled where the model fills, else an error naming the line), with the rows' lines."""
    table = schema.open(path, dialect, content)
    table.keep_empty_rows = True
    return feature_rows(schema, schema.read_columns(table, with_target=False))


def feature_rows(schema: DataSchema, columns: Columns) -> FeatureRows:
    """The model inputs of every row for predict (a whole file's, or a chunk's)."""
    features = _encoded_features(schema, columns, schema.usable_rows(columns, labelled=False))
    return FeatureRows(columns.path, columns.lines, features, None)


def read_features(
    path, schema: DataSchema, *, with_target: bool, dialect: dict | None = None, content: bytes | None = None
):
    """Read a CSV for eval or predict: scaled features, and encoded targets when asked.

    Labelled data is treated like training data (rows under ``missing: drop`` are skipped);
    predictions never skip a row, so an empty cell there is an error unless it can be filled.
    ``dialect``, ``content``: see ``DataSchema.open`` (None: the config's, for its validation and test files)."""
    read = read_labelled(path, schema, dialect, content) if with_target else read_rows(path, schema, dialect, content)
    return read.features, read.targets
