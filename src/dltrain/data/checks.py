"""Which rows a CSV's data can use (``checked_rows``): rows skipped under ``missing: drop``, and
the earliest cell that cannot be used (empty, infinite, not a date, not true/false) as one
error naming its line and column.

Everything here is decided row by row, so the table is checked a block of rows at a time (one
pass over the numbers, whatever their number of columns), in memory or on disk alike, and the
first block holding a problem holds the earliest one."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .columns import boolean_words, parsed_dates
from .parsed import BLOCK_ROWS, Columns

CHECK_ROWS = BLOCK_ROWS * 8


class _Problems:
    """The first unusable cell of one block, as (row, column position, message); -1: a target."""

    def __init__(self):
        self.found: list[tuple[int, int, str]] = []

    def first(self, mask: np.ndarray, keep: np.ndarray | None, begin: int, position: int, message):
        """Record the first row of ``mask`` among the kept rows; ``message(row)`` says what is wrong."""
        if keep is not None:
            mask = mask & keep
        hits = np.flatnonzero(mask)
        if hits.size:
            row = begin + int(hits[0])
            self.found.append((row, position, message(row)))


def checked_rows(columns: Columns, encodings: list, targets: list, target_missing: str, mode: str, whole=True):
    """Rows to keep after ``drop`` policies (None: every row); the earliest cell that cannot be
    used is a DataError. ``mode``: 'train' and 'labelled' drop rows under ``drop``; 'predict'
    never drops a row (an empty cell there is an error instead). ``whole``: the columns are a
    whole file's, where no row left is an error (not a chunk's, read a chunk at a time)."""
    plan = _Plan(columns, encodings, targets, target_missing, mode)
    index_type = row_type(columns.n_rows)
    kept: list = []  # each block's kept rows, or (begin, stop) where it keeps all: no row numbers held
    dropped = False
    for begin in range(0, columns.n_rows, CHECK_ROWS):
        stop = min(begin + CHECK_ROWS, columns.n_rows)
        problems = _Problems()
        drop = plan.dropped(begin, stop, problems)
        keep = ~drop if drop is not None else None
        plan.feature_problems(begin, stop, keep, problems)
        plan.target_problems(begin, stop, keep, problems)
        if problems.found:
            row, _, message = min(problems.found, key=lambda problem: (columns.line(problem[0]), problem[1]))
            raise DataError(f"{columns.path}:{columns.line(row)}: {message}")
        if keep is None or keep.all():
            kept.append((begin, stop))
        else:
            dropped = True
            kept.append((np.flatnonzero(keep) + begin).astype(index_type))
    if not dropped:
        return None
    rows = np.concatenate(
        [np.arange(*block, dtype=index_type) if isinstance(block, tuple) else block for block in kept]
    )
    if rows.size == 0 and whole:
        raise DataError(f"{columns.path}: every row has an empty cell in a column with missing: drop; no rows are left")
    return rows


def row_type(n_rows: int):
    """The integer type of row numbers below ``n_rows``: 4 bytes where they fit."""
    return np.int32 if n_rows < 2**31 else np.int64


class _Plan:
    """What to look at in each block: the numeric features in the matrix, the others, the targets."""

    def __init__(self, columns: Columns, encodings: list, targets: list, target_missing: str, mode: str):
        self.columns, self.encodings, self.targets = columns, encodings, targets
        self.target_missing, self.mode = target_missing, mode
        self.in_matrix = [
            (position, encoding) for position, encoding in enumerate(encodings) if columns.is_numeric(encoding.name)
        ]
        self.positions = np.array(
            columns.numeric_positions([encoding.name for _, encoding in self.in_matrix]), dtype=np.intp
        )
        # Columns side by side in the matrix are a view of it, not a copy of the block.
        side_by_side = len(self.positions) and np.array_equal(np.diff(self.positions), np.ones(len(self.positions) - 1))
        self.columns_at = slice(self.positions[0], self.positions[-1] + 1) if side_by_side else self.positions
        self.missing_words: dict = {}  # text column -> which of its words is empty
        self.other_words = {
            encoding.name: boolean_words(columns.categories[encoding.name][1])[1]
            for encoding in encodings
            if encoding.type == "boolean" and encoding.name in columns.categories
        }
        self.block: dict = {}
        self.infinite: set = set()

    def _plain(self, name: str) -> bool:
        """A numeric column of the matrix without NaN or inf in this block: nothing to look at."""
        return name not in self.block and self.columns.is_numeric(name)

    def _missing(self, name: str, begin: int, stop: int) -> np.ndarray:
        columns = self.columns
        if name in columns.categories:
            if name not in self.missing_words:
                self.missing_words[name] = columns.categories[name][1] == ""
            return self.missing_words[name][np.asarray(columns.categories[name][0][begin:stop])]
        if name in self.block:
            return np.isnan(self.block[name])
        return np.isnan(np.asarray(columns.numbers(name)[begin:stop]))

    def dropped(self, begin: int, stop: int, problems: _Problems) -> np.ndarray | None:
        """The block's rows that ``drop`` policies skip (None: none); in predict mode, a problem instead."""
        columns = self.columns
        numbers = columns.matrix[begin:stop, self.columns_at] if len(self.positions) else np.empty((stop - begin, 0))
        # The block's numbers looked at together: only columns holding NaN or inf are looked at alone.
        # A column's sum in float64 is NaN or inf exactly where the column holds one (float32's
        # largest times any row count stays finite in float64): one pass, no mask of the block.
        suspect = ~np.isfinite(np.add.reduce(numbers, axis=0, dtype=np.float64))
        self.block = {
            encoding.name: numbers[:, index] for index, (_, encoding) in enumerate(self.in_matrix) if suspect[index]
        }
        # Of those, the columns holding an infinite number: one pass over the block, not one
        # strided pass per column (a file with empty cells has NaN in most columns of a block).
        infinite = np.asarray(np.isinf(numbers).any(axis=0)) if suspect.any() else suspect
        self.infinite = {encoding.name for index, (_, encoding) in enumerate(self.in_matrix) if infinite[index]}
        drop = None
        for position, encoding in enumerate(self.encodings):
            if encoding.missing != "drop" or self._plain(encoding.name):
                continue
            mask = self._missing(encoding.name, begin, stop)
            if self.mode == "predict":
                problems.first(
                    mask,
                    None,
                    begin,
                    position,
                    lambda row, name=encoding.name: (
                        f"column {name!r} is empty (a missing value); the model was "
                        "trained without such rows (missing: drop), so it cannot predict this one; fill the cell in"
                    ),
                )
            elif mask.any():
                drop = mask if drop is None else drop | mask
        for name in self.targets:
            mask = self._missing(name, begin, stop)
            if not mask.any():
                continue
            if self.target_missing == "drop":
                drop = mask if drop is None else drop | mask
            else:
                problems.first(
                    mask,
                    None,
                    begin,
                    -1,
                    lambda row, name=name: (
                        f"target {name!r} is empty (a missing value); fill it in, or "
                        f"set data.columns.{name}.missing: drop to skip rows without a target"
                    ),
                )
        return drop

    def feature_problems(self, begin: int, stop: int, keep, problems: _Problems) -> None:
        """The first unusable cell of each feature among the block's kept rows."""
        columns = self.columns
        for position, encoding in enumerate(self.encodings):
            name = encoding.name
            if self._plain(name):
                continue
            if encoding.missing == "error":
                advice = (
                    f"fill it in, or set data.columns.{name}.missing (drop, mean, median, mode or constant)"
                    if self.mode == "train"
                    else "the model was trained without missing values in this column; fill it in"
                )
                problems.first(
                    self._missing(name, begin, stop),
                    keep,
                    begin,
                    position,
                    lambda row, name=name, advice=advice: f"column {name!r} is empty (a missing value); {advice}",
                )
            if name in self.block and name not in self.infinite:
                continue  # a matrix column with empty cells but nothing infinite
            if name not in columns.categories:
                values = self.block[name] if name in self.block else np.asarray(columns.numbers(name)[begin:stop])
                problems.first(
                    np.isinf(values),
                    keep,
                    begin,
                    position,
                    lambda row, name=name, values=values, begin=begin: (
                        f"column {name!r} has {float(values[row - begin])!r}; features must be finite numbers"
                    ),
                )
            elif encoding.type == "date":
                problems.first(
                    parsed_dates(columns, encoding).bad[begin:stop],
                    keep,
                    begin,
                    position,
                    lambda row, encoding=encoding: not_a_date(columns, encoding, row, self.mode),
                )
            elif encoding.type == "boolean":
                codes = np.asarray(columns.categories[name][0][begin:stop])
                problems.first(
                    self.other_words[name][codes],
                    keep,
                    begin,
                    position,
                    lambda row, name=name: (
                        f"column {name!r} has {columns.cell(name, row)!r}, which is not true/false (or yes/no, 1/0)"
                    ),
                )

    def target_problems(self, begin: int, stop: int, keep, problems: _Problems) -> None:
        for name in self.targets:
            if name not in self.columns.categories:
                values = np.asarray(self.columns.numbers(name)[begin:stop])
                problems.first(
                    np.isinf(values),
                    keep,
                    begin,
                    -1,
                    lambda row, name=name, values=values, begin=begin: (
                        f"target {name!r} has {float(values[row - begin])!r}; targets must be finite"
                    ),
                )


def not_a_date(columns: Columns, encoding, row: int, mode: str) -> str:
    name, cell = encoding.name, columns.cell(encoding.name, row)
    if mode != "train":
        return (
            f"column {name!r} has {cell!r}, which is not a date in the model's format ({encoding.format}); fix the cell"
        )
    return (
        f"column {name!r} has {cell!r}, which is not a date in the format {encoding.format}; fix the cell, "
        f"add it to data.na_values if it marks a missing value, or set data.columns.{name}.format "
        "(or type: categorical)"
    )
