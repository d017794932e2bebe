"""A CSV file read into column arrays: ``CsvFile`` opens it (header, dialect) and reads the
columns asked for, by the fast path or the plain reader.

A file of MIN_BYTES or more (fastcsv.py) is parsed from its raw bytes by numba kernels, block
by block in threads; any block they cannot parse exactly is handed back to the plain reader,
which gives the same arrays and every message. The plain reader reads the body here in blocks
of whole records and parses each (plainreader.py): a block of plain numbers by
``numpy.loadtxt``, a block that loadtxt refuses (text, empty cells, a ragged row, quotes around
a delimiter) by the csv module, which names the exact cell at fault. The rows go into a
Gathered (gathered.py): numeric columns in one float32 matrix, so loading needs that matrix
plus a few blocks of memory. The dialect and the opening of the file: dialect.py; what a cell
means (missing, number, text): cells.py; the progress of a long read: read_progress.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..errors import DataError, did_you_mean
from . import fastcsv, plainreader
from .cells import FLOAT32_MAX, MISSING_TOKENS, beyond_float32, na_tokens, numeric_markers, to_numbers
from .dialect import (
    DELIMITER_NAMES,
    DELIMITERS,
    codec_named,
    count_lines,
    decode_error,
    detect_delimiter,
    normalized,
    open_csv,
    read_sample,
)
from .gathered import Gathered
from .parsed import Columns
from .read_progress import progress_of, reading_progress

# Names importers have long found here (tests, benches); each is defined in the module named above.
__all__ = [
    "BLOCK_CHARS",
    "DELIMITERS",
    "DELIMITER_NAMES",
    "FLOAT32_MAX",
    "MISSING_TOKENS",
    "CsvFile",
    "Gathered",
    "listed",
    "reading_progress",
]

BLOCK_CHARS = 1 << 22  # the plain reader's blocks (characters), ended at a record's end


def listed(names, limit: int = 30) -> str:
    """Names for a message, at most ``limit`` of them: a header may have a million."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


class CsvFile:
    """A CSV file's header and dialect, read before its body is parsed."""

    def __init__(
        self,
        path: Path,
        header: list[str],
        delimiter: str,
        detected: bool,
        encoding: str,
        decimal: str,
        header_lines: int,
        cr_lines: bool = False,
    ):
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self.detected = detected
        self.encoding = encoding
        self.decimal = decimal
        self.header_lines = header_lines
        self.encoding_setting = "data.encoding"
        self.cr_lines = cr_lines  # lines end in a lone \r (old Mac files); else \r inside a line is a space
        self.positions = dict(zip(header, range(len(header))))  # names are distinct
        # A record whose every cell is empty (",,,,") is skipped, like a blank line, unless this
        # is set: then it is a row of missing values, so that each output row (predict) stands
        # for one input row. Trailing ones (a spreadsheet's residue) are dropped either way.
        self.keep_empty_rows = False
        self.empty_row_lines: set[int] = set()  # lines of the rows of empty cells kept
        self.content: bytes | None = None  # the CSV's bytes when it is not read from ``path``
        # Markers of a missing value beyond MISSING_TOKENS (data.na_values): for every column,
        # and per column (data.columns.X.na_values).
        self.na_values: frozenset = frozenset()
        self.column_na_values: dict[str, frozenset] = {}

    def set_na_values(self, every_column=(), per_column: dict | None = None) -> None:
        """Cells (after stripping) that mean "missing" beyond MISSING_TOKENS, read from now on."""
        self.na_values = na_tokens(every_column)
        self.column_na_values = {name: na_tokens(values) for name, values in (per_column or {}).items() if values}

    def missing_tokens(self, name: str) -> frozenset:
        """Every cell text that is a missing value in column ``name``."""
        own = self.column_na_values.get(name)
        if own is None and not self.na_values:
            return MISSING_TOKENS
        return MISSING_TOKENS | self.na_values | (own or frozenset())

    def na_values_key(self) -> list:
        """The markers as plain JSON, for a cache key."""
        return [
            sorted(self.na_values),
            {name: sorted(values) for name, values in sorted(self.column_na_values.items())},
        ]

    @classmethod
    def open(
        cls,
        path,
        delimiter: str | None = None,
        encoding: str = "utf-8",
        decimal: str = ".",
        encoding_setting: str = "data.encoding",
        content: bytes | None = None,
    ) -> "CsvFile":
        """Read the header, detecting the delimiter among , ; tab | unless one is given.

        With ``content`` (a request's body), that text is read instead, ``path`` naming it in messages."""
        path = Path(path)
        codec = codec_named(encoding)
        sample = read_sample(path, codec, encoding_setting, content)
        cr_lines = "\r" in sample and "\n" not in sample
        sample = normalized(sample, cr_lines)
        if not sample.strip():
            raise DataError(f"{path}: the file is empty; a header row of column names is needed")
        detected = delimiter is None
        delimiter = detect_delimiter(sample) if delimiter is None else delimiter
        reader = csv.reader(io.StringIO(sample), delimiter=delimiter)
        try:
            header = next(reader)
            while not "".join(header).strip():
                header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty; a header row of column names is needed") from None
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: cannot read the header ({error})") from None
        header = [name.strip() for name in header]
        if not all(header):
            header = [name or f"column_{index}" for index, name in enumerate(header, start=1)]
        duplicates = []
        if len(set(header)) != len(header):
            positions: dict[str, list[int]] = {}
            for index, name in enumerate(header, start=1):
                positions.setdefault(name, []).append(index)
            duplicates = [
                f"{name!r} (columns {' and '.join(map(str, places))})"
                for name, places in positions.items()
                if len(places) > 1
            ]
        if duplicates:
            raise DataError(
                f"{path}:{reader.line_num}: duplicated column name {', '.join(duplicates)}; "
                "give every column a distinct name"
            )
        table = cls(path, header, delimiter, detected, codec, decimal, reader.line_num, cr_lines)
        table.content = content
        table.encoding_setting = encoding_setting  # where a message tells the user to name the encoding
        return table

    # ------------------------------------------------------------ reading

    def index(self, column: str, role: str = "feature") -> int:
        position = self.positions.get(column)
        if position is None:
            raise self.column_not_found(column, role)
        return position

    def column_not_found(self, column: str, role: str) -> DataError:
        """The error for a missing column; says so when the header was split on the wrong delimiter."""
        hint = ""
        if len(self.header) == 1:
            others = [
                name for mark, name in DELIMITER_NAMES.items() if mark != self.delimiter and mark in self.header[0]
            ]
            if others:
                hint = (
                    f" (the header was read as one column with delimiter {DELIMITER_NAMES[self.delimiter]}, "
                    f"but the file looks {others[0]}-separated)"
                )
        return DataError(
            f"{self.path}:1: {role} column {column!r} not found{hint or did_you_mean(column, self.header)}; "
            f"columns are {listed(self.header)}"
        )

    def read(self, numeric=(), wide=(), text=(), fixed: dict | None = None, sink=None) -> Columns:
        """Read the named columns: ``numeric`` into float32, ``wide`` into float64, ``text`` as str.

        A numeric or wide column that holds text becomes a text column, unless it is in
        ``fixed`` (name -> what to tell the user), where text is a DataError naming the cell.
        ``sink(numeric, wide, text)`` makes the Gathered the rows go into (default: in memory;
        the on-disk store passes its own, which writes each chunk out)."""
        numeric, wide, text = list(numeric), list(wide), list(text)
        fixed = fixed or {}
        unknown = set(numeric).union(wide, text).difference(self.positions)
        if unknown:
            self.index(next(name for name in numeric + wide + text if name in unknown))
        at_start = self._text_at_start([name for name in numeric + wide if name not in fixed])
        if at_start:
            numeric = [name for name in numeric if name not in at_start]
            wide = [name for name in wide if name not in at_start]
            text = text + [name for name in at_start if name not in text]
        plain = False
        while True:
            gathered = (sink or Gathered)(numeric, wide, text)
            try:
                for _ in self.chunks(gathered, numeric, wide, text, fixed, plain):
                    gathered.chunk_read(self)
                return gathered.finish(self)
            except fastcsv.NotFast:
                gathered.discard()
                plain = True
            except plainreader.Restart as restart:
                gathered.discard()
                moved = set(restart.names)
                numeric = [name for name in numeric if name not in moved]
                wide = [name for name in wide if name not in moved]
                already = set(text)
                text = text + [name for name in restart.names if name not in already]

    def _text_at_start(self, names: list) -> list:
        """Of ``names`` (columns asked for as numbers that may turn out to be text), those whose
        first rows already hold text, as the plain reader decides (cells.to_numbers): read as
        text from the start, instead of found in the first block, which is then read again
        (plainreader.Restart). A sample that cannot be parsed here is left to the read."""
        if not names:
            return []
        try:
            sample = read_sample(self.path, self.encoding, self.encoding_setting, self.content)
            lines = normalized(sample, self.cr_lines).split("\n")[self.header_lines : -1]  # the last may be cut
            body = io.StringIO("".join(line + "\n" for line in lines))
            records = [record for record in csv.reader(body, delimiter=self.delimiter) if record]
        except (DataError, csv.Error):
            return []
        width = len(self.header)
        if not records or any(len(record) != width for record in records):
            return []  # a quote open across the cut, a ragged row: the read reports or settles it
        found = []
        for name in names:
            cells = [record[self.positions[name]] for record in records]
            if to_numbers(cells, self.decimal, self.missing_tokens(name))[1] is not None:
                found.append(name)
        return found

    def chunks(self, gathered: "Gathered", numeric, wide, text, fixed: dict, plain: bool = False):
        """Parse the body into ``gathered``: a generator that yields once each chunk's rows are in
        place. The fast path (fastcsv.py: the same arrays, parsed from the bytes by numba kernels)
        where it can, else (or with ``plain``) the plain reader: NumPy's loadtxt block by block,
        the csv module where it refuses. fastcsv.NotFast: this file needs the plain reader."""
        self.empty_row_lines.clear()
        size = self.size()
        with progress_of(self.path, size) as progress:
            if not plain and fastcsv.usable(self, size):
                for done in fastcsv.read_into(self, numeric, wide, text, fixed, gathered):
                    progress(done)
                    yield
                return
            gathered.reserve(count_lines(self.path, self.content))
            integer = True
            done = 0
            for first_line, block, breaks in self._blocks():
                values, wide_values, lines, text_cells, integral, floats, problem = self._parse_block(
                    first_line, block, breaks, numeric, wide, text, fixed, integer
                )
                integer = integer and not floats
                gathered.add(values, wide_values, lines, integral, text_cells, problem)
                done += len(block)  # characters: bytes, near enough for a progress bar
                progress(min(done, size))
                yield

    def empty_row(self, line: int) -> bool:
        """Whether the row starting at ``line`` is a row of empty cells the plain reader kept
        (``keep_empty_rows``)."""
        return line in self.empty_row_lines

    def parse_block(self, first_line: int, block: str, numeric, wide, text, fixed):
        """A block of whole records (text, line ends as \\n) as the plain reader parses it:
        (numeric values, wide values, line numbers, text cells, integral, lines of empty rows
        kept, the error for a number beyond float32 or None). The fast path's fallback, so
        every message is the plain reader's."""
        before = set(self.empty_row_lines)
        values, wide_values, lines, text_cells, integral, _, problem = self._parse_block(
            first_line, block, block.count("\n"), numeric, wide, text, fixed, True
        )
        return values, wide_values, lines, text_cells, integral, self.empty_row_lines - before, problem

    def _parse_block(self, first_line, block, breaks, numeric, wide, text, fixed, integer):
        """(numeric, wide, lines, text cells, integral, whether loadtxt read floats, the error for
        a number beyond float32 or None) of one block."""
        usecols = [self.positions[name] for name in numeric + wide]
        text_indices = [self.positions[name] for name in text]
        fast = self._parse_fast(block, breaks, usecols, text_indices, integer, text)
        floats = False
        if fast is not None:
            parsed, text_values = fast
            # Where each requested column lands in a block parsed by NumPy (every column, in file
            # order, when all are requested; else in usecols order): a slice when contiguous.
            order = usecols if len(usecols) == len(self.header) else list(range(len(usecols)))
            floats = parsed.dtype.kind == "f"
            integral = not floats
            block_lines = np.arange(first_line, first_line + parsed.shape[0])
            block_numeric = parsed[:, plainreader.as_slice(order[: len(numeric)])]
            block_wide = parsed[:, plainreader.as_slice(order[len(numeric) :])]
            text_cells = dict(zip(text, text_values))
        else:
            parsed, block_lines, text_cells, integral = plainreader.by_csv_module(
                self, block, first_line, numeric + wide, text, fixed
            )
            block_numeric, block_wide = parsed[:, : len(numeric)], parsed[:, len(numeric) :]
        # Reported once the whole file is read: a later block may find the column to be text.
        problem = beyond_float32(self.path, block_numeric, block_lines, numeric) or beyond_float32(
            self.path, block_wide, block_lines, wide
        )
        return block_numeric, block_wide, block_lines, text_cells, integral, floats, problem

    def size(self) -> int:
        """The file's size in bytes (0 when it cannot be read)."""
        if self.content is not None:
            return len(self.content)
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def open_bytes(self):
        """The CSV's bytes, opened for reading (see files.open_regular)."""
        try:
            return open_csv(self.path, self.content)
        except OSError as error:
            raise DataError(f"{self.path}: cannot read ({error.strerror or error})") from None

    def decode_error(self) -> DataError:
        """The error naming the first line that is not valid text in this file's encoding."""
        return decode_error(self.path, self.encoding, self.encoding_setting, self.content)

    def numeric_markers_as_missing(self, values: np.ndarray, names: list):
        """A marker that is a number (``na_values: [-999]``) makes the cells of that value missing."""
        if not self.na_values and not self.column_na_values:
            return
        for position, name in enumerate(names):
            markers = numeric_markers(self.na_values | self.column_na_values.get(name, frozenset()))
            if markers:
                column = values[:, position]
                column[np.isin(column, np.asarray(markers, dtype=values.dtype))] = np.nan

    def _blocks(self):
        """(first line number, text, line breaks in it) of consecutive blocks of whole records."""
        try:
            with open_csv(self.path, self.content, text=True, encoding=self.encoding, newline="") as handle:
                skip, line = self.header_lines, 1
                for block in self._chunks(handle):
                    start = 0
                    while skip and start < len(block):  # past the header, and any blank lines before it
                        cut = block.find("\n", start)
                        start = len(block) if cut < 0 else cut + 1
                        skip -= 1
                        line += 1
                    block = block[start:] if start else block
                    if not block:
                        continue
                    breaks = block.count("\n")
                    yield line, block, breaks
                    line += breaks
        except UnicodeError:
            raise decode_error(self.path, self.encoding, self.encoding_setting, self.content) from None
        except OSError as error:
            raise DataError(f"{self.path}: cannot read ({error.strerror or error})") from None

    def _chunks(self, handle):
        """The file's text in blocks of whole lines, line breaks made \\n (see ``_normalized``).

        A block runs on to the end of its last line, and further while a quoted field is
        open; quotes are counted once per piece read, so an unclosed quote costs one pass over
        the rest of the file, not one per line."""
        end = "\r" if self.cr_lines else "\n"
        while True:
            block = handle.read(BLOCK_CHARS)
            if not block:
                return
            parts, last, quotes = [block], block, block.count('"')
            while not last.endswith(end) or quotes % 2:
                last = handle.readline()
                if not last:
                    break
                parts.append(last)
                quotes += last.count('"')
            yield normalized("".join(parts), self.cr_lines)

    def _parse_fast(self, block: str, breaks: int, usecols, text_indices, integer: bool, names=()):
        """(numbers, text columns) of a block by NumPy's C parser, or None when it needs the csv module."""
        return plainreader.by_loadtxt(self, block, breaks, usecols, text_indices, integer, names)
