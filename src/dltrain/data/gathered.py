"""Where parsed rows go: ``Gathered``, arrays that grow as a CSV is read (numbers, line numbers,
text as codes into a vocabulary per column), then become the Columns. Both readers write into
it: the plain reader (plainreader.py) block by block, the fast path's kernels (fastcsv.py)
directly into its arrays; the on-disk store and the streaming readers (store.py, chunks.py)
subclass it to take each chunk's rows away instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .parsed import Columns

if TYPE_CHECKING:
    from .csv import CsvFile


class Gathered:
    """Rows gathered into arrays that grow when needed: numbers in a float32 matrix and a
    float64 one, line numbers, and text as codes into one vocabulary per column (the fast
    path's kernels write into these arrays directly). In memory, every row is kept; the on-disk
    store and the streaming readers (store.py, chunks.py) take each chunk's rows away instead."""

    def __init__(self, numeric, wide, text):
        self.numeric, self.wide, self.text = list(numeric), list(wide), list(text)
        self.capacity = 0
        self.rows = 0
        self.settled = 0  # rows whose missing-value markers are applied (see settle)
        self.integral = True
        self.problem: DataError | None = None  # the first number beyond float32, raised at the end
        self.matrix = np.empty((0, len(self.numeric)), dtype=np.float32)
        self.wide_values = np.empty((0, len(self.wide)), dtype=np.float64)
        self.lines = np.empty(0, dtype=np.int64)
        self.empty = np.zeros(0, dtype=np.bool_)  # rows of empty cells, kept for keep_empty_rows
        self.code_matrix = np.empty((len(self.text), 0), dtype=np.int32)
        self.vocabularies: list[dict] = [{} for _ in self.text]

    def reserve(self, capacity: int, hint: int = 0) -> None:
        """Room for ``capacity`` rows in all (``hint`` of them, if more, when the arrays must grow)."""
        if capacity <= self.capacity:
            return
        capacity = max(capacity, hint, self.capacity + self.capacity // 2)
        rows = self.rows
        self.matrix = _grow(self.matrix[:rows], capacity)
        self.wide_values = _grow(self.wide_values[:rows], capacity)
        self.lines = _grow(self.lines[:rows], capacity)
        self.empty = _grow(self.empty[:rows], capacity)
        codes = np.empty((self.code_matrix.shape[0], capacity), dtype=np.int32)
        codes[:, :rows] = self.code_matrix[:, :rows]
        self.code_matrix = codes
        self.capacity = capacity

    def move(self, source: int, target: int, count: int) -> None:
        """Rows source.. to target.. (closing the gap a skipped blank line left)."""
        for values in (self.matrix, self.wide_values, self.lines, self.empty):
            values[target : target + count] = values[source : source + count]
        self.code_matrix[:, target : target + count] = self.code_matrix[:, source : source + count]

    def word_codes(self, column: int, words: list) -> np.ndarray:
        """The codes of ``words`` in text column ``column``'s vocabulary (new words added)."""
        known = self.vocabularies[column]
        return np.array([known.setdefault(word, len(known)) for word in words], dtype=np.int32)

    def add(self, numeric, wide, lines, integral, text_cells, problem=None) -> None:
        """Rows parsed by the plain reader."""
        self.problem = self.problem or problem
        rows, count = self.rows, len(lines)
        if rows + count > self.capacity:
            self.reserve(rows + count)
        with np.errstate(over="ignore"):  # a number beyond float32 is reported at the end (finish)
            self.matrix[rows : rows + count] = numeric
        self.wide_values[rows : rows + count] = wide
        self.lines[rows : rows + count] = lines
        self.empty[rows : rows + count] = False
        self.integral = self.integral and bool(integral)
        for column, name in enumerate(self.text):
            words, inverse = np.unique(text_cells[name], return_inverse=True)
            self.code_matrix[column, rows : rows + count] = self.word_codes(column, words.tolist())[inverse.reshape(-1)]
        self.rows += count

    def chunk_read(self, table: "CsvFile") -> None:
        """A chunk's rows are in place (in memory they stay where they are)."""

    def discard(self) -> None:
        """The read starts over (a column turned out to hold text): forget what was gathered."""

    def settle(self, table: "CsvFile") -> int:
        """Apply the numeric missing-value markers to the rows gathered since the last call, and
        return how many leading rows are final: all of them but the rows of empty cells at the
        end, which wait for a row after them (and are dropped at the end of the file)."""
        rows = self.rows
        while rows and (self.empty[rows - 1] or table.empty_row(int(self.lines[rows - 1]))):
            rows -= 1  # only keep_empty_rows keeps any
        table.numeric_markers_as_missing(self.matrix[self.settled : self.rows], self.numeric)
        table.numeric_markers_as_missing(self.wide_values[self.settled : self.rows], self.wide)
        self.settled = self.rows
        return rows

    def keep_from(self, start: int) -> None:
        """Forget rows before ``start`` (taken away by a streaming reader), keeping the rest."""
        self.move(start, 0, self.rows - start)
        self.rows -= start
        self.settled -= start

    def words(self, column: int) -> np.ndarray:
        """Text column ``column``'s vocabulary, in code order."""
        return np.array(list(self.vocabularies[column]), dtype=str)

    def finish(self, table: "CsvFile") -> Columns:
        """The Columns: trailing empty rows dropped, numeric missing-value markers applied."""
        if self.problem is not None:
            raise self.problem
        rows = self.settle(table)
        if rows == 0:
            raise DataError(f"{table.path}: the file has a header but no data rows")
        return Columns(
            table.path,
            self.lines[:rows],
            self.numeric,
            self.matrix[:rows],
            {name: self.wide_values[:rows, index] for index, name in enumerate(self.wide)},
            {},
            self.integral,
            categories={
                name: (self.code_matrix[column, :rows], self.words(column)) for column, name in enumerate(self.text)
            },
        )


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.empty((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown
