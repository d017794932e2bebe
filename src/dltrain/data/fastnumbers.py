"""Numbers from raw bytes for the CSV reader's fast path (fastcsv.py): plain Python that numba
compiles (each also runs as Python, slowly).

A number is converted exactly: Clinger's fast path when its digits fit in 53 bits and the power
of ten is exact, else the Eisel-Lemire algorithm, which says when it cannot be sure (the block
then goes back to the plain reader).
"""

import math

import numpy as np

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


def to_float(mantissa, power, negative, truncated):
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
    value, exact = to_float(mantissa, power, negative, truncated)
    return value, (0 if exact else 3)
