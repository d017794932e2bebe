"""CSV text for predictions, a block of rows at a time, byte for byte what ``csv.writer`` writes
from ``format_number``'s texts: the shortest text that reads back as the same float32.

Two paths with one behaviour. The reference path formats each number with NumPy
(``format_number``) and writes the rows with the csv module: one Python call per cell, about
2 µs each, which for millions of rows is most of `dltrain predict`'s time. The fast path
(numba, when installed) finds each float32's shortest digits with Ryu's algorithm (Ulf Adams,
"Ryū: fast float-to-string conversion", PLDI 2018: two 64-bit multiplications by a power of 5
and a short loop), which gives the digits NumPy's Dragon4 gives in its ``unique`` mode (the
shortest that round-trip, the closest to the value among them, ties to even), lays them out
as NumPy does (positional from 1e-4 to below 1e16, else scientific), and copies every field of
a row into one byte buffer. Text fields (labels, kept columns) are quoted once per distinct
value. Tests compare both paths on random bit patterns, every boundary of the layout and the
extremes of float32.
"""

from __future__ import annotations

import csv
import io
import types

import numpy as np

from .engine import kernel_cache, kernels

# Blocks smaller than this are written by the reference path: importing numba and loading the
# kernels costs more than formatting a few thousand cells in Python.
FAST_MIN_CELLS = 20_000
# Where the kernels are compiled neither in this process nor in the disk cache (a fresh install),
# compiling them makes the output wait 10-17 s here, what the reference path takes for about
# 3 million numbers (~4 us each): the reference path writes the blocks, and a helper process
# compiles the kernels into the cache for the next command, until this process has written this
# many numbers by the reference path; after that it compiles them (a file that big pays for it).
# So a cold cache never costs more than about twice the better of the two choices.
COMPILE_PAYS_CELLS = 3_000_000
_written_cold = 0  # numbers written by the reference path while the kernels were cold
_HELPER = "import os; os.nice(19); from dltrain import csv_text; csv_text.compile_into_cache()"
_helper = kernel_cache.CompileHelper(_HELPER)  # compiles the kernels into the disk cache

_INV_BITCOUNT, _BITCOUNT = 59, 61  # Ryu's precision for 5^-q and 5^i (f2s.c)
# Positional layout from float32(1e-4) up to, not including, float32(1e16) (see format_number):
# as positive float32 bits are ordered as the numbers, the bounds compare as integers.
_POSITIONAL_LOW = int(np.float32(1e-4).view(np.uint32))
_POSITIONAL_HIGH = int(np.float32(1e16).view(np.uint32))
_NAN, _INF = np.frombuffer(b"nan", dtype=np.uint8), np.frombuffer(b"inf", dtype=np.uint8)
MAX_NUMBER_BYTES = 24  # "-1234567890123456", "-1.2345678e-38", "-0.00012345678": at most 17


def format_number(value) -> str:
    """The shortest text that reads back as the same float32, the model's precision: 0.5,
    151.25, 2.55662e-11. One format for predicted values and probabilities alike."""
    single = np.float32(value)
    if single == 0 or 1e-4 <= abs(single) < 1e16 or not np.isfinite(single):
        return np.format_float_positional(single, unique=True, trim="-")
    return np.format_float_scientific(single, unique=True, trim="-")


def _pow5bits(e):
    """ceil(log2(5^e)) for e > 0, and 1 for e = 0."""
    return ((e * 1217359) >> 19) + 1


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Ryu's tables for float32: 5^-q scaled up (q < 31) and 5^i scaled down (i < 48), as int64."""
    inverse = [(1 << (_pow5bits(q) - 1 + _INV_BITCOUNT)) // 5**q + 1 for q in range(31)]
    powers = []
    for i in range(48):
        shift = _pow5bits(i) - _BITCOUNT
        powers.append(5**i >> shift if shift >= 0 else 5**i << -shift)
    return np.array(inverse, dtype=np.int64), np.array(powers, dtype=np.int64)


def _mul_shift(m, factor, shift):
    """(m * factor) >> shift without 128 bits: m < 2^26 and factor < 2^62 (all int64)."""
    low = factor & 0xFFFFFFFF
    high = factor >> 32
    return (((m * low) >> 32) + m * high) >> (shift - 32)


def _fives(value):
    """How many times 5 divides ``value`` (> 0)."""
    count = 0
    while value % 5 == 0:
        value //= 5
        count += 1
    return count


def _interval(bits, inverse, powers):
    """Ryu's steps 2 and 3 for the float32 of ``bits``: the value and the ends of the interval that
    reads back as it, scaled by a power of ten (vr, vp, vm, that power), whether vm and vr are
    exact (trailing zeros cut), and the last digit cut from vr."""
    mantissa = bits & 0x7FFFFF
    biased = (bits >> 23) & 0xFF
    e2 = (1 if biased == 0 else biased) - 127 - 23 - 2
    m2 = mantissa if biased == 0 else (1 << 23) | mantissa
    even = (m2 & 1) == 0
    mv = 4 * m2
    mp = mv + 2
    mm_shift = 1 if (mantissa != 0 or biased <= 1) else 0
    mm = mv - 1 - mm_shift
    vm_zeros = False
    vr_zeros = False
    last = 0
    if e2 >= 0:
        q = (e2 * 78913) >> 18  # floor(log10(2^e2))
        e10 = q
        shift = -e2 + q + _INV_BITCOUNT + _pow5bits(q) - 1
        vr = _mul_shift(mv, inverse[q], shift)
        vp = _mul_shift(mp, inverse[q], shift)
        vm = _mul_shift(mm, inverse[q], shift)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            shift = -e2 + q - 1 + _INV_BITCOUNT + _pow5bits(q - 1) - 1
            last = _mul_shift(mv, inverse[q - 1], shift) % 10
        if q <= 9:
            if mv % 5 == 0:
                vr_zeros = _fives(mv) >= q
            elif even:
                vm_zeros = _fives(mm) >= q
            elif _fives(mp) >= q:
                vp -= 1
    else:
        q = (-e2 * 732923) >> 20  # floor(log10(5^-e2))
        e10 = q + e2
        i = -e2 - q
        shift = q - (_pow5bits(i) - _BITCOUNT)
        vr = _mul_shift(mv, powers[i], shift)
        vp = _mul_shift(mp, powers[i], shift)
        vm = _mul_shift(mm, powers[i], shift)
        if q != 0 and (vp - 1) // 10 <= vm // 10:
            shift = q - 1 - (_pow5bits(i + 1) - _BITCOUNT)
            last = _mul_shift(mv, powers[i + 1], shift) % 10
        if q <= 1:
            vr_zeros = True
            if even:
                vm_zeros = mm_shift == 1
            else:
                vp -= 1
        elif q < 31:
            vr_zeros = (mv & ((1 << (q - 1)) - 1)) == 0
    return vr, vp, vm, e10, vm_zeros, vr_zeros, last, even


def _shortest(bits, inverse, powers):
    """(digits, exponent) with the float32 of ``bits`` (finite, not zero, sign ignored) equal to
    digits × 10^exponent once read back: Ryu's f2s (step 4: the shortest in the interval, the
    closest to the value among them), in int64."""
    vr, vp, vm, e10, vm_zeros, vr_zeros, last, even = _interval(bits, inverse, powers)
    removed = 0
    if vm_zeros or vr_zeros:  # the rare case: exact ties and interval ends that are short numbers
        while vp // 10 > vm // 10:
            vm_zeros = vm_zeros and vm % 10 == 0
            vr_zeros = vr_zeros and last == 0
            last = vr % 10
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        if vm_zeros:
            while vm % 10 == 0:
                vr_zeros = vr_zeros and last == 0
                last = vr % 10
                vr //= 10
                vp //= 10
                vm //= 10
                removed += 1
        if vr_zeros and last == 5 and vr % 2 == 0:
            last = 4  # exactly halfway: to the even digit
        up = (vr == vm and (not even or not vm_zeros)) or last >= 5
    else:
        while vp // 10 > vm // 10:
            last = vr % 10
            vr //= 10
            vp //= 10
            vm //= 10
            removed += 1
        up = vr == vm or last >= 5
    digits = vr + 1 if up else vr
    exponent = e10 + removed
    while digits % 10 == 0:
        digits //= 10
        exponent += 1
    return digits, exponent


def _put_bytes(out, pos, text):
    """``text`` (uint8 codes) into ``out`` from ``pos``; the end."""
    for index in range(len(text)):
        out[pos + index] = text[index]
    return pos + len(text)


def _write_number(bits, out, pos, inverse, powers):
    """The float32 of ``bits`` as ``format_number`` writes it, into ``out`` from ``pos``; the end."""
    magnitude = bits & 0x7FFFFFFF
    negative = bits >> 31
    if magnitude > 0x7F800000:
        return _put_bytes(out, pos, _NAN)
    if negative:
        out[pos] = 45  # -
        pos += 1
    if magnitude == 0x7F800000:
        return _put_bytes(out, pos, _INF)
    if magnitude == 0:
        out[pos] = 48
        return pos + 1
    digits, exponent = _shortest(magnitude, inverse, powers)
    count = 1
    scale = 10
    while digits >= scale:
        count += 1
        scale *= 10
    first = exponent + count - 1  # the power of ten of the first digit
    if _POSITIONAL_LOW <= magnitude < _POSITIONAL_HIGH:
        if first < 0:  # 0.000ddd
            out[pos] = 48
            out[pos + 1] = 46
            pos += 2
            for _ in range(-first - 1):
                out[pos] = 48
                pos += 1
            return _put_digits(out, pos, digits, count, count)
        whole = first + 1  # digits before the point
        if count <= whole:  # an integer: its digits, then zeros
            pos = _put_digits(out, pos, digits, count, count)
            for _ in range(whole - count):
                out[pos] = 48
                pos += 1
            return pos
        return _put_digits(out, pos, digits, count, whole)
    pos = _put_digits(out, pos, digits, count, 1)
    out[pos] = 101  # e
    out[pos + 1] = 45 if first < 0 else 43
    pos += 2
    power = -first if first < 0 else first
    if power >= 100:
        out[pos] = 48 + power // 100
        pos += 1
    out[pos] = 48 + (power // 10) % 10
    out[pos + 1] = 48 + power % 10
    return pos + 2


def _put_digits(out, pos, digits, count, whole):
    """The ``count`` digits of ``digits``, a point after the first ``whole`` when some follow it."""
    point = 1 if whole < count else 0
    end = pos + count + point
    place = end - 1
    for index in range(count - 1, -1, -1):
        if index == whole - 1 and point:
            out[place] = 46  # .
            place -= 1
        out[place] = 48 + digits % 10
        digits //= 10
        place -= 1
    return end


def _format_numbers(bits, inverse, powers):
    """Each float32 (as int64 ``bits``) as text: (bytes, offsets), cell k in bytes[offsets[k]:offsets[k+1]]."""
    out = np.empty(len(bits) * MAX_NUMBER_BYTES, dtype=np.uint8)
    offsets = np.empty(len(bits) + 1, dtype=np.int64)
    pos = 0
    offsets[0] = 0
    for index in range(len(bits)):
        pos = _write_number(bits[index], out, pos, inverse, powers)
        offsets[index + 1] = pos
    return out[:pos], offsets


def _join_fields(data, offsets, entries, out):
    """Rows of fields into ``out``: row r is the texts entries[r, 0], entries[r, 1], ... of
    (data, offsets), separated by commas, each row ended by a line break."""
    pos = 0
    n_rows, n_fields = entries.shape
    for row in range(n_rows):
        for field in range(n_fields):
            entry = entries[row, field]
            start = offsets[entry]
            for index in range(offsets[entry + 1] - start):
                out[pos + index] = data[start + index]
            pos += offsets[entry + 1] - start
            out[pos] = 44 if field + 1 < n_fields else 10
            pos += 1
    return pos


_KERNEL_NAMES = (
    "_pow5bits",
    "_mul_shift",
    "_fives",
    "_interval",
    "_shortest",
    "_put_bytes",
    "_write_number",
    "_put_digits",
    "_format_numbers",
    "_join_fields",
)
_compiled_kernels: dict | None = None


def _compiled() -> dict:
    """The kernels compiled by numba (on first use; cached on disk like the engine's)."""
    global _compiled_kernels
    if _compiled_kernels is None:
        import numba

        namespace = dict(globals())
        for name in _KERNEL_NAMES:
            function = globals()[name]
            copy = types.FunctionType(function.__code__, namespace, name, function.__defaults__, function.__closure__)
            copy.__qualname__ = function.__qualname__
            copy.__module__ = function.__module__
            dispatcher = numba.njit(nogil=True, error_model="numpy")(copy)
            kernel_cache.enable(dispatcher)
            namespace[name] = dispatcher
        namespace["_TABLES"] = _tables()
        _compiled_kernels = namespace
    return _compiled_kernels


def fast_path(cells: int) -> bool:
    """Whether ``cells`` numbers are written by the kernels: numba there, enough of them, and
    the kernels compiled (in this process or the disk cache), or enough written without them."""
    global _written_cold
    if cells < FAST_MIN_CELLS or not kernels.ready():
        return False
    if _written_cold >= COMPILE_PAYS_CELLS or _warm():
        return True
    _helper.start()
    _written_cold += cells
    return False


def _warm() -> bool:
    compiled = _compiled()
    bits, data, offsets, out = (np.zeros(2, dtype=dtype) for dtype in (np.int64, np.uint8, np.int64, np.uint8))
    calls = {
        "_format_numbers": (bits, *compiled["_TABLES"]),
        "_join_fields": (data, offsets, np.zeros((1, 1), np.int64), out),
    }
    return all(kernel_cache.warm(compiled[name], arguments) for name, arguments in calls.items())


def compile_into_cache() -> None:
    """The helper process: compile the kernels into the disk cache by writing two rows through
    them (the types every block passes them)."""
    table = FieldTable.of_words(["a"])
    csv_rows([(table, np.zeros(2, dtype=np.int64))], np.zeros((2, 2), dtype=np.float32))


def number_texts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every number of ``values`` (read as float32) as ``format_number``'s text, by the kernels:
    (bytes, offsets), number k (in C order) in bytes[offsets[k]:offsets[k+1]]."""
    compiled = _compiled()
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.int64)
    return compiled["_format_numbers"](bits, *compiled["_TABLES"])


def csv_field(text: str) -> str:
    """``text`` as csv.writer writes a field of a row of several (quoted where it must be)."""
    if not any(mark in text for mark in ',"\r\n'):
        return text  # QUOTE_MINIMAL leaves such a field as it is
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([text, ""])
    return buffer.getvalue()[: -len(",\n")]


class FieldTable:
    """Text fields as one byte buffer: field k in data[offsets[k]:offsets[k+1]] (already quoted)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    @classmethod
    def of_words(cls, words, encoding: str = "utf-8") -> "FieldTable":
        """Distinct texts (labels, a kept column's cells), each quoted and encoded once."""
        encoded = [csv_field(str(word)).encode(encoding) for word in words]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(text) for text in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def rows_text(text_columns: list, numbers: np.ndarray, encoding: str = "utf-8") -> bytes:
    """Rows of CSV text, "\\n" after each, encoded: first the text columns, each a pair (its
    distinct cells, each row's index among them), then each number of ``numbers`` (rows, k) as
    ``format_number`` writes it. By the kernels when there are enough numbers to pay for them."""
    if fast_path(numbers.size):
        tables = [(FieldTable.of_words(words, encoding), indices) for words, indices in text_columns]
        return csv_rows(tables, numbers)
    return csv_rows_reference(text_columns, numbers, encoding)


def csv_rows(text_columns: list[tuple[FieldTable, np.ndarray]], numbers: np.ndarray) -> bytes:
    """``rows_text`` by the kernels, the text columns' cells already quoted and encoded."""
    compiled = _compiled()
    n_rows = numbers.shape[0]
    number_data, number_offsets = number_texts(numbers)
    tables = [table for table, _ in text_columns]
    data = np.concatenate([table.data for table in tables] + [number_data])
    offsets = [np.zeros(1, dtype=np.int64)]
    entries = np.empty((n_rows, len(tables) + numbers.shape[1]), dtype=np.int64)
    base_entry, base_byte = 0, 0
    for position, (table, indices) in enumerate(text_columns):
        offsets.append(table.offsets[1:] + base_byte)
        entries[:, position] = base_entry + np.asarray(indices, dtype=np.int64)
        base_entry, base_byte = base_entry + len(table), base_byte + len(table.data)
    offsets.append(number_offsets[1:] + base_byte)
    entries[:, len(tables) :] = base_entry + np.arange(numbers.size, dtype=np.int64).reshape(numbers.shape)
    all_offsets = np.concatenate(offsets)
    size = int((all_offsets[entries + 1] - all_offsets[entries]).sum()) + entries.size
    out = np.empty(size, dtype=np.uint8)
    written = compiled["_join_fields"](data, all_offsets, entries, out)
    return out[:written].tobytes()


def csv_rows_reference(text_columns: list, numbers: np.ndarray, encoding: str = "utf-8") -> bytes:
    """``rows_text`` by the reference path: ``format_number`` of each number, and csv.writer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [np.asarray(words, dtype=object)[np.asarray(indices)].tolist() for words, indices in text_columns]
    formatted = [[format_number(value) for value in row] for row in numbers.tolist()]
    writer.writerows([[column[index] for column in columns] + row for index, row in enumerate(formatted)])
    return buffer.getvalue().encode(encoding)
