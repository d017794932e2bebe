"""The CSV reader's fast path: numba kernels that parse the raw bytes, block by block, in threads.

The bytes are cut into blocks of whole records (at line ends; where a chunk holds quotes, at
the record ends the csv module's rules give), and each block is parsed on its own by a plain
loop compiled by numba: fields split as the csv module splits them, numbers converted exactly
(Clinger's fast path when the digits fit in 53 bits and the power of ten is exact, else the
Eisel-Lemire algorithm, which says when it cannot be sure), text cells deduplicated into a
small vocabulary per block. What the kernel cannot do exactly (a cell that is not a number,
a record of the wrong width, an odd quote, a NUL byte, a number float32 cannot hold, or whose
rounding the fast algorithms cannot settle) marks the block, and that block is read again by
the plain reader (csv.py), which gives the same arrays and every message as it always has.
So the plain reader is the fast path's oracle, and the one path where numba is missing.

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
import math
import os
import sys
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import system
from ..engine import kernel_cache, kernels, threads

MIN_BYTES = 8 << 20  # smaller files are read by the plain reader (importing numba and loading the
# compiled kernels takes ~0.5 s: the plain reader reads 8 MB of clean floats in about that time)
CHUNK_BYTES = 16 << 20  # bytes read from the file at a time
BLOCK_BYTES = 1 << 20  # bytes of records per kernel call (one thread's work item)
MAX_RECORD_BYTES = 256 << 20  # a record (or an unclosed quote) longer than this: the plain reader
# Encodings in which every byte below 0x80 is that ASCII character and no other character
# contains one, so delimiters, quotes, digits and line ends can be found in the raw bytes.
ENCODINGS = ("utf-8-sig", "utf-8", "ascii", "iso8859-1", "cp1252", "iso8859-15")

NL, CR, QUOTE = 10, 13, 34
# Why a block goes back to the plain reader (a bit set; HIGH alone is no reason).
CELL = 1  # a cell that is neither a number nor a missing-value marker in a numeric column
WIDTH = 2  # a record with another number of fields than the header
QUOTING = 4  # a quote the csv module reads otherwise than as a plain quoted field
NUL = 8  # a NUL byte in a cell that is read
RANGE = 16  # a number beyond float32, or whose rounding needs more than the fast algorithms
UNSURE = 32  # a record blank but for non-ASCII bytes (Python's strip may find it blank)
HIGH = 64  # the block has bytes >= 0x80, to be checked against the encoding
FALLBACK = CELL | WIDTH | QUOTING | NUL | RANGE | UNSURE

# Column kinds the kernel is given, per field.
SKIP, NUMERIC, WIDE, TEXT = 0, 1, 2, 3

# Python's str.strip() removes these ASCII bytes (non-ASCII whitespace is left to Python).
WHITESPACE = np.zeros(256, dtype=np.bool_)
WHITESPACE[list(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")] = True
POWERS_OF_TEN = np.array([10.0**power for power in range(23)], dtype=np.float64)  # exact in float64
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _power_mantissas():
    """128-bit mantissas of 10**e rounded down, e in [-348, 347]: (high, low) 64-bit halves."""
    high = np.zeros(696, dtype=np.uint64)
    low = np.zeros(696, dtype=np.uint64)
    for index, power in enumerate(range(-348, 348)):
        if power >= 0:
            value = 5**power
            bits = value.bit_length()
            mantissa = value >> (bits - 128) if bits > 128 else value << (128 - bits)
        else:
            divisor = 5**-power
            mantissa = (1 << (divisor.bit_length() + 127)) // divisor
            mantissa >>= mantissa.bit_length() - 128
        high[index] = mantissa >> 64
        low[index] = mantissa & ((1 << 64) - 1)
    return high, low


POWER_HIGH, POWER_LOW = _power_mantissas()
U0, U1, U3, U9, U10 = (np.uint64(value) for value in (0, 1, 3, 9, 10))
U32_MASK, U48, U56, U60, U62, U63 = (np.uint64(value) for value in (0xFFFFFFFF, 48, 56, 60, 62, 63))
U32, U64_LOW9, U53_BIT, U_DIGIT0 = np.uint64(32), np.uint64(0x1FF), np.uint64(1 << 53), np.uint64(48)
FNV_OFFSET, FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)


# --------------------------------------------------------------------------- the kernels
# Plain Python that numba compiles (see _compiled); each also runs as Python, slowly.


def _multiply_64(a, b):
    """The 128-bit product of two uint64 as (high, low)."""
    a_low, a_high = a & U32_MASK, a >> U32
    b_low, b_high = b & U32_MASK, b >> U32
    p0, p1, p2, p3 = a_low * b_low, a_low * b_high, a_high * b_low, a_high * b_high
    middle = (p0 >> U32) + (p1 & U32_MASK) + (p2 & U32_MASK)
    return p3 + (p1 >> U32) + (p2 >> U32) + (middle >> U32), (middle << U32) | (p0 & U32_MASK)


def _leading_zeros(x):
    count = 0
    if x >> U32 == U0:
        count += 32
        x <<= U32
    if x >> U48 == U0:
        count += 16
        x <<= np.uint64(16)
    if x >> U56 == U0:
        count += 8
        x <<= np.uint64(8)
    if x >> U60 == U0:
        count += 4
        x <<= np.uint64(4)
    if x >> U62 == U0:
        count += 2
        x <<= np.uint64(2)
    if x >> U63 == U0:
        count += 1
    return count


def _eisel_lemire(mantissa, power):
    """(mantissa * 10**power as the nearest float64, True), or (0.0, False) when the algorithm
    cannot be sure of the rounding or the result is subnormal or beyond float64; mantissa > 0.

    Eisel and Lemire's algorithm as in Go's strconv (eisel_lemire.go) and Nigel Tao's notes."""
    if power < -348 or power > 347:
        return 0.0, False
    shift = _leading_zeros(mantissa)
    mantissa = mantissa << np.uint64(shift)
    exponent = ((217706 * power) >> 16) + 64 + 1023 - shift
    index = power + 348
    x_high, x_low = _multiply_64(mantissa, POWER_HIGH[index])
    if (x_high & U64_LOW9) == U64_LOW9 and x_low + mantissa < mantissa:
        y_high, y_low = _multiply_64(mantissa, POWER_LOW[index])
        merged_high, merged_low = x_high, x_low + y_high
        if merged_low < x_low:
            merged_high += U1
        if (merged_high & U64_LOW9) == U64_LOW9 and merged_low + U1 == U0 and y_low + mantissa < mantissa:
            return 0.0, False
        x_high, x_low = merged_high, merged_low
    top = x_high >> U63
    bits = x_high >> (top + U9)
    exponent -= 1 - np.int64(top)
    if x_low == U0 and (x_high & U64_LOW9) == U0 and (bits & U3) == U1:
        return 0.0, False  # exactly halfway as far as 128 bits tell
    bits += bits & U1
    bits >>= U1
    if bits >> np.uint64(53) > U0:
        bits >>= U1
        exponent += 1
    if exponent <= 0 or exponent >= 0x7FF:
        return 0.0, False
    return math.ldexp(np.float64(bits), exponent - 1075), True  # 53 bits, scaled exactly


def _to_float(mantissa, power, negative, truncated):
    """(value, exact) of ±mantissa * 10**power; ``truncated``: digits beyond the mantissa were dropped."""
    if mantissa == U0:
        value = 0.0
    elif not truncated and mantissa <= U53_BIT and -22 <= power <= 22:
        value = np.float64(mantissa)  # Clinger: both factors exact, so one rounding
        value = value * POWERS_OF_TEN[power] if power >= 0 else value / POWERS_OF_TEN[-power]
    else:
        value, exact = _eisel_lemire(mantissa, power)
        if exact and truncated:  # the true value lies between mantissa and mantissa + 1
            upper, upper_exact = _eisel_lemire(mantissa + U1, power)
            exact = upper_exact and upper == value
        if not exact:
            return 0.0, False
    return (-value if negative else value), True


def parse_number(buf, p, e, decimal):
    """(value, code) of the cell buf[p:e] after stripping: code 0 a number, 1 empty, 2 not a
    number (by Python's float(), leaving aside inf, nan and underscores), 3 a number to leave
    to Python (its rounding or range needs more than the fast algorithms)."""
    while p < e and WHITESPACE[buf[p]]:
        p += 1
    while e > p and WHITESPACE[buf[e - 1]]:
        e -= 1
    if p == e:
        return np.nan, 1
    negative = buf[p] == 45
    if negative or buf[p] == 43:
        p += 1
    mantissa = U0
    digits = 0
    power = 0
    truncated = False
    seen = False
    while p < e and U9 >= np.uint64(buf[p]) - U_DIGIT0:
        seen = True
        digit = np.uint64(buf[p]) - U_DIGIT0
        if digits < 19:
            if digits > 0 or digit != U0:
                mantissa = mantissa * U10 + digit
                digits += 1
        else:
            power += 1
            truncated = truncated or digit != U0
        p += 1
    if p < e and buf[p] == decimal:
        p += 1
        while p < e and U9 >= np.uint64(buf[p]) - U_DIGIT0:
            seen = True
            digit = np.uint64(buf[p]) - U_DIGIT0
            if digits < 19:
                if digits > 0 or digit != U0:
                    mantissa = mantissa * U10 + digit
                    digits += 1
                power -= 1
            else:
                truncated = truncated or digit != U0
            p += 1
    if not seen:
        return 0.0, 2
    if p < e and (buf[p] == 101 or buf[p] == 69):
        p += 1
        exponent_negative = p < e and buf[p] == 45
        if p < e and (buf[p] == 45 or buf[p] == 43):
            p += 1
        exponent = 0
        exponent_seen = False
        while p < e and U9 >= np.uint64(buf[p]) - U_DIGIT0:
            exponent_seen = True
            if exponent < 100000:
                exponent = exponent * 10 + np.int64(buf[p]) - 48
            p += 1
        if not exponent_seen:
            return 0.0, 2
        power += -exponent if exponent_negative else exponent
    if p != e:
        return 0.0, 2
    value, exact = _to_float(mantissa, power, negative, truncated)
    return value, (0 if exact else 3)


def _is_marker(buf, p, e, masks, field, token_bytes, token_starts):
    """Whether the stripped cell buf[p:e] is one of the missing-value markers of column ``field``."""
    while p < e and WHITESPACE[buf[p]]:
        p += 1
    while e > p and WHITESPACE[buf[e - 1]]:
        e -= 1
    length = e - p
    for token in range(token_starts.shape[0] - 1):
        start = token_starts[token]
        if not masks[field, token] or token_starts[token + 1] - start != length:
            continue
        same = True
        for k in range(length):
            if buf[p + k] != token_bytes[start + k]:
                same = False
                break
        if same:
            return True
    return False


def _hash(buf, p, e):
    """FNV-1a of buf[p:e]."""
    value = FNV_OFFSET
    for i in range(p, e):
        value = (value ^ np.uint64(buf[i])) * FNV_PRIME
    return value


def _code_of(buf, p, e, table, hashes, rep_start, rep_length, n_unique, column):
    """The block-local code of the text buf[p:e] in ``column``'s hash table (added if new)."""
    value = _hash(buf, p, e)
    mask = table.shape[1] - 1
    slot = np.int64(value & np.uint64(mask))
    length = e - p
    while True:
        code = table[column, slot]
        if code < 0:
            code = n_unique[column]
            n_unique[column] += 1
            table[column, slot] = code
            hashes[column, slot] = value
            rep_start[column, code] = p
            rep_length[column, code] = length
            return code
        if hashes[column, slot] == value and rep_length[column, code] == length:
            at = rep_start[column, code]
            same = True
            for k in range(length):
                if buf[at + k] != buf[p + k]:
                    same = False
                    break
            if same:
                return code
        slot = (slot + 1) & mask


def _parse_records(
    buf,
    start,
    end,
    row0,
    line0,
    delimiter,
    decimal,
    keep_empty,
    kinds,
    slots,
    masks,
    token_bytes,
    token_starts,
    matrix,
    wide,
    line_numbers,
    empty,
    codes,
    table,
    hashes,
    rep_start,
    rep_length,
    n_unique,
):
    """Parse the records of buf[start:end] (which ends with a line end, and starts on line
    ``line0``) into rows row0, row0 + 1, ... of the arrays; returns (rows, flags, integral). A
    flag in FALLBACK stops at once: the block is read again by the plain reader."""
    width = kinds.shape[0]
    row = row0
    line = line0
    flags = 0
    integral = True
    pos = start
    while pos < end:
        c = buf[pos]
        if c == NL or (c == CR and buf[pos + 1] == NL):  # a blank line: no record
            pos += 1 if c == NL else 2
            line += 1
            continue
        record_line = line
        field = 0
        visible = False  # a non-whitespace character: the record is not blank
        high = False
        while True:
            kind = kinds[field] if field < width else SKIP
            slot = slots[field] if field < width else 0
            if buf[pos] == QUOTE:
                # A quoted field: up to the quote that is not doubled, then a delimiter or line end.
                q = pos + 1
                escaped = False
                while True:
                    if q >= end:
                        return row - row0, flags | QUOTING, integral
                    c = buf[q]
                    if c == QUOTE:
                        if buf[q + 1] != QUOTE:
                            break
                        escaped = True
                        q += 1
                    elif c == NL:
                        line += 1
                    elif c >= 128:
                        high = True
                    elif c == 0 and kind != SKIP:
                        return row - row0, flags | NUL, integral
                    q += 1
                after = q + 1
                if buf[after] == CR and buf[after + 1] == NL:
                    after += 1
                elif buf[after] != delimiter and buf[after] != NL:
                    return row - row0, flags | QUOTING, integral  # "ab"c: the csv module appends c
                for k in range(pos + 1, q):
                    if not WHITESPACE[buf[k]]:
                        visible = True
                        break
                if kind == NUMERIC or kind == WIDE:
                    if escaped:
                        return row - row0, flags | CELL, integral
                    value, code = parse_number(buf, pos + 1, q, decimal)
                    if code == 2 and not _is_marker(buf, pos + 1, q, masks, field, token_bytes, token_starts):
                        return row - row0, flags | CELL, integral
                    if code == 3:
                        return row - row0, flags | RANGE, integral
                    if code != 0:
                        value = np.nan
                    elif abs(value) > FLOAT32_MAX:
                        return row - row0, flags | RANGE, integral
                    elif integral and value != math.floor(value):
                        integral = False
                    if kind == NUMERIC:
                        matrix[row, slot] = np.float32(value)
                    else:
                        wide[row, slot] = value
                elif kind == TEXT:
                    # The raw field, quotes and all: Python unquotes each distinct one once.
                    codes[slot, row] = _code_of(buf, pos, q + 1, table, hashes, rep_start, rep_length, n_unique, slot)
                pos = after
            else:
                done = False
                if kind == NUMERIC or kind == WIDE:
                    # The common cell: [-+]digits[.digits] right up to the delimiter, <= 19 digits.
                    q = pos
                    negative = buf[q] == 45
                    if negative or buf[q] == 43:
                        q += 1
                    mantissa = U0
                    count = 0
                    power = 0
                    while U9 >= np.uint64(buf[q]) - U_DIGIT0:
                        mantissa = mantissa * U10 + (np.uint64(buf[q]) - U_DIGIT0)
                        count += 1
                        q += 1
                    if buf[q] == decimal:
                        q += 1
                        while U9 >= np.uint64(buf[q]) - U_DIGIT0:
                            mantissa = mantissa * U10 + (np.uint64(buf[q]) - U_DIGIT0)
                            count += 1
                            power -= 1
                            q += 1
                    c = buf[q]
                    if 0 < count <= 19 and (c == delimiter or c == NL or (c == CR and buf[q + 1] == NL)):
                        if mantissa <= U53_BIT and power >= -22:  # Clinger's case, inline: most cells
                            value = np.float64(mantissa)
                            if power < 0:
                                value = value / POWERS_OF_TEN[-power]
                                if integral and value != math.floor(value):
                                    integral = False
                            if negative:
                                value = -value
                        else:
                            value, exact = _to_float(mantissa, power, negative, False)
                            if not exact or abs(value) > FLOAT32_MAX:
                                return row - row0, flags | RANGE, integral
                            if integral and power < 0 and value != math.floor(value):
                                integral = False
                        if kind == NUMERIC:
                            matrix[row, slot] = np.float32(value)
                        else:
                            wide[row, slot] = value
                        visible = True
                        pos = q if c != CR else q + 1
                        done = True
                if not done:
                    q = pos
                    while True:
                        c = buf[q]
                        if c == delimiter or c == NL:
                            break
                        if c >= 128:
                            high = True
                        elif c == 0 and kind != SKIP:
                            return row - row0, flags | NUL, integral
                        elif c == QUOTE and (kind == NUMERIC or kind == WIDE):
                            return row - row0, flags | CELL, integral  # a literal quote: not a number
                        elif not visible and not WHITESPACE[c]:
                            visible = True
                        q += 1
                    if kind == NUMERIC or kind == WIDE:
                        value, code = parse_number(buf, pos, q, decimal)
                        if code == 2 and not _is_marker(buf, pos, q, masks, field, token_bytes, token_starts):
                            return row - row0, flags | CELL, integral
                        if code == 3:
                            return row - row0, flags | RANGE, integral
                        if code != 0:
                            value = np.nan
                        elif abs(value) > FLOAT32_MAX:
                            return row - row0, flags | RANGE, integral
                        elif integral and value != math.floor(value):
                            integral = False
                        if kind == NUMERIC:
                            matrix[row, slot] = np.float32(value)
                        else:
                            wide[row, slot] = value
                    elif kind == TEXT:
                        p, e = pos, q
                        while p < e and WHITESPACE[buf[p]]:
                            p += 1
                        while e > p and WHITESPACE[buf[e - 1]]:
                            e -= 1
                        codes[slot, row] = _code_of(buf, p, e, table, hashes, rep_start, rep_length, n_unique, slot)
                    pos = q
            # pos is at the delimiter or the line end after the field
            if buf[pos] == delimiter:
                pos += 1
                field += 1
                continue
            pos += 1
            line += 1
            break
        if high:
            flags |= HIGH
        if not visible:
            if high:
                return row - row0, flags | UNSURE, integral
            if field + 1 != width or not keep_empty:
                continue  # a blank record is skipped, as the csv module's reader loop skips it
            empty[row] = True
        elif field + 1 != width:
            return row - row0, flags | WIDTH, integral
        else:
            empty[row] = False
        line_numbers[row] = record_line
        row += 1
    return row - row0, flags, integral


def _count_newlines(buf, start, end):
    count = 0
    for i in range(start, end):
        count += buf[i] == NL
    return count


def _parse_block(
    buf,
    start,
    end,
    row0,
    line0,
    newlines,
    delimiter,
    decimal,
    keep_empty,
    kinds,
    slots,
    masks,
    token_bytes,
    token_starts,
    matrix,
    wide,
    line_numbers,
    empty,
    codes,
):
    """Parse the block buf[start:end] (``newlines`` line ends) into rows row0, ... of the arrays
    (one thread's work item): (rows, flags, integral, and for each text column the offset and
    length of each distinct cell, and their number)."""
    n_text = codes.shape[0]
    capacity = max(newlines, 1)
    size = 16
    while size < 2 * capacity:
        size *= 2
    table = np.full((n_text, size if n_text else 1), -1, dtype=np.int64)
    hashes = np.zeros(table.shape, dtype=np.uint64)
    rep_start = np.empty((n_text, capacity), dtype=np.int64)
    rep_length = np.empty((n_text, capacity), dtype=np.int64)
    n_unique = np.zeros(n_text, dtype=np.int64)
    rows, flags, integral = _parse_records(
        buf,
        start,
        end,
        row0,
        line0,
        delimiter,
        decimal,
        keep_empty,
        kinds,
        slots,
        masks,
        token_bytes,
        token_starts,
        matrix,
        wide,
        line_numbers,
        empty,
        codes,
        table,
        hashes,
        rep_start,
        rep_length,
        n_unique,
    )
    return rows, flags, integral, rep_start, rep_length, n_unique


def _record_cuts(buf, start, end, delimiter, block_bytes):
    """Where to cut buf[start:end] into blocks of about ``block_bytes`` whole records, by the csv
    module's rules for quotes: the cut offsets, the last being the end of the last whole record
    (``start`` when there is none)."""
    state = 0  # 0 at a field's start, 1 in an unquoted field, 2 in a quoted one, 3 just after its quote
    cuts = np.empty(16, dtype=np.int64)
    n = 0
    last = start
    target = start + block_bytes
    for i in range(start, end):
        c = buf[i]
        if state == 2:
            if c == QUOTE:
                state = 3
            continue
        if c == NL:
            state = 0
            last = i + 1
            if last >= target:
                if n == cuts.shape[0]:
                    grown = np.empty(2 * n, dtype=np.int64)
                    grown[:n] = cuts
                    cuts = grown
                cuts[n] = last
                n += 1
                target = last + block_bytes
        elif c == delimiter:
            state = 0
        elif c == QUOTE:
            state = 2 if state == 0 or state == 3 else 1
        else:
            state = 1
    if n == 0 or cuts[n - 1] != last:
        if n == cuts.shape[0]:
            grown = np.empty(n + 1, dtype=np.int64)
            grown[:n] = cuts
            cuts = grown
        cuts[n] = last
        n += 1
    return cuts[:n]


_KERNEL_NAMES = (
    "_count_newlines",
    "_multiply_64",
    "_leading_zeros",
    "_eisel_lemire",
    "_to_float",
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
_helper = None  # the helper process this process started (one at most), as subprocess.Popen
_HELPER = "import os; os.nice(19); from dltrain.data import fastcsv; fastcsv.compile_into_cache()"
_HELPER_LOCK = "fastcsv.compiling.lock"  # held by the helper compiling, in the cache folder


def _compiled() -> dict:
    """The kernels as numba dispatchers (each compiled, or loaded from the disk cache, on its
    first call), cached on disk like the engine's."""
    global _compiled_kernels, _on_disk
    if _compiled_kernels is None:
        import numba

        namespace = dict(globals())
        on_disk = True
        for name in _KERNEL_NAMES:
            function = globals()[name]
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
    for name, arguments in calls:
        kernel = kernels_[name]
        signature = tuple(kernel.typeof_pyval(value) for value in arguments)  # as numba looks it up
        if signature not in kernel.overloads and not kernel_cache.holds(kernel, signature):
            _start_helper()
            return False
    return True


def _start_helper() -> None:
    """Start a helper process (once per process) that compiles the kernels into the disk cache.
    It runs at the lowest priority, so it takes only a core that nothing else wants; nothing
    waits for it (it goes on after this process ends) and it writes nowhere but to the cache."""
    global _helper
    if _helper is not None:
        _helper.poll()  # reaped once it has ended
        return
    if not sys.executable:
        return
    import atexit
    import subprocess

    source_root = str(Path(__file__).resolve().parents[2])  # where this dltrain is imported from
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    try:
        _helper = subprocess.Popen(
            [sys.executable, "-c", _HELPER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environ,
        )
    except OSError:
        return  # reading goes on without it; a later read starts another
    atexit.register(_leave_helper)


def _leave_helper() -> None:
    """At exit: let the helper finish on its own, without Python's warning that it still runs."""
    global _helper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _helper = None


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

    ``sink`` (csv.Gathered) holds the arrays the kernels write into: ``matrix``,
    ``wide_values``, ``lines``, ``empty`` and ``code_matrix`` (text as codes into one vocabulary
    per column), with ``rows`` filled so far; ``reserve(rows, hint)`` makes room. The table
    parses any block the kernels cannot (and raises its errors, and its _Restart when a numeric
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
