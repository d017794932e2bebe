"""The scaling statistics, fitted on the training rows: each model input's (standard: mean and
standard deviation; minmax: minimum and range; one-hot and 0/1 inputs stay as they are) and each
regression target's (data.target_scale: standard), and the numeric columns' fills (mean, median,
mode). Computed in float64, numeric columns in blocks of rows, so no copy of the training matrix
is made: one pass over the training rows gives every numeric column's count, mean and extremes of
its present cells (``present_values``; standard scaling adds a pass for the squared deviations),
from which both the mean fills and the scaling of the filled columns follow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .columns import STATISTICS_ROWS, date_inputs, no_values
from .parsed import Columns

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FILLED = ("mean", "median", "mode")
FILL_ROWS = STATISTICS_ROWS * 8  # rows per block of the fills' and target scaling's passes
FILL_BYTES = 32 << 20  # the training values of the columns whose median or mode is taken together
SUMMARY_BYTES = 2 << 20  # a block of float32 training values summarised at a time (fastest: 1-2 MB, measured)


def input_scaling(columns: Columns, encodings: list, scale: str, train_rows: np.ndarray, present=None):
    """(offset, divisor), float32, one of each per model input of ``encodings`` (fitted columns):
    each input is scaled as (x - offset) / divisor. ``present``: the numeric columns'
    ``present_values`` over ``train_rows`` (computed here when not given)."""
    width = sum(encoding.width for encoding in encodings)
    offset, divisor = np.zeros(width, dtype=np.float32), np.ones(width, dtype=np.float32)
    if scale == "none":
        return offset, divisor
    starts = np.cumsum([0] + [encoding.width for encoding in encodings])[:-1]
    for start, encoding in zip(starts, encodings):
        if encoding.type == "date":  # a few inputs per column, computed from its parsed cells
            values = date_inputs(columns, encoding, train_rows).astype(np.float64)
            where = slice(start, start + encoding.width)
            if scale == "standard":
                _store(offset, divisor, where, values.mean(axis=0), values.std(axis=0))
            else:
                low = values.min(axis=0)
                _store(offset, divisor, where, low, values.max(axis=0) - low)
    numeric = [(start, encoding) for start, encoding in zip(starts, encodings) if encoding.type == "numeric"]
    if numeric:
        names = [encoding.name for _, encoding in numeric]
        if present is None:
            present = present_values(columns, names, train_rows, scale)
        fills = np.array([np.nan if encoding.fill is None else encoding.fill for _, encoding in numeric], np.float32)
        low, spread = present.filled(names, fills.astype(np.float64), len(train_rows), scale)
        _store(offset, divisor, np.array([start for start, _ in numeric]), low, spread)
    return offset, divisor


@dataclass
class PresentValues:
    """Numeric columns' present (non-missing) cells over the training rows, each column's: how
    many, their mean, the sum of their squared deviations from it (None when not asked for),
    their minimum and maximum; float64 from the float32 cells (infinite when none)."""

    names: list
    count: np.ndarray
    mean: np.ndarray
    squares: np.ndarray | None
    low: np.ndarray
    high: np.ndarray

    def positions(self, names: list) -> np.ndarray:
        """The places of ``names`` in these statistics."""
        place = {name: index for index, name in enumerate(self.names)}
        return np.array([place[name] for name in names], dtype=np.intp)

    def filled(self, names: list, fills: np.ndarray, n_rows: int, scale: str) -> tuple[np.ndarray, np.ndarray]:
        """(offset, spread) of ``names`` once their empty cells hold ``fills`` (NaN: none, the
        statistics are then NaN): standard, the mean and standard deviation; minmax, the
        minimum and range. The fills' share is added exactly (Chan et al.'s pairwise update)."""
        where = self.positions(names)
        count, mean = self.count[where].astype(np.float64), self.mean[where]
        empty = n_rows - count
        has_empty = empty > 0
        unfilled = has_empty & np.isnan(fills)
        if scale == "standard":
            assert self.squares is not None, "present_values(..., squares=True) for standard scaling"
            weighted = np.where(count > 0, count * mean, 0.0)
            combined = np.where(has_empty, (weighted + empty * np.where(has_empty, fills, 0.0)) / n_rows, mean)
            gap = np.where(count > 0, mean - fills, 0.0)
            squares = self.squares[where] + np.where(has_empty, count * empty / n_rows * gap * gap, 0.0)
            offset, spread = combined, np.sqrt(squares / n_rows)
        else:
            offset = np.where(has_empty, np.fmin(self.low[where], fills), self.low[where])
            spread = np.where(has_empty, np.fmax(self.high[where], fills), self.high[where]) - offset
        offset[unfilled] = np.nan
        spread[unfilled] = np.nan
        return offset, spread


def present_values(columns: Columns, names: list, train_rows: np.ndarray, scale: str) -> PresentValues:
    """The present cells of numeric columns ``names`` over ``train_rows``: counts and means in one
    pass over the rows a block at a time (float64 sums of the float32 cells), with the extremes
    for minmax scaling, and for standard scaling a second pass for the squared deviations."""
    k = len(names)
    count, total = np.zeros(k, dtype=np.int64), np.zeros(k)
    low, high = np.full(k, np.inf), np.full(k, -np.inf)
    for block in _blocks(columns, names, train_rows):
        if scale == "minmax" and len(block):
            np.fmin(low, np.fmin.reduce(block, axis=0), out=low)
            np.fmax(high, np.fmax.reduce(block, axis=0), out=high)
        empty = np.isnan(block)
        if empty.any():
            count += len(block) - np.count_nonzero(empty, axis=0)
            block[empty] = 0.0
        else:
            count += len(block)
        total += np.add.reduce(block, axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    squares = None
    if scale == "standard":
        squares = np.zeros(k)
        for block in _blocks(columns, names, train_rows):
            gaps = block - mean  # float64
            gaps[np.isnan(gaps)] = 0.0  # an empty cell (or a column without values) adds nothing
            squares += np.einsum("ij,ij->j", gaps, gaps)
    return PresentValues(list(names), count, mean, squares, low, high)


def _blocks(columns: Columns, names: list, rows: np.ndarray):
    """float32 (rows, names) blocks of numeric columns' training values, about SUMMARY_BYTES each
    (small enough for the processor's caches: a wide file's blocks hold fewer rows)."""
    positions = columns.numeric_positions(names)
    every = positions == list(range(columns.matrix.shape[1]))
    size = max(64, SUMMARY_BYTES // (4 * max(len(names), 1)))
    for begin in range(0, len(rows), size):
        chunk = rows[begin : begin + size]
        if every:  # a copy of the rows (gathered), in memory
            yield np.asarray(columns.matrix[chunk], dtype=np.float32)
        else:
            yield _gathered(columns, names, chunk)


def _store(offset: np.ndarray, divisor: np.ndarray, inputs, low: np.ndarray, spread: np.ndarray):
    spread = np.array(spread, dtype=np.float64)
    spread[~(spread > 0) | ~np.isfinite(spread)] = 1.0  # a constant column becomes 0, never NaN
    offset[inputs] = low
    divisor[inputs] = np.minimum(spread, _FLOAT32_MAX)  # a range beyond float32 (-3e38 to 3e38) stays finite


def target_scaling(columns: Columns, targets: list, train_rows: np.ndarray):
    """(offset, divisor), float64: the mean and standard deviation of each regression target, in
    two passes over the training rows a block at a time (one block: exactly NumPy's mean and std)."""
    blocks = [(begin, train_rows[begin : begin + FILL_ROWS]) for begin in range(0, len(train_rows), FILL_ROWS)]

    def values(chunk):
        return np.column_stack([np.asarray(columns.numbers(name)[chunk]) for name in targets]).astype(np.float64)

    offset = sum(np.add.reduce(values(chunk), axis=0) for _, chunk in blocks) / len(train_rows)
    squares = sum(np.add.reduce((values(chunk) - offset) ** 2, axis=0) for _, chunk in blocks)
    divisor = np.sqrt(squares / len(train_rows))
    divisor[~(divisor > 0) | ~np.isfinite(divisor)] = 1.0  # a constant target is only shifted
    return offset, divisor


def numeric_fills(columns: Columns, encodings: list, train_rows: np.ndarray, present=None) -> dict:
    """{name: fill} of the numeric columns whose missing policy is mean, median or mode, over the
    training rows. Means from ``present`` (the numeric columns' ``present_values``; computed here
    when not given); a median or mode from the column's training values, gathered a few columns
    at a time."""
    fills: dict = {}
    wanted = [encoding for encoding in encodings if encoding.type == "numeric" and encoding.missing in _FILLED]
    means = [encoding.name for encoding in wanted if encoding.missing == "mean"]
    if means:
        present = present or present_values(columns, means, train_rows, "none")
        for name, index in zip(means, present.positions(means)):
            if not present.count[index] or not np.isfinite(present.mean[index]):
                raise no_values(columns, name, "mean")
            fills[name] = float(present.mean[index])
    others = [encoding for encoding in wanted if encoding.missing != "mean"]
    group = max(1, FILL_BYTES // (4 * max(len(train_rows), 1)))
    for first in range(0, len(others), group):
        chosen = others[first : first + group]
        gathered = _gathered(columns, [encoding.name for encoding in chosen], train_rows)
        for index, encoding in enumerate(chosen):
            present_cells = gathered[:, index][~np.isnan(gathered[:, index])].astype(np.float64)
            if present_cells.size == 0:
                raise no_values(columns, encoding.name, encoding.missing)
            if encoding.missing == "median":
                fills[encoding.name] = float(np.median(present_cells))
            else:
                unique, counts = np.unique(present_cells, return_counts=True)
                fills[encoding.name] = float(unique[np.argmax(counts)])
    return fills


def _gathered(columns: Columns, names: list, rows: np.ndarray) -> np.ndarray:
    """float32 (rows, names) of numeric columns, a block of rows at a time."""
    positions = np.array(columns.numeric_positions(names), dtype=np.intp)
    values = np.empty((len(rows), len(names)), dtype=np.float32)
    for begin in range(0, len(rows), FILL_ROWS):
        chunk = rows[begin : begin + FILL_ROWS]
        if len(positions) == len(names):
            values[begin : begin + len(chunk)] = columns.matrix[np.ix_(chunk, positions)]
        else:
            for index, name in enumerate(names):
                values[begin : begin + len(chunk), index] = np.asarray(columns.numbers(name))[chunk]
    return values
