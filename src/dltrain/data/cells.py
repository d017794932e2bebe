"""What a CSV cell means: the markers of a missing value, a column's cells as numbers or as text,
whether a column is mostly numbers, and the numbers float32 cannot hold."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

# Cells that mean "no value", as spreadsheets and pandas write them (compared after stripping).
MISSING_TOKENS = frozenset(
    {"", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "-nan", "-NaN", "NULL", "null", "None", "<NA>"}
)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def na_tokens(values) -> frozenset:
    """Extra missing-value markers (``data.na_values``) as the stripped cells they match."""
    return frozenset(str(value).strip() for value in values or ())


def _number_or_none(token: str) -> float | None:
    try:
        number = float(token)
    except ValueError:
        return None
    return None if number != number else number  # "nan" is missing already


def numeric_markers(tokens) -> list[float]:
    """The markers that are numbers (``na_values: ["-999"]``): cells of that value are missing."""
    return [number for number in map(_number_or_none, tokens) if number is not None]


def mostly_numbers(values: np.ndarray, distinct=None):
    """(indices of the non-numbers, numbers, non-missing) when at least half the cells are numbers.

    ``distinct``: ``np.unique(values, return_inverse=True, return_counts=True)`` if known."""
    unique, inverse, counts = distinct or np.unique(values, return_inverse=True, return_counts=True)
    return numbers_among(unique, counts, lambda chosen: np.flatnonzero(chosen[inverse.reshape(-1)]))


def numbers_among(unique: np.ndarray, counts: np.ndarray, rows_of):
    """``mostly_numbers`` from a column's distinct cells and their counts; ``rows_of(mask)`` gives
    the rows whose cell is one of the distinct cells marked in ``mask``."""
    numeric = np.zeros(unique.size, dtype=bool)
    for index, word in enumerate(unique):
        try:
            float(word)
            numeric[index] = word != ""
        except ValueError:
            pass
    present = unique != ""
    n_numbers, n_present = int(counts[numeric].sum()), int(counts[present].sum())
    if n_present and n_numbers * 2 >= n_present and n_numbers < n_present:
        return rows_of(present & ~numeric), n_numbers, n_present
    return None


def to_numbers(cells, decimal: str = ".", tokens: frozenset = MISSING_TOKENS):
    """(float64 values with NaN for missing cells, index of the first non-number or None)."""
    if decimal == ".":
        try:
            return np.array(cells, dtype=np.float64).reshape(-1), None
        except ValueError:
            pass
    values = np.empty(len(cells), dtype=np.float64)
    for index, cell in enumerate(cells):
        cell = cell.strip()
        if cell in tokens:
            values[index] = np.nan
            continue
        if decimal != ".":
            if "." in cell:
                return values, index
            cell = cell.replace(decimal, ".")
        try:
            values[index] = float(cell)
        except ValueError:
            return values, index
    return values, None


def to_text(cells, tokens: frozenset = MISSING_TOKENS) -> np.ndarray:
    """Stripped cells as a str array, with every missing-value token as ""."""
    stripped = [cell.strip() for cell in cells]
    return np.array(["" if cell in tokens else cell for cell in stripped], dtype=str).reshape(-1)


def missing_as_empty(cells: np.ndarray, tokens: frozenset = MISSING_TOKENS) -> np.ndarray:
    """A str array of stripped cells with every missing-value token made "" (in place)."""
    cells = cells.reshape(-1)
    cells[np.isin(cells, list(tokens))] = ""
    return cells


def refuse_beyond_float32(path, values: np.ndarray, lines: np.ndarray, names: list):
    """Finite numbers that float32 (what the model computes in) cannot hold are an error naming the cell."""
    problem = beyond_float32(path, values, lines, names)
    if problem is not None:
        raise problem


def beyond_float32(path, values: np.ndarray, lines: np.ndarray, names: list) -> DataError | None:
    """The error for the first finite number that float32 cannot hold, or None."""
    if values.dtype.kind != "f" or not values.size:
        return None
    with np.errstate(invalid="ignore"):
        beyond = np.abs(values) > FLOAT32_MAX
    if not beyond.any():
        return None
    beyond &= np.isfinite(values)  # inf itself is reported later as a non-finite value
    hits = np.argwhere(beyond)
    if not hits.size:
        return None
    row, column = (int(index) for index in hits[0])
    return DataError(
        f"{path}:{int(lines[row])}: column {names[column]!r} has {values[row, column]:g}, "
        f"beyond the range of float32 (±{FLOAT32_MAX:.3g}) that models compute in; rescale "
        "the column, e.g. change its unit"
    )
