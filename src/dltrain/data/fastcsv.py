"""The CSV reader's fast path: numba kernels that parse the raw bytes, block by block, in threads.

The bytes are cut into blocks of whole records (at line ends; where a chunk holds quotes, at
the record ends the csv module's rules give), and each block is parsed on its own by a plain
loop compiled by numba: fields split as the csv module splits them, numbers converted exactly
(Clinger's fast path when the digits fit in 53 bits and the power of ten is exact, else the
Eisel-Lemire algorithm, which says when it cannot be sure), text cells deduplicated into a
small vocabulary per block. What the kernel cannot do exactly (a cell that is not a number,
a record of the wrong width, an odd quote, a NUL byte, a number float32 cannot hold, or whose
rounding the fast algorithms cannot settle) marks the block, and that block is read again by
the plain reader (csv.py, plainreader.py), which gives the same arrays and every message as it always has.
So the plain reader is the fast path's oracle, and the one path where numba is missing.
The kernels live in fastrecords.py (records, fields, markers, text codes) and fastnumbers.py
(a number from its bytes); this module cuts the file into blocks, runs them in threads and
decides when the kernels are ready to run.

Small files never come here (``MIN_BYTES``): importing numba and loading the compiled
kernels costs more than the plain reader takes. The kernels are cached on disk like the
engine's (engine/kernel_cache.py), and a read below ``COMPILE_PAYS_BYTES`` never waits for
them to compile (5-15 s here): where neither this process nor the cache holds them (a fresh
install), the plain reader reads the file, and a helper process at the lowest priority
compiles them into the cache for the next read (``_ready``).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import system
from ..engine import kernel_cache, kernels, threads
from . import fastnumbers, fastrecords
from .fastrecords import FALLBACK, HIGH, NL, NUMERIC, TEXT, WIDE

MIN_BYTES = 8 << 20  # smaller files are read by the plain reader (importing numba and loading the
# compiled kernels takes ~0.5 s: the plain reader reads 8 MB of clean floats in about that time)
CHUNK_BYTES = 16 << 20  # bytes read from the file at a time
BLOCK_BYTES = 1 << 20  # bytes of records per kernel call (one thread's work item)
MAX_RECORD_BYTES = 256 << 20  # a record (or an unclosed quote) longer than this: the plain reader
# Encodings in which every byte below 0x80 is that ASCII character and no other character
# contains one, so delimiters, quotes, digits and line ends can be found in the raw bytes.
ENCODINGS = ("utf-8-sig", "utf-8", "ascii", "iso8859-1", "cp1252", "iso8859-15")

_KERNEL_NAMES = (
    "_count_newlines",
    "_multiply_64",
    "_leading_zeros",
    "_eisel_lemire",
    "to_float",
    "parse_number",
    "_is_marker",
    "_hash",
    "_code_of",
    "_parse_records",
    "_parse_block",
    "_record_cuts",
)
_compiled_kernels: dict | None = None
_on_disk = False  # whether the kernels' compilations are kept in the disk cache
# Compile what neither this process nor the disk cache holds, and read with the kernels, rather
# than read with the plain reader while a helper compiles them: the helper itself does, and the
# tests and benches that time or check the kernels.
compile_when_cold = False
# From this size a read compiles the kernels it lacks (5-15 s here) rather than take the plain
# reader, which reads Fashion-MNIST's 133 MB training CSV about 2 s slower than the kernels.
COMPILE_PAYS_BYTES = 512 << 20
_HELPER = "import os; os.nice(19); from dltrain.data import fastcsv; fastcsv.compile_into_cache()"
_helper = kernel_cache.CompileHelper(_HELPER)  # compiles the kernels into the disk cache
_HELPER_LOCK = "fastcsv.compiling.lock"  # held by the helper compiling, in the cache folder


def _compiled() -> dict:
    """The kernels as numba dispatchers (each compiled, or loaded from the disk cache, on its
    first call), cached on disk like the engine's."""
    global _compiled_kernels, _on_disk
    if _compiled_kernels is None:
        import numba

        # One namespace for the kernels of both modules, so that each calls the others compiled.
        namespace = {**vars(fastnumbers), **vars(fastrecords)}
        on_disk = True
        for name in _KERNEL_NAMES:
            function = namespace[name]
            copy = types.FunctionType(function.__code__, namespace, name, function.__defaults__, function.__closure__)
            copy.__qualname__ = function.__qualname__
            copy.__module__ = function.__module__
            dispatcher = numba.njit(nogil=True)(copy)
            on_disk = kernel_cache.enable(dispatcher) and on_disk
            namespace[name] = dispatcher
        _compiled_kernels, _on_disk = namespace, on_disk
    return _compiled_kernels


def _calls(request, sink, delimiter: int) -> list:
    """The kernels ``read_into`` calls itself, each with arguments of the types it passes them."""
    buf = np.zeros(1, dtype=np.uint8)  # as np.frombuffer over the bytearray the chunks are read into
    return [
        ("_count_newlines", (buf, 0, 1)),
        ("_record_cuts", (buf, 0, 1, delimiter, BLOCK_BYTES)),
        ("_parse_block", (buf, 0, 1, 0, 1, 1, *request.arguments, *_sink_arrays(sink))),
    ]


def _sink_arrays(sink) -> tuple:
    return sink.matrix, sink.wide_values, sink.lines, sink.empty, sink.code_matrix


def _ready(kernels_: dict, calls: list, size: int) -> bool:
    """Whether a read of ``size`` bytes runs the kernels for the types in ``calls``: yes where
    they are compiled in this process or in the disk cache. Where they are in neither (a fresh
    install), compiling them would make the read wait 5-15 s where the plain reader takes about
    as long as the kernels on Fashion-MNIST's 22 MB test CSV: a helper process starts compiling
    them into the cache for the next read, and this read takes the plain reader (same arrays,
    same messages). Where there is no disk cache, or the file is big, they are compiled here."""
    if compile_when_cold or not _on_disk or size >= COMPILE_PAYS_BYTES:
        return True
    if all(kernel_cache.warm(kernels_[name], arguments) for name, arguments in calls):
        return True
    _helper.start()
    return False


def compile_into_cache() -> None:
    """The helper process: compile into the disk cache the kernels a read looks up there, by
    reading a small made-up file through them (the types a read passes them, whatever its
    columns), unless another helper is already at it."""
    global compile_when_cold, MIN_BYTES
    from .csv import CsvFile

    folder = kernel_cache.folder(_compiled()["_parse_block"])
    if folder is None:
        return  # nowhere to keep them
    try:
        lock = open(folder / _HELPER_LOCK, "ab")
    except OSError:
        return
    with lock:
        try:
            system.lock(lock.fileno())
        except BlockingIOError:
            return  # another helper compiles them
        saved = compile_when_cold, MIN_BYTES
        compile_when_cold, MIN_BYTES = True, 0
        try:
            table = CsvFile.open(Path("kernels.csv"), content=b'number,text\n1.5,"a"\n')  # a quote: _record_cuts runs
            table.read(numeric=["number"], text=["text"])
        finally:
            compile_when_cold, MIN_BYTES = saved


# --------------------------------------------------------------------------- the reader


class NotFast(Exception):
    """This file needs the plain reader from the start (e.g. a quote left open for a long way, or
    kernels not compiled yet)."""


def body_codec(codec: str) -> str | None:
    """The codec to decode the body's bytes with when the fast path can read this encoding, else None."""
    name = codecs.lookup(codec).name
    if name not in ENCODINGS:
        return None
    return "utf-8" if name == "utf-8-sig" else name


def usable(table, size: int) -> bool:
    """Whether ``table`` (a CsvFile of ``size`` bytes) goes through the fast path."""
    return (
        size >= MIN_BYTES
        and not table.cr_lines
        and body_codec(table.encoding) is not None
        and len(table.delimiter) == 1
        and ord(table.delimiter) < 128
        and table.delimiter not in '"\r\n'
        and len(table.decimal) == 1
        and ord(table.decimal) < 128
        and kernels.ready()
    )


class _Request:
    """What the kernels need to know about the columns asked for (arrays indexed by field)."""

    def __init__(self, table, numeric, wide, text, codec):
        width = len(table.header)
        self.kinds = np.zeros(width, dtype=np.int8)
        self.slots = np.zeros(width, dtype=np.int64)
        for names, kind in ((numeric, NUMERIC), (wide, WIDE), (text, TEXT)):
            positions = np.array([table.positions[name] for name in names], dtype=np.int64)
            self.kinds[positions] = kind
            self.slots[positions] = np.arange(len(names))
        self.numeric, self.wide, self.text = numeric, wide, text
        # Columns share their set of markers unless data.columns gives one its own.
        groups: dict[frozenset, list] = {}
        for name in numeric + wide:
            groups.setdefault(table.missing_tokens(name), []).append(table.positions[name])
        self.text_tokens = [table.missing_tokens(name) for name in text]
        tokens = sorted(set().union(*groups) - {""})
        tokens = [token for token in tokens if _encodable(token, codec)]  # others cannot be in the file
        encoded = [token.encode(codec) for token in tokens]
        self.token_bytes = np.frombuffer(b"".join(encoded) + b"\0", dtype=np.uint8)
        self.token_starts = np.cumsum([0] + [len(token) for token in encoded]).astype(np.int64)
        self.masks = np.zeros((width, len(tokens)), dtype=np.bool_)
        for markers, positions in groups.items():
            self.masks[np.array(positions, dtype=np.int64)] = [token in markers for token in tokens]
        # What _parse_block takes after (buf, start, end, first row, first line, line ends).
        self.arguments = (
            ord(table.delimiter),
            ord(table.decimal),
            table.keep_empty_rows,
            self.kinds,
            self.slots,
            self.masks,
            self.token_bytes,
            self.token_starts,
        )


def _encodable(token: str, codec: str) -> bool:
    try:
        token.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def read_into(table, numeric, wide, text, fixed, sink):
    """Parse the body of ``table`` (a CsvFile) into ``sink``'s arrays, chunk by chunk; a generator
    that yields the bytes read after each chunk, once its rows are in place.

    ``sink`` (gathered.Gathered) holds the arrays the kernels write into: ``matrix``,
    ``wide_values``, ``lines``, ``empty`` and ``code_matrix`` (text as codes into one vocabulary
    per column), with ``rows`` filled so far; ``reserve(rows, hint)`` makes room. The table
    parses any block the kernels cannot (and raises its errors, and its plainreader.Restart when a numeric
    column turns out to hold text)."""
    codec = body_codec(table.encoding)
    kernels_ = _compiled()
    count, parse = kernels_["_count_newlines"], kernels_["_parse_block"]
    request = _Request(table, numeric, wide, text, codec)
    workers = max(1, min(threads.available_cores(), 8))
    with _Source(table) as source, ThreadPoolExecutor(max_workers=workers) as pool:
        if not _ready(kernels_, _calls(request, sink, ord(table.delimiter)), source.size):
            raise NotFast()  # the plain reader reads it while a helper compiles the kernels
        line = table.header_lines + 1
        for data, cuts, base_offset in source.chunks(kernels_, ord(table.delimiter)):
            buf = np.frombuffer(data, dtype=np.uint8, count=int(cuts[-1]))
            ends = cuts.tolist()
            starts = [0] + ends[:-1]
            # First each block's line ends, so that every block knows where its rows go (a
            # block has no more rows than line ends; a blank line leaves a gap, closed below).
            newlines = list(pool.map(count, [buf] * len(ends), starts, ends))
            before = np.concatenate(([0], np.cumsum(newlines)[:-1])).tolist()
            first = sink.rows
            read = base_offset + ends[-1]
            sink.reserve(first + sum(newlines), hint=int((first + sum(newlines)) * source.size / max(read, 1) * 1.1))
            arrays = _sink_arrays(sink)
            futures = [
                pool.submit(parse, buf, start, end, first + offset, line + offset, lines, *request.arguments, *arrays)
                for start, end, offset, lines in zip(starts, ends, before, newlines)
            ]
            write = first
            for start, end, offset, future in zip(starts, ends, before, futures):
                rows, flags, integral, rep_start, rep_length, n_unique = future.result()
                if _needs_plain(flags):
                    write += _plain_block(table, request, fixed, codec, data[start:end], line + offset, sink, write)
                    continue
                if flags & HIGH:
                    _check_encoding(table, data[start:end], codec)
                if first + offset != write:
                    sink.move(first + offset, write, rows)
                for column in range(len(text)):
                    words = [
                        _text_value(data, int(rep_start[column, k]), int(rep_length[column, k]), codec, table.delimiter)
                        for k in range(int(n_unique[column]))
                    ]
                    tokens = request.text_tokens[column]
                    mapping = sink.word_codes(column, ["" if word in tokens else word for word in words])
                    codes = sink.code_matrix[column, write : write + rows]
                    codes[:] = mapping[codes]
                sink.integral = sink.integral and bool(integral)
                write += rows
            sink.rows = write
            line += sum(newlines)
            yield read


def _needs_plain(flags: int) -> bool:
    """Whether a block the kernel marked so goes to the plain reader (tests send every block)."""
    return bool(flags & FALLBACK)


def _plain_block(table, request, fixed, codec, raw: bytearray, line: int, sink, write: int) -> int:
    """A block the kernels left to the plain reader, parsed by it into the sink's rows from
    ``write`` on (its errors raised as they are); returns its number of rows."""
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        raise table.decode_error() from None
    text = text.replace("\r\n", "\n").replace("\r", " ")
    numeric_values, wide_values, line_numbers, cells, integral, _, problem = table.parse_block(
        line, text, request.numeric, request.wide, request.text, fixed
    )
    rows = len(line_numbers)
    with np.errstate(over="ignore"):  # a number beyond float32 is ``problem``, reported at the end
        sink.matrix[write : write + rows] = numeric_values
    sink.wide_values[write : write + rows] = wide_values
    sink.lines[write : write + rows] = line_numbers
    sink.empty[write : write + rows] = False  # the table keeps the lines of its empty rows itself
    for column, name in enumerate(request.text):
        words, inverse = np.unique(cells[name], return_inverse=True)
        sink.code_matrix[column, write : write + rows] = sink.word_codes(column, words.tolist())[inverse.reshape(-1)]
    sink.integral = sink.integral and bool(integral)
    sink.problem = sink.problem or problem
    return rows


def _check_encoding(table, raw: bytearray, codec: str) -> None:
    try:
        raw.decode(codec)
    except UnicodeDecodeError:
        raise table.decode_error() from None


def _text_value(data: bytearray, start: int, length: int, codec: str, delimiter: str) -> str:
    """A distinct text cell as the plain reader sees it: decoded, unquoted, line ends as there, stripped."""
    cell = data[start : start + length].decode(codec)
    cell = cell.replace("\r\n", "\n").replace("\r", " ")
    if cell.startswith('"'):
        cell = next(csv.reader(io.StringIO(cell, newline=""), delimiter=delimiter))[0]
    return cell.strip()


class _Source:
    """The CSV's body as bytes, chunk by chunk, each cut into blocks of whole records."""

    def __init__(self, table):
        self.table = table
        self.handle = None
        self.size = 0

    def __enter__(self):
        table = self.table
        if table.content is not None:
            self.handle = io.BytesIO(table.content)
        else:
            self.handle = table.open_bytes()
        self.size = os.fstat(self.handle.fileno()).st_size if table.content is None else len(table.content)
        piece = min(CHUNK_BYTES, 1 << 16)
        head = self.handle.read(piece)
        skip = 3 if table.encoding == "utf-8-sig" and head.startswith(codecs.BOM_UTF8) else 0
        for _ in range(table.header_lines):
            cut = head.find(b"\n", skip)
            while cut < 0:  # a header longer than what was read so far
                more = self.handle.read(max(piece, len(head)))
                if not more:
                    cut = len(head) - 1
                    break
                head += more
                cut = head.find(b"\n", skip)
            skip = cut + 1
        self.head = head[skip:]
        self.offset = skip
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def chunks(self, kernels_, delimiter: int):
        """(buffer, block cuts, offset in the file) of consecutive chunks of whole records: the
        chunk is buffer[:cuts[-1]], valid until the next one is asked for (the buffer is reused)."""
        buffer = bytearray(max(CHUNK_BYTES, 2 * len(self.head)))
        filled = len(self.head)
        buffer[:filled] = self.head
        offset = self.offset
        end_of_file = False
        while True:
            while not end_of_file and filled < len(buffer):
                with memoryview(buffer) as view:
                    got = self.handle.readinto(view[filled:])
                end_of_file = not got
                filled += got or 0
            if end_of_file:
                if filled == 0:
                    return
                if buffer[filled - 1] != NL:
                    buffer = _room(buffer, filled + 1)
                    buffer[filled] = NL
                    filled += 1
            if buffer.find(b'"', 0, filled) >= 0:
                cuts = kernels_["_record_cuts"](
                    np.frombuffer(buffer, dtype=np.uint8, count=filled), 0, filled, delimiter, BLOCK_BYTES
                )
                last = int(cuts[-1])
                if end_of_file and last < filled:  # a quote left open at the end: the plain reader says so
                    cuts = np.append(cuts[cuts > 0], filled)
                    last = filled
            else:
                last = buffer.rfind(b"\n", 0, filled) + 1
                cuts = _line_cuts(buffer, last)
            if last == 0:  # no record ends in the buffer: a record longer than a chunk
                if filled > MAX_RECORD_BYTES:
                    raise NotFast()
                buffer = _room(buffer, 2 * len(buffer))  # doubled: the bytes scanned again stay in proportion
                continue
            yield buffer, cuts[cuts > 0], offset
            offset += last
            buffer[: filled - last] = buffer[last:filled]
            filled -= last
            if end_of_file and filled == 0:
                return


def _room(buffer: bytearray, size: int) -> bytearray:
    """``buffer``, or a copy of it of ``size`` bytes when it is smaller (never resized in place:
    arrays may still look into it)."""
    if len(buffer) >= size:
        return buffer
    grown = bytearray(size)
    grown[: len(buffer)] = buffer
    return grown


def _line_cuts(data: bytearray, last: int) -> np.ndarray:
    """Cuts at the first line end past each BLOCK_BYTES of ``data[:last]`` (no quotes in it)."""
    cuts = []
    position = BLOCK_BYTES
    while position < last:
        cut = data.find(b"\n", position - 1, last) + 1
        if cut <= 0 or cut >= last:
            break
        cuts.append(cut)
        position = cut + BLOCK_BYTES
    cuts.append(last)
    return np.asarray(cuts, dtype=np.int64)
