"""Records from raw bytes for the CSV reader's fast path (fastcsv.py): plain Python that numba
compiles (each also runs as Python, slowly).

A block of whole records is split into fields as the csv module splits them, numbers converted
by fastnumbers.py, missing-value markers found, text cells deduplicated into a small vocabulary
per block; what the kernel cannot do exactly marks the block with a reason (the flags below),
and the block is read again by the plain reader.
"""

import math

import numpy as np

from .fastnumbers import (
    FLOAT32_MAX,
    FNV_OFFSET,
    FNV_PRIME,
    POWERS_OF_TEN,
    U0,
    U9,
    U10,
    U53_BIT,
    U_DIGIT0,
    WHITESPACE,
    parse_number,
    to_float,
)

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
                            value, exact = to_float(mantissa, power, negative, False)
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
