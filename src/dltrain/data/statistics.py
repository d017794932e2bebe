"""The scaling statistics, fitted on the training rows: each model input's (standard: mean and
standard deviation; minmax: minimum and range; one-hot and 0/1 inputs stay as they are) and each
regression target's (data.target_scale: standard). Computed in float64, numeric columns in blocks
of rows, so no copy of the training matrix is made."""

from __future__ import annotations

import numpy as np

from .columns import STATISTICS_ROWS, date_inputs, no_values
from .parsed import Columns

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FILLED = ("mean", "median", "mode")
FILL_ROWS = STATISTICS_ROWS * 8  # rows per block of the fills' and target scaling's passes
FILL_BYTES = 32 << 20  # the training values of the columns whose median or mode is taken together


def input_scaling(columns: Columns, encodings: list, scale: str, train_rows: np.ndarray):
    """(offset, divisor), float32, one of each per model input of ``encodings`` (fitted columns):
    each input is scaled as (x - offset) / divisor."""
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
        inputs = np.array([start for start, _ in numeric])
        low, spread = _numeric_statistics(columns, [encoding for _, encoding in numeric], scale, train_rows)
        _store(offset, divisor, inputs, low, spread)
    return offset, divisor


def _numeric_statistics(columns: Columns, encodings: list, scale: str, train_rows: np.ndarray):
    positions = columns.numeric_positions([encoding.name for encoding in encodings])
    fills = np.array([np.nan if encoding.fill is None else encoding.fill for encoding in encodings], dtype=np.float32)
    every_column = positions == list(range(columns.matrix.shape[1]))
    any_fill = bool(np.any(~np.isnan(fills)))

    def blocks():
        for begin in range(0, len(train_rows), STATISTICS_ROWS):
            chunk = train_rows[begin : begin + STATISTICS_ROWS]
            block = columns.matrix[chunk] if every_column else columns.matrix[np.ix_(chunk, positions)]
            if any_fill:
                block = np.where(np.isnan(block), fills, block)
            yield block

    if scale == "standard":
        total = sum(np.add.reduce(block, axis=0, dtype=np.float64) for block in blocks())
        offset = total / len(train_rows)
        divisor = np.sqrt(sum(np.add.reduce((block - offset) ** 2, axis=0) for block in blocks()) / len(train_rows))
        return offset, divisor
    extremes = [(block.min(axis=0), block.max(axis=0)) for block in blocks()]
    offset = np.minimum.reduce([low for low, _ in extremes]).astype(np.float64)
    return offset, np.maximum.reduce([high for _, high in extremes]).astype(np.float64) - offset


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


def numeric_fills(columns: Columns, encodings: list, train_rows: np.ndarray) -> dict:
    """{name: fill} of the numeric columns whose missing policy is mean, median or mode, over the
    training rows. Means come from one pass over the rows for all such columns together (float64
    sums, a block of rows at a time); a median or mode from the column's training values,
    gathered a few columns at a time."""
    fills: dict = {}
    wanted = [encoding for encoding in encodings if encoding.type == "numeric" and encoding.missing in _FILLED]
    means = [encoding.name for encoding in wanted if encoding.missing == "mean"]
    if means:
        fills.update(zip(means, _means(columns, means, train_rows)))
    others = [encoding for encoding in wanted if encoding.missing != "mean"]
    group = max(1, FILL_BYTES // (4 * max(len(train_rows), 1)))
    for first in range(0, len(others), group):
        chosen = others[first : first + group]
        gathered = _gathered(columns, [encoding.name for encoding in chosen], train_rows)
        for index, encoding in enumerate(chosen):
            present = gathered[:, index][~np.isnan(gathered[:, index])].astype(np.float64)
            if present.size == 0:
                raise no_values(columns, encoding.name, encoding.missing)
            if encoding.missing == "median":
                fills[encoding.name] = float(np.median(present))
            else:
                unique, counts = np.unique(present, return_counts=True)
                fills[encoding.name] = float(unique[np.argmax(counts)])
    for encoding in means:
        if not np.isfinite(fills[encoding]):
            raise no_values(columns, encoding, "mean")
    return fills


def _means(columns: Columns, names: list, train_rows: np.ndarray) -> np.ndarray:
    sums, counts = np.zeros(len(names)), np.zeros(len(names), dtype=np.int64)
    for begin in range(0, len(train_rows), FILL_ROWS):
        block = _gathered(columns, names, train_rows[begin : begin + FILL_ROWS])
        present = ~np.isnan(block)
        sums += np.add.reduce(np.where(present, block, 0), axis=0, dtype=np.float64)
        counts += present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


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
