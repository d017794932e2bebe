"""The plain reader's parsing of one block of whole records (text, line ends as \\n): NumPy's
loadtxt for plain numbers (its C parser; integers first, which it parses several times faster
than floats), else the csv module, which knows every line number and names the exact cell at
fault. csv.py feeds it the blocks; the fast path (fastcsv.py) hands it what it cannot parse."""

from __future__ import annotations

import csv
import io
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .cells import missing_as_empty, to_numbers, to_text
from .dialect import DELIMITER_NAMES

if TYPE_CHECKING:
    from .csv import CsvFile


class Restart(Exception):
    """Columns thought numeric turned out to hold text; read again with them as text."""

    def __init__(self, names):
        super().__init__(names)
        self.names = names


def as_slice(positions: list):
    """A slice for ascending consecutive positions (a view, no copy), else the list itself."""
    if positions and positions == list(range(positions[0], positions[0] + len(positions))):
        return slice(positions[0], positions[0] + len(positions))
    return positions if positions else slice(0, 0)


def by_loadtxt(table: CsvFile, block: str, breaks: int, usecols, text_indices, integer: bool, names=()):
    """(numbers, text columns) of a block by NumPy's C parser, or None when it needs the csv module."""
    if table.decimal != "." or block.isspace() or "\n\n" in block or block.startswith("\n"):
        return None  # blank lines would shift the line numbers
    if "\x00" in block:
        return None  # NumPy would drop it silently; the csv module names the cell
    width = len(table.header)
    n_rows = breaks + (not block.endswith("\n"))
    every_column = len(usecols) == width
    if not every_column:
        # loadtxt does not notice extra fields outside usecols: check the field counts here.
        if '"' in block or any(line.count(table.delimiter) != width - 1 for line in block.splitlines()):
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numbers = _numbers(table, block, usecols, every_column, integer) if usecols else np.empty((n_rows, 0))
        if numbers is None or numbers.shape[0] != n_rows:
            return None  # a quoted line break: only the csv module knows each row's line
        if not text_indices:
            return numbers, []
        try:  # no quotes here (checked above), so splitting on the delimiter is the csv module's answer
            cells = np.loadtxt(
                io.StringIO(block),
                delimiter=table.delimiter,
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
    if not usecols and any(not line.replace(table.delimiter, "").strip() for line in block.splitlines()):
        return None  # a record of empty cells (",,"): the csv module's loop skips it (or keeps it, for predict)
    return numbers, [missing_as_empty(column, table.missing_tokens(name)) for column, name in zip(stripped, names)]


def _numbers(table: CsvFile, block: str, usecols, every_column: bool, integer: bool):
    for dtype in (np.int32, np.float64) if integer else (np.float64,):
        try:
            values = np.loadtxt(
                io.StringIO(block),
                delimiter=table.delimiter,
                dtype=dtype,
                usecols=None if every_column else usecols,
                ndmin=2,
                quotechar='"',
                comments=None,
            )
        except (ValueError, OverflowError):
            continue
        if every_column and values.shape[1] != len(table.header):
            return None
        return values
    return None


def _refuse_nul(table: CsvFile, records, lines, names):
    """A NUL byte in a used cell is an error: NumPy's strings would drop it, and '1.5\\x00'
    would pass for the number 1.5 in one place and text in another."""
    for position in sorted(table.positions[name] for name in names):
        for record, line in zip(records, lines):
            if "\x00" in record[position]:
                raise DataError(
                    f"{table.path}:{line}: column {table.header[position]!r} has a NUL byte (\\x00) in "
                    f"{record[position]!r}; the file looks damaged or binary: fix the cell"
                )


def _records(table: CsvFile, block: str, first_line: int):
    """The block's records by the csv module, and the line each starts on; rows of empty cells
    skipped (kept, their lines noted, with ``keep_empty_rows``); a ragged row is an error."""
    reader = csv.reader(io.StringIO(block), delimiter=table.delimiter)
    records, lines = [], []
    width = len(table.header)
    previous = 0
    try:
        for record in reader:
            line = first_line + previous
            previous = reader.line_num
            if not record or not "".join(record).strip():
                if not (table.keep_empty_rows and len(record) == width):
                    continue
                table.empty_row_lines.add(line)
            if len(record) != width:
                hint = (
                    (
                        f" (the delimiter {DELIMITER_NAMES[table.delimiter]} was detected; set "
                        "data.delimiter if that is wrong)"
                    )
                    if table.detected
                    else ""
                )
                raise DataError(
                    f"{table.path}:{line}: row has {len(record)} fields but the header has "
                    f"{width}; fix the row or its quoting{hint}"
                )
            records.append(record)
            lines.append(line)
    except csv.Error as error:
        raise DataError(
            f"{table.path}:{first_line + previous}: cannot parse the row ({error}); check its quoting"
        ) from None
    return records, lines


def by_csv_module(table: CsvFile, block: str, first_line: int, numeric_names, text_names, fixed):
    """The block by the csv module: numbers (float64), line numbers, text cells, integral flag.
    Restart: a numeric column not in ``fixed`` holds text."""
    records, lines = _records(table, block, first_line)
    if "\x00" in block:
        _refuse_nul(table, records, lines, numeric_names + text_names)
    columns = list(zip(*records)) if records else [()] * len(table.header)
    values = np.empty((len(records), len(numeric_names)), dtype=np.float64)
    integral = True
    discovered = []
    for position, name in enumerate(numeric_names):
        cells = columns[table.positions[name]]
        numbers, bad = to_numbers(cells, table.decimal, table.missing_tokens(name))
        if bad is not None:
            if name in fixed:
                raise DataError(
                    f"{table.path}:{lines[bad]}: column {name!r} has {cells[bad].strip()!r}, "
                    f"which is not a number; {fixed[name]}"
                )
            discovered.append(name)
            continue
        values[:, position] = numbers
        if integral:
            finite = numbers[np.isfinite(numbers)]
            integral = bool(np.all(finite == np.round(finite)))
    if discovered:
        raise Restart(discovered)
    text_cells = {name: to_text(columns[table.positions[name]], table.missing_tokens(name)) for name in text_names}
    return values, np.asarray(lines, dtype=np.int64), text_cells, integral
