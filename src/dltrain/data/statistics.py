"""The scaling statistics, fitted on the training rows: each model input's (standard: mean and
standard deviation; minmax: minimum and range; one-hot and 0/1 inputs stay as they are) and each
regression target's (data.target_scale: standard). Computed in float64, numeric columns in blocks
of rows, so no copy of the training matrix is made."""

from __future__ import annotations

import numpy as np

from .columns import STATISTICS_ROWS, date_inputs
from .csv import Columns

_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    """(offset, divisor), float64: the mean and standard deviation of each regression target."""
    values = np.column_stack([columns.numbers(name)[train_rows] for name in targets]).astype(np.float64)
    offset = values.mean(axis=0)
    divisor = values.std(axis=0)
    divisor[~(divisor > 0) | ~np.isfinite(divisor)] = 1.0  # a constant target is only shifted
    return offset, divisor
