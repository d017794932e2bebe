"""One column at a time: its type, missing values, categories, fitted fills, and the rows that can be used."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from ..labels import canonical_label
from .cells import numbers_among
from .dates import (
    DATE_SAMPLE,
    ISO_FORMAT,
    ParsedDates,
    compile_format,
    date_features,
    detect_date_format,
    iso_text,
    looks_like_dates,
    parse_dates,
    varying_parts,
)
from .encoding import ColumnEncoding
from .parsed import BLOCK_ROWS, Columns
from .plan import NO_OPTIONS, DataPlan

MAX_CATEGORIES = 1000  # one-hot columns beyond this are almost surely an ID or free text
BOOLEAN_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "t": True,
    "f": False,
    "y": True,
    "n": False,
    "1": True,
    "0": False,
}
KNOWN_SHOWN = 20  # known values listed in an error message
STATISTICS_ROWS = BLOCK_ROWS  # rows per block when statistics or row moves stream through a matrix


def boolean_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each word: its 0/1 value as a boolean (NaN for "" and any other word), and whether it
    is neither empty nor a boolean word."""
    lowered = [word.lower() for word in words.tolist()]
    values = np.array([float(BOOLEAN_WORDS[word]) if word in BOOLEAN_WORDS else np.nan for word in lowered])
    other = np.array([word != "" and word not in BOOLEAN_WORDS for word in lowered], dtype=bool)
    return values.astype(np.float32), other


def boolean_inputs(columns: Columns, name: str, rows=None, fill=None) -> np.ndarray:
    """A boolean column's 0/1 values (NaN where empty, unless ``fill``) for ``rows`` (all when None)."""
    codes, words = columns.categories[name]
    values = boolean_words(words)[0]
    if fill is not None:
        values[words == ""] = float(fill)
    return values[np.asarray(codes) if rows is None else codes[rows]]


def rows_to_front(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` for ascending ``rows``, made by moving them forward inside ``matrix``."""
    if rows.size and np.any(np.diff(rows) <= 0):
        return matrix[rows]
    if not rows.size or rows[-1] == len(rows) - 1:  # already the leading rows, in order
        return matrix[: len(rows)]
    for begin in range(0, len(rows), STATISTICS_ROWS):
        chunk = rows[begin : begin + STATISTICS_ROWS]
        # Row k moves to position <= k, and every later source lies beyond what was written.
        matrix[begin : begin + len(chunk)] = matrix[chunk]
    return matrix[: len(rows)]


def parsed_dates(columns: Columns, encoding: ColumnEncoding) -> ParsedDates:
    """A date column's cells read with its format: parsed once per Columns, as several steps need them."""
    key = (encoding.name, encoding.format)
    if key not in columns.parsed:
        columns.parsed[key] = parse_dates(columns.text[encoding.name], str(encoding.format))
    return columns.parsed[key]


def date_inputs(columns: Columns, encoding: ColumnEncoding, rows=None) -> np.ndarray:
    """float32 (rows, parts) model inputs of a date column before scaling, empty cells filled."""
    parsed = parsed_dates(columns, encoding)
    parsed = parsed if rows is None else parsed.take(rows)
    values = date_features(parsed, encoding.parts)
    if encoding.fill is not None and parsed.missing.any():
        fill = date_features(parse_dates(np.array([encoding.fill]), ISO_FORMAT), encoding.parts)
        values[parsed.missing] = fill
    return values


def _fit_date(columns: Columns, encoding: ColumnEncoding, train_rows: np.ndarray) -> ColumnEncoding:
    """The parts that vary in the training rows, and the fill (mean, median or mode date) of a date column."""
    parsed = parsed_dates(columns, encoding).take(train_rows)
    fill = encoding.fill
    if encoding.missing in ("mean", "median", "mode"):
        seconds = parsed.seconds()[parsed.valid]
        if seconds.size == 0:
            raise DataError(
                f"{columns.path}: column {encoding.name!r} has no dates in the training rows to take "
                f"the {encoding.missing} of; fill it in or exclude the column"
            )
        if encoding.missing == "mean":
            fill = iso_text(float(seconds.astype(np.float64).mean()))
        elif encoding.missing == "median":
            fill = iso_text(float(np.median(seconds)))
        else:
            unique, counts = np.unique(seconds, return_counts=True)
            fill = iso_text(float(unique[np.argmax(counts)]))
    parts = varying_parts(parsed)
    return ColumnEncoding(encoding.name, "date", encoding.missing, fill, format=encoding.format, parts=parts)


def no_values(columns: Columns, name: str, missing: str) -> DataError:
    return DataError(
        f"{columns.path}: column {name!r} has no values in the training rows to take the {missing} of; "
        "fill it in or exclude the column"
    )


def _text_mode(columns: Columns, encoding: ColumnEncoding, train_rows: np.ndarray) -> bool | str:
    """The most frequent value of a boolean or categorical column's training rows."""
    if encoding.type == "boolean":
        unique, counts, _ = columns.word_counts(encoding.name, train_rows)
        values = boolean_words(unique)[0]
        present = ~np.isnan(values)
        if not present.any():
            raise no_values(columns, encoding.name, "mode")
        return bool(counts[values == 1].sum() * 2 >= counts[present].sum())  # ties go to true
    unique, counts, _ = columns.word_counts(encoding.name, train_rows)
    unique, counts = unique[unique != ""], counts[unique != ""]
    if unique.size == 0:
        raise no_values(columns, encoding.name, "mode")
    return str(unique[np.argmax(counts)])


def fit_column(
    columns: Columns, encoding: ColumnEncoding, train_rows: np.ndarray, all_rows: np.ndarray | None, fills: dict
):
    """The column with its fill value (mean, median or mode of the training rows; ``fills``: the
    numeric columns', statistics.numeric_fills) and categories."""
    name, missing, fill = encoding.name, encoding.missing, encoding.fill
    if encoding.type == "date":
        return _fit_date(columns, encoding, train_rows)
    if encoding.type == "numeric":
        if missing not in ("mean", "median", "mode"):
            return encoding  # nothing to fit (most columns of a wide file)
        return ColumnEncoding(name, "numeric", missing, fills[name])
    if missing == "mode":
        fill = _text_mode(columns, encoding, train_rows)
    if encoding.type == "boolean":
        return ColumnEncoding(name, "boolean", missing, fill)
    distinct = columns.word_counts(name, all_rows)[0]
    categories = sorted(set(distinct.tolist()) - {""} | ({str(fill)} if fill is not None else set()))
    if len(categories) > MAX_CATEGORIES:
        raise DataError(
            f"{columns.path}: column {name!r} has {len(categories)} distinct values, too many to "
            f"one-hot encode (at most {MAX_CATEGORIES}); it looks like an ID or free text: add it to "
            "data.exclude"
        )
    return ColumnEncoding(name, "categorical", missing, fill, categories, encoding.unknown)


def column_encodings(columns: Columns, plan: DataPlan) -> list:
    """Each feature's type (given, or inferred from its cells) and missing-value policy, unfitted."""
    encodings = []
    plain = None  # the encoding of a numeric column without settings: most of a wide file's
    for name in plan.features:
        option = plan.options.get(name)
        if option is None and name not in columns.text:
            if plain is None:
                plain = _plain_numeric(plan, name)
            encodings.append(ColumnEncoding(name, "numeric", plain.missing, plain.fill))
        else:
            encodings.append(_requested_encoding(columns, plan, name, option or NO_OPTIONS))
    return encodings


def _requested_encoding(columns: Columns, plan: DataPlan, name: str, option) -> ColumnEncoding:
    """One column's type and missing-value policy, as its settings and cells say (unfitted)."""
    kind, date_format = _column_kind(columns, plan, name, option)
    missing, fill, path = plan.policy(name)
    if kind not in ("numeric", "date") and missing in ("mean", "median"):
        if path[1] == "columns":
            raise plan.fail(path, f"{missing} needs a numeric column and {name!r} is {kind}; use mode or constant")
        missing = "mode"  # the data-wide default falls back to the most frequent value for text
    if missing == "constant":
        fill = _constant_fill(plan, name, kind, fill, path, date_format)
    if option.unknown != "error" and kind != "categorical":
        raise plan.fail(("data", "columns", name, "unknown"), f"applies to categorical columns, and {name!r} is {kind}")
    return ColumnEncoding(
        name, kind, missing, fill if missing == "constant" else None, unknown=option.unknown, format=date_format
    )


def _column_kind(columns: Columns, plan: DataPlan, name: str, option) -> tuple[str, str | None]:
    """A column's type and date format: as the config gives them, else read from its cells."""
    if option.format is not None or option.type == "date":
        return "date", _given_date_format(columns, plan, name)
    if name not in columns.text:
        return "numeric", None
    unique, counts, _ = columns.word_counts(name)
    if option.type == "boolean":
        other = boolean_words(unique)[1]
        if other.any():
            bad = int(columns.rows_where(name, other)[0])
            raise DataError(
                f"{columns.path}:{columns.line(bad)}: column {name!r} has {columns.cell(name, bad)!r}, "
                f"which is not true/false (or yes/no, 1/0); data.columns.{name}.type is boolean"
            )
    if option.type is not None:
        return option.type, None
    mostly = numbers_among(unique, counts, lambda chosen: columns.rows_where(name, chosen))
    if mostly is not None:
        raise _mostly_numbers_error(columns, name, mostly)
    date_format = _detected_date_format(columns, plan, name, required=False)
    if date_format is not None:
        return "date", date_format
    words = {word.lower() for word in unique.tolist()} - {""}
    return ("boolean" if words and words <= set(BOOLEAN_WORDS) else "categorical"), None


def _mostly_numbers_error(columns: Columns, name: str, mostly) -> DataError:
    """A column of numbers but for a few cells: name the first of them, and what to do."""
    bad, numbers, present = mostly
    row = int(bad[0])
    others = ""
    if bad.size > 1:
        shown = ", ".join(f"{columns.line(int(index))} ({columns.cell(name, int(index))!r})" for index in bad[1:6])
        others = (
            f", nor are {bad.size - 1} more cell{'s' if bad.size > 2 else ''} (line "
            f"{shown}{', …' if bad.size > 6 else ''})"
        )
    cell = columns.cell(name, row)
    return DataError(
        f"{columns.path}:{columns.line(row)}: column {name!r} has {cell!r}, "
        f"which is not a number{others}, though {numbers} of its {present} values are; "
        f"if {cell!r} marks a missing value, add it to data.na_values; else "
        f"fix the cell{'s' if bad.size > 1 else ''}, or set data.columns.{name}.type: "
        "categorical to treat the column as text"
    )


def _date_sample(columns: Columns, name: str) -> list:
    """The first DATE_SAMPLE non-empty cells of a text column, read from its codes a block at a time."""
    codes, words = columns.categories[name]
    sample: list = []
    for begin in range(0, columns.n_rows, STATISTICS_ROWS):
        cells = words[np.asarray(codes[begin : begin + STATISTICS_ROWS])]
        sample += cells[cells != ""][: DATE_SAMPLE - len(sample)].tolist()
        if len(sample) == DATE_SAMPLE:
            break
    return sample


def _given_date_format(columns: Columns, plan: DataPlan, name: str) -> str:
    """The format of a column the config calls a date: its ``format`` (checked), else detected."""
    given = plan.option(name).format
    if given is None:
        detected = _detected_date_format(columns, plan, name, required=True)
        assert detected is not None  # required: a column that is not dates is an error
        return detected
    try:
        compile_format(given)
    except ValueError as error:
        raise plan.fail(("data", "columns", name, "format"), f"{given!r}: {error}") from None
    return given


def _detected_date_format(columns: Columns, plan: DataPlan, name: str, required: bool) -> str | None:
    """The format of a text column of dates (None: not dates, unless ``required``, which makes that an error).

    Dates whose day and month could be either way round are an error asking for the format."""
    if not required and not looks_like_dates(_date_sample(columns, name)):
        return None  # decided without making the column's cells (a million rows of text)
    values = columns.text[name]
    guess = detect_date_format(values)
    if guess is None:
        if not required:
            return None
        present = np.flatnonzero(values != "")
        example = f" such as {str(values[present[0]])!r} (line {columns.line(int(present[0]))})" if present.size else ""
        raise DataError(
            f"{columns.path}: column {name!r} is a date column (data.columns.{name}.type), but its cells"
            f"{example} are not dates of a form dltrain reads by itself (2012-01-31, 2012/01/31, with a time "
            f'or not); give data.columns.{name}.format, e.g. "%d/%m/%Y %H:%M"'
        )
    if guess.alternatives:
        example = str(values[np.flatnonzero(guess.parsed.valid)[0]])
        options = " or ".join(f'"{text}"' for text in [guess.format, *guess.alternatives])
        raise DataError(
            f"{columns.path}: column {name!r} holds dates such as {example!r}, which read both as day/month "
            f"and as month/day; set data.columns.{name}.format: {options} (or type: categorical)"
        )
    return guess.format


def _plain_numeric(plan: DataPlan, name: str) -> ColumnEncoding:
    """The unfitted encoding of a numeric column that ``data.columns`` does not mention."""
    missing, fill, path = plan.policy(name)
    fill = _constant_fill(plan, name, "numeric", fill, path) if missing == "constant" else None
    return ColumnEncoding(name, "numeric", missing, fill)


def _constant_fill(plan: DataPlan, name: str, kind: str, fill, path, date_format: str | None = None):
    fill_path = path[:-1] + ("fill",)
    if fill is None:
        raise plan.fail(fill_path, "missing: constant needs a fill value")
    if kind == "date":
        text = canonical_label(fill) if not isinstance(fill, str) else fill
        for form in (str(date_format), ISO_FORMAT):
            parsed = parse_dates(np.array([text.strip()]), form)
            if parsed.valid[0]:
                return iso_text(float(parsed.seconds()[0]))
        raise plan.fail(
            fill_path, f"{name!r} is a date column, so the fill must be a date such as 2012-01-31 (got {fill!r})"
        )
    if kind == "numeric":
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise plan.fail(fill_path, f"{name!r} is numeric, so the fill must be a finite number (got {fill!r})")
        return float(fill)
    if kind == "boolean":
        word = canonical_label(fill).lower()  # true, yes, 1 and 1.0 all mean true
        if word not in BOOLEAN_WORDS:
            raise plan.fail(fill_path, f"{name!r} is boolean, so the fill must be true or false (got {fill!r})")
        return BOOLEAN_WORDS[word]
    return canonical_label(fill) if isinstance(fill, (int, float)) and not isinstance(fill, bool) else str(fill)
