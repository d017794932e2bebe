"""Date columns: one format per column, cells parsed without a Python call per cell, and the
numbers a model sees (year, month, day, weekday, day of year, hour, minute; month and weekday
also as a point on a circle, so December sits next to January).

A cell is matched by its *skeleton*, the cell with every digit written as 9: the few distinct
skeletons of a column ('9999-99-99', '9999-9-99 99:99') are matched against the format once
each, in Python, and the digits at the matched positions are read for all the rows that share
a skeleton at once, as arrays of character codes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# What a date column can become, in this order; a column keeps those that vary in its training rows.
DATE_PARTS = (
    "year",
    "month",
    "month_sin",
    "month_cos",
    "day",
    "weekday",
    "weekday_sin",
    "weekday_cos",
    "dayofyear",
    "hour",
    "minute",
)
_PARTS_BY = {  # the parts each calendar field brings when it varies
    "year": ("year",),
    "month": ("month", "month_sin", "month_cos"),
    "day": ("day", "weekday", "weekday_sin", "weekday_cos", "dayofyear"),
    "hour": ("hour",),
    "minute": ("minute",),
}
ISO_FORMAT = "%Y-%m-%d %H:%M:%S"  # how fills are stored
DIRECTIVES = {"Y": "a 4-digit year", "y": "a 2-digit year", "m": "month", "d": "day", "H": "hour", "M": "minute"}
DIRECTIVES["S"] = "second"
_TIME = ("H", "M", "S")
_CHUNK_ROWS = 1 << 16  # rows whose character codes are held at once
_MAX_SKELETONS = 1000  # distinct cell shapes checked per chunk; a date column has a handful
# Year-first forms are read without a format; day/month-first ones when the data settles the order.
YEAR_FIRST = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y-%m")
DAY_MONTH = (("%d/%m/%Y", "%m/%d/%Y"), ("%d.%m.%Y", "%m.%d.%Y"), ("%d-%m-%Y", "%m-%d-%Y"))
_LOOKS_LIKE_A_DATE = re.compile(
    r"^(\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
DATE_SAMPLE = 200  # cells looked at before a column is parsed as dates


@dataclass(frozen=True)
class DateFormat:
    """A format such as ``%d/%m/%Y %H:%M``, compiled to a pattern over cell skeletons."""

    text: str
    pattern: re.Pattern


def compile_format(text: str) -> DateFormat:
    """The format, checked; a ValueError says what is wrong with it.

    Directives: %Y %y %m %d %H %M %S (and %% for a percent sign); the rest is matched as
    written, except that a space before %H also matches 'T'. Trailing time fields may be left
    out of a cell; a format without %H also reads an ISO time after the date (' 10:30',
    'T10:30:00'). Fractions of a second and a time-zone suffix (Z, +02:00) are accepted and
    ignored: the time as written is used."""
    tokens: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        character = text[index]
        if character == "%":
            directive = text[index + 1 : index + 2]
            if directive == "%":
                tokens.append(("literal", "%"))
            elif directive in DIRECTIVES:
                tokens.append(("field", directive))
            else:
                raise ValueError(
                    f"%{directive} is not a directive dates understand; use %Y %y %m %d %H %M %S "
                    "(numbers only, no month names)"
                )
            index += 2
            continue
        if character.isdigit():
            raise ValueError(f"a digit ({character!r}) outside a directive; only separators may be written as text")
        tokens.append(("literal", character))
        index += 1
    fields = [value for kind, value in tokens if kind == "field"]
    repeated = sorted({field for field in fields if fields.count(field) > 1})
    if repeated:
        raise ValueError(f"%{repeated[0]} appears twice")
    if "Y" in fields and "y" in fields:
        raise ValueError("both %Y and %y; give the year once")
    if "Y" not in fields and "y" not in fields:
        raise ValueError("no year (%Y or %y); a date needs one")
    for field, needs in (("d", "m"), ("M", "H"), ("S", "M")):
        if field in fields and needs not in fields:
            raise ValueError(f"%{field} without %{needs}")
    return DateFormat(text, re.compile(_regex(tokens)))


def _regex(tokens: list) -> str:
    """The pattern a skeleton must match: one named group per field."""

    def width(position: int, value: str) -> str:
        if value == "Y":
            return "9999"
        adjacent = any(
            0 <= neighbour < len(tokens) and tokens[neighbour][0] == "field"
            for neighbour in (position - 1, position + 1)
        )
        return "99" if value in ("y", "M", "S") or adjacent else "99?"  # fields side by side have 2 digits

    def literal(position: int, value: str) -> str:
        follows_time = position + 1 < len(tokens) and tokens[position + 1] == ("field", "H")
        return "[ T]" if value in (" ", "T") and follows_time else re.escape(value)

    fields = [value for kind, value in tokens if kind == "field"]
    # Trailing time fields are optional: from the separator before %H, each field and its separator nest.
    time_start = None
    if "H" in fields and all(value in _TIME for value in fields[fields.index("H") :]):
        hour = tokens.index(("field", "H"))
        time_start = hour - 1 if hour > 0 and tokens[hour - 1][0] == "literal" else hour
    parts, closing = [], ""
    for position, (kind, value) in enumerate(tokens):
        if time_start is not None and (
            position == time_start or (position > time_start and tokens[position - 1][0] == "field")
        ):
            parts.append("(?:")  # each time field, with the separator before it, may be left out
            closing += ")?"
        if kind == "field":
            parts.append(f"(?P<{value}>{width(position, value)})")
            if value == "S":
                parts.append("(?:[.,]9+)?")
        else:
            parts.append(literal(position, value))
    text = "".join(parts) + closing
    if "H" not in fields:
        text += "(?:[ T](?P<H>99?):(?P<M>99)(?::(?P<S>99)(?:[.,]9+)?)?)?"
    return f"{text}(?:Z|[+-]99:?99)?"


@dataclass
class ParsedDates:
    """Calendar fields of every cell (int64; 0 where a cell is missing or not a date)."""

    year: np.ndarray
    month: np.ndarray
    day: np.ndarray
    hour: np.ndarray
    minute: np.ndarray
    second: np.ndarray
    days: np.ndarray  # days since 1970-01-01
    missing: np.ndarray  # empty cells
    bad: np.ndarray  # cells that are not a date in the format

    @property
    def valid(self) -> np.ndarray:
        return ~self.missing & ~self.bad

    def seconds(self) -> np.ndarray:
        """Seconds since 1970-01-01 00:00, as written (no time zone)."""
        return self.days * 86400 + self.hour * 3600 + self.minute * 60 + self.second

    def take(self, rows) -> "ParsedDates":
        return ParsedDates(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


def parse_dates(values: np.ndarray, date_format: DateFormat | str) -> ParsedDates:
    """Every cell of ``values`` (str, "" for missing) read with ``date_format``."""
    if isinstance(date_format, str):
        date_format = compile_format(date_format)
    values = np.asarray(values)
    if values.dtype.kind != "U":
        values = values.astype(str)
    values = values.reshape(-1)
    n_rows = values.size
    fields = {name: np.zeros(n_rows, dtype=np.int64) for name in ("Y", "y", "m", "d", "H", "M", "S")}
    seen = {name: np.zeros(n_rows, dtype=bool) for name in ("y", "m", "d")}
    missing = values == ""
    bad = np.zeros(n_rows, dtype=bool)
    width = values.dtype.itemsize // 4
    matches: dict[str, dict | None] = {}
    for begin in range(0, n_rows if width else 0, _CHUNK_ROWS):
        chunk = np.ascontiguousarray(values[begin : begin + _CHUNK_ROWS])
        codes = chunk.view(np.uint32).reshape(chunk.size, width)
        digit = (codes >= 48) & (codes <= 57)
        skeletons = np.where(digit, np.uint32(57), codes).astype(np.uint32).view(f"U{width}").reshape(-1)
        unique, inverse, counts = np.unique(skeletons, return_inverse=True, return_counts=True)
        order = np.argsort(inverse.reshape(-1), kind="stable")
        ends = np.cumsum(counts)
        checked = set(np.argsort(-counts, kind="stable")[:_MAX_SKELETONS].tolist())
        for position, skeleton in enumerate(unique.tolist()):
            rows = order[ends[position] - counts[position] : ends[position]]
            if skeleton == "":
                continue
            if skeleton not in matches:
                found = date_format.pattern.fullmatch(skeleton) if position in checked else None
                matches[skeleton] = found and {name: found.span(name) for name in found.groupdict() if found[name]}
            spans = matches[skeleton]
            if spans is None:
                bad[begin + rows] = True
                continue
            for name, (start, end) in spans.items():
                powers = 10 ** np.arange(end - start - 1, -1, -1, dtype=np.int64)
                digits = codes[rows, start:end].astype(np.int64) - 48
                fields[name][begin + rows] = digits @ powers
                if name in seen:
                    seen[name][begin + rows] = True
    year = np.where(seen["y"], np.where(fields["y"] < 69, 2000, 1900) + fields["y"], fields["Y"])
    month = np.where(seen["m"], fields["m"], 1)
    day = np.where(seen["d"], fields["d"], 1)
    hour, minute, second = fields["H"], fields["M"], fields["S"]
    good = ~missing & ~bad
    bad |= good & ((month < 1) | (month > 12) | (day < 1) | (hour > 23) | (minute > 59) | (second > 59))
    month_index = (year - 1970) * 12 + np.clip(month, 1, 12) - 1
    first = month_index.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    following = (month_index + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    bad |= ~missing & ~bad & (day > following - first)
    for array in (year, month, day, hour, minute, second):
        array[~(~missing & ~bad)] = 0
    days = np.where(~missing & ~bad, first + day - 1, 0)
    return ParsedDates(year, month, day, hour, minute, second, days, missing, bad)


def date_features(parsed: ParsedDates, parts) -> np.ndarray:
    """float32 (rows, len(parts)): the chosen parts of each date, NaN where a cell has none."""
    year_start = (parsed.year - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    weekday = (parsed.days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    month_angle = 2 * np.pi * (parsed.month - 1) / 12
    weekday_angle = 2 * np.pi * weekday / 7
    values = {
        "year": lambda: parsed.year,
        "month": lambda: parsed.month,
        "month_sin": lambda: np.sin(month_angle),
        "month_cos": lambda: np.cos(month_angle),
        "day": lambda: parsed.day,
        "weekday": lambda: weekday,
        "weekday_sin": lambda: np.sin(weekday_angle),
        "weekday_cos": lambda: np.cos(weekday_angle),
        "dayofyear": lambda: parsed.days - year_start + 1,
        "hour": lambda: parsed.hour,
        "minute": lambda: parsed.minute,
    }
    matrix = np.empty((parsed.days.size, len(parts)), dtype=np.float32)
    for position, part in enumerate(parts):
        matrix[:, position] = values[part]()
    matrix[~parsed.valid] = np.nan
    return matrix


def varying_parts(parsed: ParsedDates) -> list[str]:
    """The parts worth a model input: those of the calendar fields that vary among the valid cells.

    Dates that are all the first of a month have no day, weekday or day of year to learn from
    (their weekday is an accident of the calendar); dates without a time have no hour."""
    valid = parsed.valid
    chosen: list[str] = []
    for field, parts in _PARTS_BY.items():
        values = getattr(parsed, field)[valid]
        if values.size and values.min() != values.max():
            chosen.extend(parts)
    return chosen or ["year"]


def iso_text(seconds: float) -> str:
    """A time as stored for a fill: '2012-01-31T10:00:00'."""
    return str(np.datetime_as_string(np.datetime64(int(round(seconds)), "s")))


@dataclass
class DateGuess:
    """How a text column reads as dates: the format, others that read it as well, and the parse."""

    format: str
    alternatives: list
    parsed: ParsedDates


def looks_like_dates(sample: list) -> bool:
    """Whether the first DATE_SAMPLE non-empty cells of a column look enough like dates to try
    parsing it as dates (``detect_date_format``'s first test)."""
    return bool(sample) and sum(bool(_LOOKS_LIKE_A_DATE.match(cell)) for cell in sample) * 2 >= len(sample)


def detect_date_format(values: np.ndarray) -> DateGuess | None:
    """The format that reads at least half the non-empty cells as dates, or None.

    Year-first forms (2012-01-31, 2012/01/31, with a time or not) are read as such; 31/01/2012
    is day-first only when some cell has a day above 12 and none reads as month-first; when
    both orders read every cell, ``alternatives`` holds the other one (the caller asks for a format)."""
    present = values[values != ""]
    sample = present[:DATE_SAMPLE].tolist()
    if not looks_like_dates(sample):
        return None
    candidates = [*YEAR_FIRST, *(text for pair in DAY_MONTH for text in pair)]
    results = []
    for text in candidates:
        compiled = compile_format(text)
        skeletons = {re.sub(r"\d", "9", cell) for cell in sample}
        if not any(compiled.pattern.fullmatch(skeleton) for skeleton in skeletons):
            continue
        parsed = parse_dates(values, compiled)
        good = int(np.count_nonzero(parsed.valid))
        if good * 2 >= present.size:
            results.append((good, text, parsed))
    if not results:
        return None
    best = max(good for good, _, _ in results)
    tied = [(text, parsed) for good, text, parsed in results if good == best]
    return DateGuess(tied[0][0], [text for text, _ in tied[1:]], tied[0][1])
