"""A CSV read for eval or predict a chunk of rows at a time, in bounded memory: each chunk's
columns as the whole file's read gives them (the same reader, the same checks and messages),
handed on as soon as they are parsed and forgotten after.

``read_in_chunks`` hands a consumer each chunk of ``rows`` rows (the last one shorter) through
the reader's ``sink`` (csv.CsvFile.read): the rows parsed so far are settled (missing-value
markers applied; empty rows at the end wait for what follows them), whole chunks are taken
away, and the rest waits for the next part of the file. When the read must start over (a
column thought numeric holds text, or the fast path gives up on the file), the consumer is told
and either gets every row again or only the rows it has not had (``replay``).
``text_chunks`` reads a few columns as text alongside, chunk for chunk (predict's ``--keep``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..errors import DataError
from . import fastcsv
from .csv import CsvFile
from .gathered import Gathered
from .parsed import Columns

FIRST_ROWS = 1 << 16  # rows reserved before the first chunk (the plain reader asks for the whole file's)


@dataclass
class ChunkStream:
    """Where a chunked read stands: the chunk size, the consumer, and the rows handed on."""

    rows: int
    take: Callable[[Columns], None]  # gets each chunk's columns
    replay: bool = False  # on a restart, hand every row on again (after ``on_restart``) instead of the rest
    on_restart: Callable[[], None] = field(default=lambda: None)
    given: int = 0  # rows handed on by this pass over the file

    def restarted(self) -> int:
        """A pass over the file begins: the rows of it to skip (already handed on)."""
        if self.replay and self.given:
            self.on_restart()
            self.given = 0
        return self.given


class _Chunked(Gathered):
    """Rows gathered a chunk at a time: never room for the whole file, and each chunk's rows
    handed on (``hand_on``) and forgotten once whole chunks are parsed."""

    def __init__(self, numeric, wide, text, rows: int):
        super().__init__(numeric, wide, text)
        self.chunk_rows = rows
        self.skip = 0
        self.word_arrays: list[np.ndarray] = [np.zeros(0, dtype=str) for _ in self.text]

    def reserve(self, capacity: int, hint: int = 0) -> None:
        if self.capacity == 0:  # the plain reader reserves the whole file's lines at the start
            capacity = min(capacity, max(FIRST_ROWS, self.chunk_rows))
        super().reserve(capacity)  # and the fast path's hint is the whole file's rows

    def ready_chunks(self, table: CsvFile, final: bool) -> Iterator[Columns]:
        """The whole chunks now parsed (at the end, the rest too), each forgotten once the
        consumer is done with it; rows already handed on in an earlier pass are skipped."""
        if self.problem is not None:  # a number beyond float32: the whole-file read raises it too
            raise self.problem
        ready = self.settle(table)
        skipped = min(self.skip, ready)
        if skipped:
            self.keep_from(skipped)
            self.skip -= skipped
            ready -= skipped
        while ready >= self.chunk_rows or (final and ready > 0):
            count = min(self.chunk_rows, ready)
            yield self.columns(table, count)
            self.keep_from(count)
            ready -= count

    def columns(self, table: CsvFile, count: int) -> Columns:
        """The first ``count`` rows as Columns of their own (copies: the arrays are reused)."""
        return Columns(
            table.path,
            self.lines[:count].copy(),
            self.numeric,
            self.matrix[:count].copy(),
            {name: self.wide_values[:count, index].copy() for index, name in enumerate(self.wide)},
            {},
            self.integral,
            categories={
                name: (self.code_matrix[column, :count].copy(), self.vocabulary(column))
                for column, name in enumerate(self.text)
            },
        )

    def vocabulary(self, column: int) -> np.ndarray:
        """``words(column)``, extended with the words found since the last call rather than made
        anew (a column of distinct IDs would make it once a chunk)."""
        known = self.word_arrays[column]
        words = self.vocabularies[column]
        if len(words) > len(known):
            fresh = np.array(list(words)[len(known) :], dtype=str)
            self.word_arrays[column] = known = np.concatenate([known, fresh]) if len(known) else fresh
        return known


class _ChunkSink(_Chunked):
    """csv.CsvFile.read's sink: each chunk handed to the stream's consumer as it is parsed."""

    def __init__(self, numeric, wide, text, stream: ChunkStream):
        super().__init__(numeric, wide, text, stream.rows)
        self.stream = stream
        self.skip = stream.restarted()

    def chunk_read(self, table: CsvFile) -> None:
        self._hand_on(table, final=False)

    def finish(self, table: CsvFile) -> Columns:
        self._hand_on(table, final=True)
        if self.stream.given == 0:
            raise DataError(f"{table.path}: the file has a header but no data rows")
        return self.columns(table, 0)

    def _hand_on(self, table: CsvFile, final: bool) -> None:
        for columns in self.ready_chunks(table, final):
            self.stream.given += columns.n_rows
            self.stream.take(columns)


def read_in_chunks(table: CsvFile, request: dict, stream: ChunkStream) -> None:
    """Read ``table``'s columns (``request``: csv.CsvFile.read's numeric, wide, text and fixed)
    and hand them to ``stream.take`` a chunk of ``stream.rows`` rows at a time."""
    table.read(**request, sink=partial(_ChunkSink, stream=stream))


def text_chunks(table: CsvFile, names: list, rows: int) -> Iterator[Columns]:
    """Columns ``names`` of ``table`` as text, ``rows`` rows at a time: the same rows, in the
    same chunks, as ``read_in_chunks`` gives when ``table`` reads the same file the same way."""
    given, plain = 0, False
    while True:
        gathered = _Chunked([], [], names, rows)
        gathered.skip = given
        try:
            for _ in table.chunks(gathered, [], [], names, {}, plain):
                for columns in gathered.ready_chunks(table, final=False):
                    given += columns.n_rows
                    yield columns
            for columns in gathered.ready_chunks(table, final=True):
                given += columns.n_rows
                yield columns
            return
        except fastcsv.NotFast:  # the plain reader from the start, skipping the rows already given
            plain = True
