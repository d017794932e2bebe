"""A target column's classes and task, read a block of rows at a time: a class target's labels
come from its distinct cells (text codes, or distinct numbers), never from a text array of
every row, so that a file of millions of rows costs a few bytes a row here."""

from __future__ import annotations

import json

import numpy as np

from ..errors import DataError
from ..labels import canonical_label, canonical_number
from .cells import numbers_among
from .parsed import BLOCK_ROWS, Columns

MAX_AUTO_CLASSES = 20  # an integer target with at most this many values is taken as classes,
MIN_ROWS_PER_CLASS = 5  # if it has on average this many rows per value (else it is a count or a score)
_ROWS = BLOCK_ROWS * 16


def task_of(distinct: np.ndarray, n_rows: int) -> str:
    """'classification' for few distinct integers (``distinct``: sorted float64 values) each with
    enough rows among ``n_rows``; else 'regression'. 16 distinct integers in 20 rows are a
    quantity, not 16 classes: a classifier could not even hold out one row of each."""
    distinct = distinct[~np.isnan(distinct)]
    integral = np.all(np.isfinite(distinct)) and np.all(distinct == np.round(distinct))
    count = np.unique(distinct).size
    enough_rows = count <= 2 or n_rows >= MIN_ROWS_PER_CLASS * count
    return "classification" if integral and count <= MAX_AUTO_CLASSES and enough_rows else "regression"


def _block(rows: np.ndarray | None, begin: int, count: int):
    """Rows ``begin`` onwards, a block's worth: of ``rows``, or a slice where every row is meant (None)."""
    return slice(begin, min(begin + _ROWS, count)) if rows is None else rows[begin : begin + _ROWS]


def distinct_numbers(values: np.ndarray, rows: np.ndarray | None, limit: int | None = None) -> np.ndarray | None:
    """The sorted distinct values of ``values[rows]`` (every row when None; a block of rows at a
    time); None once there are more than ``limit``."""
    found = np.empty(0, dtype=values.dtype)
    count = len(values) if rows is None else len(rows)
    for begin in range(0, count, _ROWS):
        found = np.union1d(found, np.asarray(values[_block(rows, begin, count)]))
        if limit is not None and found.size > limit:
            return None
    return found


def infer_target_task(columns: Columns, name: str, rows: np.ndarray | None) -> str:
    """The task a target column's values suggest (``task_of``) on ``rows`` (every row when
    None), refusing to guess classes for numbers with a marker in them: a target of numbers with
    '?' for missing reads as text, and text means classes (117 of them, and a split that fails on
    a class of one row)."""
    n_rows = columns.n_rows if rows is None else len(rows)
    if name not in columns.categories:
        distinct = distinct_numbers(columns.numbers(name), rows, limit=MAX_AUTO_CLASSES + 1)
        return "regression" if distinct is None else task_of(distinct, n_rows)
    unique, counts, _ = columns.word_counts(name, rows)
    mostly = numbers_among(
        unique,
        counts,
        lambda chosen: (
            columns.rows_where(name, chosen) if rows is None else np.intersect1d(columns.rows_where(name, chosen), rows)
        ),
    )
    if mostly is not None:
        bad, numbers, present = mostly
        word = columns.cell(name, int(bad[0]))
        others = sorted({cell for cell in unique.tolist() if cell and not _is_number(cell)} - {word})
        also = f" (and {', '.join(map(repr, others[:3]))}{' …' if len(others) > 3 else ''})" if others else ""
        raise DataError(
            f"{columns.path}:{columns.line(int(bad[0]))}: target {name!r} has {word!r}{also}, which is "
            f"not a number, though {numbers} of its {present} values are; if {word!r} marks a missing "
            f"value, add it to data.na_values (data.na_values: [{json.dumps(word)}]) and set "
            f"data.columns.{name}.missing: drop to skip those rows; to predict classes, set task: classification"
        )
    try:
        distinct = unique.astype(np.float64)
    except ValueError:
        return "classification"
    return task_of(distinct, n_rows)


def class_labels(columns: Columns, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """The distinct class labels of a target among ``rows`` (all when None), sorted as text.
    Labels are canonical: '1', '1.0' and ' 1' are one class."""
    return _spelled(columns, name, rows)[0]


def _spelled(columns: Columns, name: str, rows):
    """(the labels, each distinct cell's or number's label, the distinct numbers or None)."""
    if name in columns.categories:
        words = columns.categories[name][1]
        used = columns.word_counts(name, rows)[2] >= 0
        spelled = np.array([canonical_label(word) for word in words.tolist()], dtype=str)
        return np.unique(spelled[used]), spelled, None
    values = columns.numbers(name)
    distinct = distinct_numbers(values, rows)
    assert distinct is not None
    spelled = np.array([canonical_number(float(value)) for value in distinct], dtype=str)
    return np.unique(spelled), spelled, distinct


def target_classes(columns: Columns, name: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(``class_labels``, and each row's index among them)."""
    labels, spelled, distinct = _spelled(columns, name, rows)
    if distinct is None:
        return labels, _gather(np.searchsorted(labels, spelled), columns.categories[name][0], rows, len(labels))
    values = columns.numbers(name)
    count = len(values) if rows is None else len(rows)
    of_value = np.searchsorted(labels, spelled)
    indices = np.empty(count, dtype=_index_type(len(labels)))
    for begin in range(0, count, _ROWS):
        chunk = np.asarray(values[_block(rows, begin, count)])
        indices[begin : begin + len(chunk)] = of_value[np.searchsorted(distinct, chunk)]
    return labels, indices


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _index_type(n_labels: int):
    return np.int16 if n_labels < 2**15 else np.int32


def _gather(of_code: np.ndarray, codes: np.ndarray, rows, n_labels: int) -> np.ndarray:
    """``of_code[codes[rows]]``, a block of rows at a time, in the smallest integer type."""
    count = len(codes) if rows is None else len(rows)
    indices = np.empty(count, dtype=_index_type(n_labels))
    for begin in range(0, count, _ROWS):
        chunk = codes[begin : begin + _ROWS] if rows is None else codes[rows[begin : begin + _ROWS]]
        indices[begin : begin + len(chunk)] = of_code[np.asarray(chunk)]
    return indices
