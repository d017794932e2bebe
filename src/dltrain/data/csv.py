"""CSV text to column arrays: dialect detection, a fast path over the bytes, and the plain reader.

A file of MIN_BYTES or more (fastcsv.py) is parsed from its raw bytes by numba kernels, block
by block in threads; any block they cannot parse exactly is handed back to the plain reader
here, which gives the same arrays and every message. The plain reader reads the body in
blocks of whole records: a block of plain numbers is parsed by ``numpy.loadtxt`` (NumPy's C
parser; integers first, which it parses several times faster than floats); a block that
loadtxt refuses (text, empty cells, a ragged row, quotes around a delimiter) is parsed by the
csv module instead, which knows every line number and names the exact cell at fault. Numeric
columns land in one float32 matrix, so loading needs that matrix plus a few blocks of memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from ..errors import DataError, did_you_mean
from ..files import open_regular, text_codec
from . import fastcsv
from .parsed import Columns

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# Cells that mean "no value", as spreadsheets and pandas write them (compared after stripping).
MISSING_TOKENS = frozenset(
    {"", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "-nan", "-NaN", "NULL", "null", "None", "<NA>"}
)
BLOCK_CHARS = 1 << 22
FLOAT32_MAX = float(np.finfo(np.float32).max)
_SAMPLE_CHARS = 1 << 16
_SAMPLE_ROWS = 50


class _Restart(Exception):
    """Columns thought numeric turned out to hold text; read again with them as text."""

    def __init__(self, names):
        super().__init__(names)
        self.names = names


def listed(names, limit: int = 30) -> str:
    """Names for a message, at most ``limit`` of them: a header may have a million."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def _open_csv(path: Path, content: bytes | None, *, not_found=None, text=False, encoding=None, newline=None):
    """A CSV file opened for reading (see files.open_regular), or ``content`` read as if it were that file."""
    if content is not None:
        handle = io.BytesIO(content)
        return io.TextIOWrapper(handle, encoding=encoding, newline=newline) if text else handle
    return open_regular(
        path, DataError, kind="CSV file", not_found=not_found, text=text, encoding=encoding, newline=newline
    )


def is_missing(cell: str) -> bool:
    return cell.strip() in MISSING_TOKENS


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


def _codec(encoding: str) -> str:
    try:
        return text_codec(encoding)
    except ValueError as error:
        raise DataError(str(error)) from None


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
        self._empty_row_lines: set[int] = set()
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
        codec = _codec(encoding)
        sample = _read_sample(path, codec, encoding_setting, content)
        cr_lines = "\r" in sample and "\n" not in sample
        sample = _normalized(sample, cr_lines)
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
            except _Restart as restart:
                gathered.discard()
                moved = set(restart.names)
                numeric = [name for name in numeric if name not in moved]
                wide = [name for name in wide if name not in moved]
                already = set(text)
                text = text + [name for name in restart.names if name not in already]

    def chunks(self, gathered: "Gathered", numeric, wide, text, fixed: dict, plain: bool = False):
        """Parse the body into ``gathered``: a generator that yields once each chunk's rows are in
        place. The fast path (fastcsv.py: the same arrays, parsed from the bytes by numba kernels)
        where it can, else (or with ``plain``) the plain reader: NumPy's loadtxt block by block,
        the csv module where it refuses. fastcsv.NotFast: this file needs the plain reader."""
        self._empty_row_lines.clear()
        size = self.size()
        with _progress(self.path, size) as progress:
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
        return line in self._empty_row_lines

    def parse_block(self, first_line: int, block: str, numeric, wide, text, fixed):
        """A block of whole records (text, line ends as \\n) as the plain reader parses it:
        (numeric values, wide values, line numbers, text cells, integral, lines of empty rows
        kept, the error for a number beyond float32 or None). The fast path's fallback, so
        every message is the plain reader's."""
        before = set(self._empty_row_lines)
        values, wide_values, lines, text_cells, integral, _, problem = self._parse_block(
            first_line, block, block.count("\n"), numeric, wide, text, fixed, True
        )
        return values, wide_values, lines, text_cells, integral, self._empty_row_lines - before, problem

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
            block_numeric = parsed[:, _as_slice(order[: len(numeric)])]
            block_wide = parsed[:, _as_slice(order[len(numeric) :])]
            text_cells = dict(zip(text, text_values))
        else:
            parsed, block_lines, text_cells, integral = self._parse_records(
                block, first_line, numeric + wide, text, fixed
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
            return _open_csv(self.path, self.content)
        except OSError as error:
            raise DataError(f"{self.path}: cannot read ({error.strerror or error})") from None

    def decode_error(self) -> DataError:
        """The error naming the first line that is not valid text in this file's encoding."""
        return _decode_error(self.path, self.encoding, self.encoding_setting, self.content)

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
            with _open_csv(self.path, self.content, text=True, encoding=self.encoding, newline="") as handle:
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
            raise _decode_error(self.path, self.encoding, self.encoding_setting, self.content) from None
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
            yield _normalized("".join(parts), self.cr_lines)

    def _parse_fast(self, block: str, breaks: int, usecols, text_indices, integer: bool, names=()):
        """(numbers, text columns) of a block by NumPy's C parser, or None when it needs the csv module."""
        if self.decimal != "." or block.isspace() or "\n\n" in block or block.startswith("\n"):
            return None  # blank lines would shift the line numbers
        if "\x00" in block:
            return None  # NumPy would drop it silently; the csv module names the cell
        width = len(self.header)
        n_rows = breaks + (not block.endswith("\n"))
        every_column = len(usecols) == width
        if not every_column:
            # loadtxt does not notice extra fields outside usecols: check the field counts here.
            if '"' in block or any(line.count(self.delimiter) != width - 1 for line in block.splitlines()):
                return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            numbers = self._numbers(block, usecols, every_column, integer) if usecols else np.empty((n_rows, 0))
            if numbers is None or numbers.shape[0] != n_rows:
                return None  # a quoted line break: only the csv module knows each row's line
            if not text_indices:
                return numbers, []
            try:  # no quotes here (checked above), so splitting on the delimiter is the csv module's answer
                cells = np.loadtxt(
                    io.StringIO(block),
                    delimiter=self.delimiter,
                    dtype=str,
                    usecols=text_indices,
                    ndmin=2,
                    comments=None,
                    quotechar=None,
                )
            except ValueError:
                return None
        if cells.shape[0] != n_rows:
            return None
        stripped = [np.char.strip(cells[:, index]) for index in range(len(text_indices))]
        if width == 1 and (stripped[0] == "").any():
            return None  # a line of spaces or tabs: blank to the csv module, which skips it
        if not usecols and any(not line.replace(self.delimiter, "").strip() for line in block.splitlines()):
            return None  # a record of empty cells (",,"): the csv module's loop skips it (or keeps it, for predict)
        return numbers, [_missing_as_empty(column, self.missing_tokens(name)) for column, name in zip(stripped, names)]

    def _numbers(self, block: str, usecols, every_column: bool, integer: bool):
        for dtype in (np.int32, np.float64) if integer else (np.float64,):
            try:
                values = np.loadtxt(
                    io.StringIO(block),
                    delimiter=self.delimiter,
                    dtype=dtype,
                    usecols=None if every_column else usecols,
                    ndmin=2,
                    quotechar='"',
                    comments=None,
                )
            except (ValueError, OverflowError):
                continue
            if every_column and values.shape[1] != len(self.header):
                return None
            return values
        return None

    def _refuse_nul(self, records, lines, names):
        """A NUL byte in a used cell is an error: NumPy's strings would drop it, and '1.5\\x00'
        would pass for the number 1.5 in one place and text in another."""
        for position in sorted(self.positions[name] for name in names):
            for record, line in zip(records, lines):
                if "\x00" in record[position]:
                    raise DataError(
                        f"{self.path}:{line}: column {self.header[position]!r} has a NUL byte (\\x00) in "
                        f"{record[position]!r}; the file looks damaged or binary: fix the cell"
                    )

    def _parse_records(self, block: str, first_line: int, numeric_names, text_names, fixed):
        """The block by the csv module: numbers (float64), line numbers, text cells, integral flag."""
        reader = csv.reader(io.StringIO(block), delimiter=self.delimiter)
        records, lines = [], []
        width = len(self.header)
        previous = 0
        try:
            for record in reader:
                line = first_line + previous
                previous = reader.line_num
                if not record or not "".join(record).strip():
                    if not (self.keep_empty_rows and len(record) == width):
                        continue
                    self._empty_row_lines.add(line)
                if len(record) != width:
                    hint = (
                        (
                            f" (the delimiter {DELIMITER_NAMES[self.delimiter]} was detected; set "
                            "data.delimiter if that is wrong)"
                        )
                        if self.detected
                        else ""
                    )
                    raise DataError(
                        f"{self.path}:{line}: row has {len(record)} fields but the header has "
                        f"{width}; fix the row or its quoting{hint}"
                    )
                records.append(record)
                lines.append(line)
        except csv.Error as error:
            raise DataError(
                f"{self.path}:{first_line + previous}: cannot parse the row ({error}); check its quoting"
            ) from None
        if "\x00" in block:
            self._refuse_nul(records, lines, numeric_names + text_names)
        columns = list(zip(*records)) if records else [()] * width
        values = np.empty((len(records), len(numeric_names)), dtype=np.float64)
        integral = True
        discovered = []
        for position, name in enumerate(numeric_names):
            cells = columns[self.positions[name]]
            numbers, bad = to_numbers(cells, self.decimal, self.missing_tokens(name))
            if bad is not None:
                if name in fixed:
                    raise DataError(
                        f"{self.path}:{lines[bad]}: column {name!r} has {cells[bad].strip()!r}, "
                        f"which is not a number; {fixed[name]}"
                    )
                discovered.append(name)
                continue
            values[:, position] = numbers
            if integral:
                finite = numbers[np.isfinite(numbers)]
                integral = bool(np.all(finite == np.round(finite)))
        if discovered:
            raise _Restart(discovered)
        text_cells = {name: to_text(columns[self.positions[name]], self.missing_tokens(name)) for name in text_names}
        return values, np.asarray(lines, dtype=np.int64), text_cells, integral


class Gathered:
    """Rows gathered into arrays that grow when needed: numbers in a float32 matrix and a
    float64 one, line numbers, and text as codes into one vocabulary per column (the fast
    path's kernels write into these arrays directly). In memory, every row is kept; the on-disk
    store and the streaming readers (store.py, stream.py) take each chunk's rows away instead."""

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


_READ_PROGRESS: ContextVar = ContextVar("dltrain_read_progress", default=None)


@contextmanager
def reading_progress(start):
    """Report the reading of each CSV file while in this context: ``start(path, total_bytes)``
    returns a context manager that gives a function called with the bytes read so far (report.py
    draws a bar on a terminal; the data package itself never prints)."""
    token = _READ_PROGRESS.set(start)
    try:
        yield
    finally:
        _READ_PROGRESS.reset(token)


@contextmanager
def _progress(path: Path, size: int):
    start = _READ_PROGRESS.get()
    if start is None:
        yield lambda done: None
        return
    with start(path, size) as update:
        yield update


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


def _as_slice(positions: list):
    """A slice for ascending consecutive positions (a view, no copy), else the list itself."""
    if positions and positions == list(range(positions[0], positions[0] + len(positions))):
        return slice(positions[0], positions[0] + len(positions))
    return positions if positions else slice(0, 0)


def _grow(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.empty((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


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


def _missing_as_empty(cells: np.ndarray, tokens: frozenset = MISSING_TOKENS) -> np.ndarray:
    cells = cells.reshape(-1)
    cells[np.isin(cells, list(tokens))] = ""
    return cells


def count_lines(path: Path, content: bytes | None = None) -> int:
    """An upper bound on the number of records: line breaks of any style, plus one."""
    counts = {b"\n": 0, b"\r": 0}
    try:
        for separator in counts:  # \r only for old Mac files, which have no \n at all
            with _open_csv(path, content) as handle:
                while chunk := handle.read(1 << 22):
                    counts[separator] += chunk.count(separator)
            if counts[separator]:
                break
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    return max(counts.values()) + 1


def _normalized(text: str, cr_lines: bool) -> str:
    """Line breaks as \\n. A lone \\r ends a line only in a file without \\n (old Mac files);
    elsewhere it is a stray character inside a line, read as a space, so line numbers and
    field counts stay those an editor shows."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n" if cr_lines else " ")


def _read_sample(path: Path, codec: str, encoding_setting: str = "data.encoding", content: bytes | None = None) -> str:
    """The start of the file as text: whole lines, enough to see the header and the dialect."""
    try:
        with _open_csv(
            path, content, not_found=f"{path}: file not found", text=True, encoding=codec, newline=""
        ) as handle:
            sample = handle.read(_SAMPLE_CHARS)
            while len(sample) >= _SAMPLE_CHARS and not sample.endswith(("\n", "\r")):
                more = handle.readline()
                if not more:
                    break
                sample += more
            return sample
    except UnicodeError:
        raise _decode_error(path, codec, encoding_setting, content) from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _decode_error(
    path: Path, codec: str, encoding_setting: str = "data.encoding", content: bytes | None = None
) -> DataError:
    """Name the first line that is not valid text in ``codec``."""
    decoder = codecs.getincrementaldecoder(codec)()
    with _open_csv(path, content) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as error:
                shown = codec.replace("-sig", "")
                where = (
                    f"byte {raw[error.start]:#04x} at column {error.start + 1}"
                    if 0 <= error.start < len(raw)
                    else str(error.reason)
                )
                return DataError(
                    f"{path}:{line_number}: not {shown} text ({where}); save the file as UTF-8, or set "
                    f"{encoding_setting} (e.g. latin-1 or cp1252)"
                )
            except UnicodeError as error:  # e.g. UTF-16 without its byte-order mark
                return DataError(
                    f"{path}:{line_number}: not {codec} text ({error}); save the file as UTF-8, or set "
                    f"{encoding_setting} (e.g. latin-1 or cp1252)"
                )
    return DataError(f"{path}: not {codec} text; save the file as UTF-8 or set {encoding_setting}")


def detect_delimiter(sample: str) -> str:
    """The delimiter among , ; tab | that splits the sample's rows into equal numbers of fields."""
    rows_text = sample.splitlines()[: _SAMPLE_ROWS + 1]
    best, best_score = ",", (False, 1)
    for delimiter in DELIMITERS:
        try:
            rows = [row for row in csv.reader(rows_text, delimiter=delimiter) if "".join(row).strip()]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        # The last sampled row may be cut short or hold a quoted line break; it does not vote.
        consistent = all(len(row) == width for row in rows[1:-1] or rows[1:])
        score = (consistent, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best
