"""The parsed columns of one CSV (``Columns``): numbers in a float32 matrix, targets in float64,
text columns as integer codes into a vocabulary, and the line where each row starts.

The arrays may be in memory or file-backed (the on-disk store, store.py: its matrix is read a
block of rows at a time, in whatever compact type it is kept in). A text column is held as codes
and words; its cells as one array of str are made only when asked for (``columns.text[name]``),
as a million rows of text take far more memory than their codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .store import StoreMatrix

BLOCK_ROWS = 8192  # rows per block when statistics or row moves stream through a matrix


class _TextColumns:
    """Each text column as str cells, as (codes, words), or both: each made from the other on
    first use and kept."""

    def __init__(self, cells: dict, coded: dict):
        self.cells = dict(cells)
        self.coded = dict(coded)
        self.names = list(dict.fromkeys([*cells, *coded]))

    def values(self, name: str) -> np.ndarray:
        if name not in self.cells:
            codes, words = self.coded[name]
            self.cells[name] = words[np.asarray(codes)]
        return self.cells[name]

    def codes(self, name: str) -> tuple:
        if name not in self.coded:
            words, inverse = np.unique(self.cells[name], return_inverse=True)
            self.coded[name] = (inverse.reshape(-1).astype(np.int32), words)
        return self.coded[name]


class _View(Mapping):
    """A read-only mapping of the text columns' names to one of their forms."""

    def __init__(self, columns: _TextColumns, get):
        self._columns, self._get = columns, get

    def __getitem__(self, name):
        if name not in self._columns.coded and name not in self._columns.cells:
            raise KeyError(name)
        return self._get(name)

    def __iter__(self):
        return iter(self._columns.names)

    def __len__(self):
        return len(self._columns.names)

    def __contains__(self, name):
        return name in self._columns.cells or name in self._columns.coded


@dataclass
class Columns:
    """The requested columns of one CSV: numbers in a float32 matrix, targets in float64, text as
    codes into a vocabulary (``categories``) or str cells (``text``: "" marks a missing cell)."""

    path: Path
    lines: np.ndarray  # the line number where each row starts
    numeric_names: list[str]
    matrix: np.ndarray | StoreMatrix  # float32 (rows, len(numeric_names)); NaN marks a missing cell
    wide: dict = field(default_factory=dict)  # name -> float64 column (targets keep full precision)
    text: Mapping = field(default_factory=dict)  # name -> str column, stripped; "" marks a missing cell
    integral: bool = False  # every numeric cell was parsed as an integer
    # Text columns already read as dates, by (name, format): several steps need them.
    parsed: dict = field(default_factory=dict, repr=False, compare=False)
    # Text columns as codes: name -> (int codes, the distinct words), so that their distinct values
    # take a count of codes, not a sort of millions of strings. Every text column has both forms.
    categories: Mapping = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        # Lookups by name go through a dict: a file may have a million columns.
        self._positions = dict(zip(self.numeric_names, range(len(self.numeric_names))))
        source = self.text._columns if isinstance(self.text, _View) else _TextColumns(self.text, self.categories)
        self.text = _View(source, source.values)
        self.categories = _View(source, source.codes)

    @property
    def n_rows(self) -> int:
        return int(self.lines.shape[0])

    def numbers(self, name: str) -> np.ndarray:
        """A numeric column (a view into the matrix, or a float64 target column)."""
        if name in self.wide:
            return self.wide[name]
        return self.matrix[:, self.numeric_position(name)]

    def numeric_position(self, name: str) -> int:
        """The matrix column of a numeric column."""
        return self._positions[name]

    def is_numeric(self, name: str) -> bool:
        return name in self._positions

    def numeric_positions(self, names) -> list[int]:
        """Matrix columns of those ``names`` that are numeric, in order."""
        positions = self._positions
        return [positions[name] for name in names if name in positions]

    def kind(self, name: str) -> str:
        return "text" if name in self.text else "numeric"

    def line(self, row: int) -> int:
        return int(self.lines[row])

    def cell(self, name: str, row: int) -> str:
        """One text cell (without making the column's cells)."""
        codes, words = self.categories[name]
        return str(words[int(codes[row])])

    def word_counts(self, name: str, rows: np.ndarray | None = None):
        """(the sorted distinct cells of a text column among ``rows`` (all when None), their
        counts, and each code's place among them (-1: not among ``rows``))."""
        codes, words = self.categories[name]
        if rows is None:
            counts = _code_counts(codes, len(words))
        else:
            counts = np.zeros(len(words), dtype=np.int64)
            for begin in range(0, len(rows), BLOCK_ROWS * 16):
                counts += np.bincount(codes[rows[begin : begin + BLOCK_ROWS * 16]], minlength=len(words))
        used = np.flatnonzero(counts)
        order = used[np.argsort(words[used], kind="stable")]
        rank = np.full(len(words), -1, dtype=np.intp)
        rank[order] = np.arange(len(order))
        return words[order], counts[order], rank

    def distinct(self, name: str, rows: np.ndarray | None = None):
        """``np.unique(text column[rows], return_inverse=True, return_counts=True)``: the sorted
        distinct cells, each row's index among them, and their counts."""
        unique, counts, rank = self.word_counts(name, rows)
        codes = self.categories[name][0]
        return unique, rank[codes if rows is None else codes[rows]], counts

    def rows_where(self, name: str, chosen: np.ndarray) -> np.ndarray:
        """The rows whose cell is one of the sorted distinct cells marked in ``chosen`` (a mask
        over ``word_counts``'s words)."""
        codes = self.categories[name][0]
        by_code = chosen[self.word_counts(name)[2]]
        return np.concatenate(
            [begin + np.flatnonzero(by_code[codes[begin : begin + BLOCK_ROWS * 16]]) for begin in _starts(len(codes))]
            or [np.zeros(0, dtype=np.intp)]
        )

    def take(self, rows: np.ndarray) -> "Columns":
        """A copy holding only ``rows`` (in memory)."""
        source = self.text._columns  # type: ignore[attr-defined]
        coded = {name: (np.asarray(codes[rows]), words) for name, (codes, words) in source.coded.items()}
        cells = {name: values[rows] for name, values in source.cells.items() if name not in coded}
        return Columns(
            self.path,
            np.asarray(self.lines[rows]),
            list(self.numeric_names),
            self.matrix[rows],
            {name: np.asarray(values[rows]) for name, values in self.wide.items()},
            cells,
            self.integral,
            categories=coded,
        )


def _starts(n_rows: int) -> range:
    return range(0, n_rows, BLOCK_ROWS * 16)


def _code_counts(codes: np.ndarray, n_words: int) -> np.ndarray:
    """How often each code occurs, a block at a time (file-backed codes are never read whole)."""
    counts = np.zeros(n_words, dtype=np.int64)
    for begin in _starts(len(codes)):
        counts += np.bincount(codes[begin : begin + BLOCK_ROWS * 16], minlength=n_words)
    return counts
