"""The on-disk store: a CSV's parsed columns as plain .npy files, the parse cache's one format.

An entry is a folder of arrays and, beside it, its record (``NAME.json``, see cache.py):

  matrix.npy    (rows, numeric columns): float32 with NaN for an empty cell, or, when every
                number is an integer, the smallest integer type that holds them all
  missing.npy   beside an integer matrix with empty cells: one bit per cell (packed by row)
  wide_K.npy    target K in float64 (rows,)
  codes_K.npy   text column K as int32 codes (rows,) into words_K.npy, its distinct cells
  lines.npy     the line where each row starts, int32 (int64 past 2**31)

The CSV is parsed straight into these files a chunk at a time (gathered.Gathered's rows written out
after each chunk), so parsing holds one chunk in memory, whatever the file's size. They are
written with plain writes, not through a memory map: a full disk is then an error to report,
where a write into a mapped page would kill the process (SIGBUS). Each file's SHA-256 is taken
as it is written and kept in the record, which is written last: an entry cut short (kill -9, a
full disk) has no record and is never read. (A store kept only while one command runs,
``data.cache: false``, is never recorded, so no SHA-256 is taken.) A store is read back whole into memory, or mapped
(``StoreMatrix``), its pages then in the operating system's page cache, not in the process.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DataError, DltrainError
from ..files import disk_error, write_all
from .gathered import Gathered
from .parsed import BLOCK_ROWS, Columns

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
HEADER_BYTES = 128  # an appended .npy file's header, padded: its shape is known only at the end
COMPACT_TYPES = (np.uint8, np.int8, np.uint16, np.int16)
_HASH_BYTES = 1 << 24


class StoreFull(DltrainError):
    """The disk has no room for the store (a full disk, a quota, a file size limit): exit 1, as
    every full disk (files.disk_error); cache.py names the folder to free and the ways round it."""

    exit_code = 1

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _store_error(error: OSError, path: Path) -> DltrainError:
    if error.errno in _FULL:
        return StoreFull(str(disk_error(error, path)).split(": cannot write: ", 1)[-1])
    return disk_error(error, path)


class _ArrayFile:
    """A .npy file written a block of rows at a time: a header placeholder, the data, then the
    true header; the SHA-256 of the data as it goes (unless not ``hashed``: a store for this
    process alone, never recorded)."""

    def __init__(self, path: Path, dtype, row_shape: tuple = (), hashed: bool = True):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), row_shape
        self.rows = 0
        self.digest = hashlib.sha256() if hashed else None
        try:
            self.handle = open(path, "wb")
            write_all(self.handle, b" " * HEADER_BYTES)
        except OSError as error:
            raise _store_error(error, path) from None

    def append(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=self.dtype)
        payload = data.reshape(-1).view(np.uint8).data
        if self.digest is not None:
            self.digest.update(payload)
        try:
            write_all(self.handle, payload)
        except OSError as error:
            raise _store_error(error, self.path) from None
        self.rows += len(data)

    def close(self) -> dict:
        """Write the header and close; the record's entry for this array."""
        shape = (self.rows, *self.row_shape)
        try:
            self.handle.seek(0)
            write_all(self.handle, npy_header(self.dtype, shape))
            self.handle.close()
        except OSError as error:
            raise _store_error(error, self.path) from None
        digest = self.digest.hexdigest() if self.digest is not None else None
        return {"dtype": self.dtype.str, "shape": list(shape), "sha256": digest}

    def abandon(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


def write_array(path: Path, blocks, dtype, row_shape: tuple = ()) -> np.ndarray:
    """An array written a block of rows at a time (``blocks``), then mapped read-only (its
    pages in the page cache, not in the process). StoreFull when the disk has no room."""
    file = _ArrayFile(path, dtype, row_shape)
    try:
        for block in blocks:
            file.append(block)
        file.close()
    except BaseException:
        file.abandon()
        raise
    return np.load(path, mmap_mode="r", allow_pickle=False)


def npy_header(dtype: np.dtype, shape: tuple, size: int = HEADER_BYTES) -> bytes:
    """A version 1.0 .npy header of exactly ``size`` bytes (spaces pad it, as NumPy's own do)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    body = text.encode("latin1")
    padding = size - 10 - len(body) - 1
    if padding < 0:
        raise ValueError(f"an .npy header for shape {shape} needs more than {size} bytes")
    return b"\x93NUMPY\x01\x00" + (size - 10).to_bytes(2, "little") + body + b" " * padding + b"\n"


def _write_whole(path: Path, array: np.ndarray) -> dict:
    """A small array (a vocabulary) written at once; its record entry."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    payload = buffer.getvalue()
    try:
        with open(path, "wb") as handle:
            write_all(handle, payload)
    except OSError as error:
        raise _store_error(error, path) from None
    header = len(payload) - array.nbytes
    return {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "sha256": hashlib.sha256(payload[header:]).hexdigest(),
    }


class StoreWriter:
    """Writes a store's arrays into ``folder``: rows appended a block at a time (``hashed``: with
    each array's SHA-256 for the record)."""

    def __init__(
        self, folder: Path, numeric: list, wide: list, text: list, long_lines: bool = True, hashed: bool = True
    ):
        self.folder, self.hashed = folder, hashed
        self.numeric, self.wide, self.text = numeric, wide, text
        self.files: dict[str, _ArrayFile] = {}
        self.extremes = [np.inf, -np.inf]  # of the finite numbers, for an integer matrix
        self.has_missing = False
        self.has_infinite = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _store_error(error, folder) from None
        self.files["matrix"] = _ArrayFile(folder / "matrix.npy", np.float32, (len(numeric),), hashed)
        self.files["lines"] = _ArrayFile(folder / "lines.npy", np.int64 if long_lines else np.int32, (), hashed)
        for index in range(len(wide)):
            self.files[f"wide_{index}"] = _ArrayFile(folder / f"wide_{index}.npy", np.float64, (), hashed)
        for index in range(len(text)):
            self.files[f"codes_{index}"] = _ArrayFile(folder / f"codes_{index}.npy", np.int32, (), hashed)

    def append(self, matrix: np.ndarray, wide: np.ndarray, lines: np.ndarray, codes: np.ndarray, integral: bool):
        """Rows: numbers (rows, numeric), targets (rows, wide), lines, text codes (text, rows)."""
        self.files["matrix"].append(matrix)
        if integral and matrix.size:
            finite = np.isfinite(matrix)
            self.has_missing = self.has_missing or bool(np.isnan(matrix).any())
            self.has_infinite = self.has_infinite or bool(np.isinf(matrix).any())
            if finite.any():
                values = matrix[finite]
                self.extremes = [min(self.extremes[0], float(values.min())), max(self.extremes[1], float(values.max()))]
        self.files["lines"].append(lines)
        for index in range(len(self.wide)):
            self.files[f"wide_{index}"].append(wide[:, index])
        for index in range(len(self.text)):
            self.files[f"codes_{index}"].append(codes[index])

    def close(self, vocabularies: list, integral: bool) -> dict:
        """Finish every file (the matrix in a compact type where it can be); the arrays' record."""
        arrays = {name: file.close() for name, file in self.files.items()}
        compact = self._compact_type(integral)
        if compact is not None:
            arrays.update(_compacted(self.folder, compact, self.has_missing, self.hashed))
        for index, words in enumerate(vocabularies):
            arrays[f"words_{index}"] = _write_whole(self.folder / f"words_{index}.npy", words)
        return arrays

    def _compact_type(self, integral: bool):
        return compact_type(integral and not self.has_infinite and len(self.numeric) > 0, *self.extremes)

    def abandon(self) -> None:
        for file in self.files.values():
            file.abandon()
        shutil.rmtree(self.folder, ignore_errors=True)


def compact_type(integral: bool, low: float, high: float):
    """The smallest integer type a matrix of integers between ``low`` and ``high`` is kept in
    (None: float32, as for numbers that are not all integers, or an empty matrix)."""
    if not integral or low > high:
        return None
    return next((dtype for dtype in COMPACT_TYPES if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max), None)


def stored_bytes(columns: Columns) -> int:
    """The bytes a store of ``columns`` (parsed into memory) would take on disk, as StoreWriter
    writes it: the matrix in its compact type where it has one, its empty cells then as bits."""
    matrix = columns.matrix
    assert isinstance(matrix, np.ndarray), "columns parsed into memory"
    long_lines = columns.n_rows > 0 and columns.line(columns.n_rows - 1) >= 2**31
    total = columns.n_rows * (8 if long_lines else 4) + sum(values.nbytes for values in columns.wide.values())
    total += sum(np.asarray(codes).nbytes for codes, _ in columns.categories.values())
    dtype, has_missing = None, False
    if columns.integral and matrix.size:
        has_missing = bool(np.isnan(matrix).any())
        if not np.isinf(matrix).any() and not np.isnan(matrix).all():
            dtype = compact_type(True, float(np.nanmin(matrix)), float(np.nanmax(matrix)))
    if dtype is None:
        return total + matrix.nbytes
    bits = (matrix.shape[1] + 7) // 8 * len(matrix) if has_missing else 0
    return total + matrix.size * np.dtype(dtype).itemsize + bits


def _compacted(folder: Path, dtype, has_missing: bool, hashed: bool) -> dict:
    """The float32 matrix rewritten in ``dtype`` (and its empty cells as bits); their record entries."""
    source = np.load(folder / "matrix.npy", mmap_mode="r", allow_pickle=False)
    target = _ArrayFile(folder / "matrix.compact", dtype, source.shape[1:], hashed)
    bits = _ArrayFile(folder / "missing.npy", np.uint8, ((source.shape[1] + 7) // 8,), hashed) if has_missing else None
    for begin in range(0, len(source), BLOCK_ROWS * 16):
        block = np.array(source[begin : begin + BLOCK_ROWS * 16])
        missing = np.isnan(block)
        block[missing] = 0
        target.append(block.astype(dtype))
        if bits is not None:
            bits.append(np.packbits(missing, axis=1))
    del source
    arrays = {"matrix": target.close()}
    if bits is not None:
        arrays["missing"] = bits.close()
    os.replace(folder / "matrix.compact", folder / "matrix.npy")
    return arrays


class StoreSink(Gathered):
    """The rows of a CSV being parsed, written to a store after each chunk (csv.CsvFile.read's
    ``sink``): memory holds one chunk. ``finish`` closes the files and gives the record's arrays
    to ``on_finish``, whose Columns it returns. ``hashed``: the arrays' SHA-256 are taken for the
    record (a store that will not be kept needs none)."""

    def __init__(self, numeric, wide, text, folder: Path, on_finish, long_lines: bool = True, hashed: bool = True):
        super().__init__(numeric, wide, text)
        self.writer = StoreWriter(folder, self.numeric, self.wide, self.text, long_lines, hashed)
        self.on_finish = on_finish
        self.written = 0

    def reserve(self, capacity: int, hint: int = 0) -> None:
        super().reserve(capacity)  # never the whole file's rows: only a chunk is held

    def chunk_read(self, table) -> None:
        ready = self.settle(table)
        if ready:
            self.writer.append(
                self.matrix[:ready],
                self.wide_values[:ready],
                self.lines[:ready],
                self.code_matrix[:, :ready],
                self.integral,
            )
            self.written += ready
            self.keep_from(ready)

    def discard(self) -> None:
        self.writer.abandon()

    def finish(self, table) -> Columns:
        try:
            if self.problem is not None:
                raise self.problem
            self.chunk_read(table)
            if self.written == 0:
                raise DataError(f"{table.path}: the file has a header but no data rows")
            arrays = self.writer.close([self.words(index) for index in range(len(self.text))], self.integral)
        except BaseException:
            self.writer.abandon()
            raise
        return self.on_finish(self, arrays)


def write_columns(folder: Path, columns: Columns, text: list) -> dict:
    """A store of Columns already in memory (a small file parsed whole); the record's arrays."""
    long_lines = columns.n_rows > 0 and columns.line(columns.n_rows - 1) >= 2**31
    writer = StoreWriter(folder, list(columns.numeric_names), list(columns.wide), text, long_lines)
    try:
        codes = np.empty((len(text), columns.n_rows), dtype=np.int32)
        for index, name in enumerate(text):
            codes[index] = columns.categories[name][0]
        wide = np.empty((columns.n_rows, len(columns.wide)))
        for index, name in enumerate(columns.wide):
            wide[:, index] = columns.wide[name]
        for begin in range(0, columns.n_rows, BLOCK_ROWS * 16):
            stop = begin + BLOCK_ROWS * 16
            block = columns.matrix[begin:stop]
            writer.append(block, wide[begin:stop], columns.lines[begin:stop], codes[:, begin:stop], columns.integral)
        return writer.close([columns.categories[name][1] for name in text], columns.integral)
    except BaseException:
        writer.abandon()
        raise


class StoreMatrix:
    """A store's numeric matrix, read a block of rows at a time: whatever type it is kept in,
    a read gives a float32 array in memory, NaN where a cell is empty. Indexed as an array is
    (``matrix[rows]``, ``matrix[a:b, columns]``, ``matrix[np.ix_(rows, columns)]``), never whole."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, values: np.ndarray, missing: np.ndarray | None = None):
        self.values, self.missing = values, missing
        self.shape = values.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows, columns = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, np.ndarray) and rows.ndim == 2:  # np.ix_
            rows, columns = rows[:, 0], columns.reshape(-1)
        block = np.array(self.values[rows], dtype=np.float32)
        if self.missing is not None:
            bits = np.unpackbits(np.asarray(self.missing[rows]), axis=-1, count=self.shape[1])
            block[bits.astype(bool)] = np.nan
        return block[..., columns] if not isinstance(columns, slice) or columns != slice(None) else block


def check_arrays(folder: Path, arrays: dict, mapped: bool) -> dict:
    """The entry's arrays, each checked against its record (type, shape, SHA-256 of its data):
    mapped (read-only memory maps) or read into memory. ValueError when one does not match."""
    loaded = {}
    for name, entry in arrays.items():
        path = folder / f"{name}.npy"
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise ValueError(f"{path}: holds {array.dtype.str} {array.shape}, not what its record says")
        flat = array.reshape(-1).view(np.uint8)
        digest = hashlib.sha256()
        for begin in range(0, len(flat), _HASH_BYTES):
            digest.update(memoryview(flat[begin : begin + _HASH_BYTES]))
        if digest.hexdigest() != entry["sha256"]:
            raise ValueError(f"{path}: its data is not what its record says")
        loaded[name] = array if mapped and not name.startswith("words_") else np.array(array)
    return loaded


def open_columns(path: Path, arrays: dict, names: dict, integral: bool) -> Columns:
    """Columns over checked arrays (``check_arrays``): ``names`` gives the numeric, wide and text
    column names. Mapped arrays stay on disk (the matrix a StoreMatrix); others become the
    arrays the reader gives (float32 matrix, int64 lines)."""
    matrix, missing = arrays["matrix"], arrays.get("missing")
    if isinstance(matrix, np.memmap):
        numbers, lines = StoreMatrix(matrix, missing), arrays["lines"]
    else:
        numbers = matrix.astype(np.float32) if matrix.dtype != np.float32 else matrix
        if missing is not None:
            numbers[np.unpackbits(missing, axis=1, count=matrix.shape[1]).astype(bool)] = np.nan
        lines = arrays["lines"].astype(np.int64)
    return Columns(
        path,
        lines,
        list(names["numeric"]),
        numbers,
        {name: arrays[f"wide_{index}"] for index, name in enumerate(names["wide"])},
        {},
        integral,
        categories={
            name: (arrays[f"codes_{index}"], arrays[f"words_{index}"]) for index, name in enumerate(names["text"])
        },
    )
