"""The CSV read once for init (twice when ;-separated numbers turn out to use decimal commas, or
cells such as '?' mark missing values among numbers); a JSON file is named as such."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.cells import mostly_numbers
from ...data.csv import CsvFile
from ...data.dates import detect_date_format
from ...errors import DataError
from ...files import open_regular

# Cells that mark a missing value among numbers, as files from elsewhere write them (data.na_values).
COMMON_MARKERS = ("?", "-", "--", "n/a", ".", "null", "None")


_DECIMAL_COMMA = re.compile(r"^[-+]?\d*,\d+$")


def _uses_decimal_commas(columns) -> bool:
    """Whether some text column holds (nearly) only numbers written with a decimal comma."""
    for values in columns.text.values():
        present = values[values != ""][:1000].tolist()
        if present and sum(bool(_DECIMAL_COMMA.match(value)) for value in present) >= 0.9 * len(present):
            return True
    return False


def _multi_target_rows(data_path, targets: list, columns) -> np.ndarray:
    """Rows where every target has a value; each target must be numeric (multi-target regression)."""
    filled = np.ones(columns.n_rows, dtype=bool)
    for name in targets:
        if name in columns.text:
            values = columns.text[name]
            example = next((value for value in values.tolist() if value != ""), "")
            raise DataError(
                f"{data_path}: several --target columns mean multi-target regression, but {name!r} "
                f"holds text (e.g. {example!r}); give one --target to predict classes"
            )
        filled &= ~np.isnan(columns.numbers(name))
    return filled


# An opening bracket or brace followed by what JSON puts next (a key, a value, a nested array or
# object): a JSON document or JSON lines, not a CSV header such as "[a],[b]".
_JSON_START = re.compile(r'\s*[\[{]\s*(["{\[\]}]|-?\d|true|false|null)')


def refuse_json(data_path: Path, encoding: str):
    """A JSON file given to init is named as such, instead of a header of JSON fragments."""
    try:
        with open_regular(data_path, DataError, kind="CSV file") as handle:
            head = handle.read(4096).decode(encoding, errors="replace").lstrip("\ufeff")
    except (DataError, LookupError):
        return  # the CSV reader says what is wrong with the file or the encoding
    if not _JSON_START.match(head):
        return
    rows = [line.strip() for line in head.splitlines() if line.strip()]
    try:
        lines = len(rows) > 1 and isinstance(json.loads(rows[0]), dict)  # one object per line: JSON lines
    except ValueError:
        lines = False
    converted = f"{data_path.stem}{'.converted' if data_path.suffix.lower() == '.csv' else ''}.csv"
    reader = f"pandas.read_json({str(data_path)!r}{', lines=True' if lines else ''})"
    raise DataError(
        f"{data_path}: this looks like JSON{' lines' if lines else ''}, not CSV (it starts with "
        f"{rows[0][:1]!r}); dltrain reads CSV files with a header row. Convert it first, e.g. with "
        f"{reader}.to_csv({converted!r}, index=False)"
    )


def read_for_init(data_path: Path, targets: list, encoding: str):
    """The CSV opened and parsed once (twice when ;-separated numbers turn out to use decimal commas);
    several targets must all be numeric."""
    # A file in another encoding: init's message names its --encoding, not a config's data.encoding.
    table = CsvFile.open(data_path, encoding=encoding, encoding_setting="--encoding")
    for name in targets:
        table.index(name, "target")
    others = [name for name in table.header if name not in targets]
    if not others:
        raise DataError(
            f"{data_path}:1: the file has only the target column{'s' if len(targets) > 1 else ''} "
            f"{', '.join(map(repr, targets))}; features are needed"
        )
    columns = table.read(numeric=others, wide=targets)
    if table.delimiter != "," and _uses_decimal_commas(columns):
        # 3,14 in a ;-separated file: read it again as numbers rather than excluding it as text.
        table = CsvFile.open(
            data_path, encoding=encoding, delimiter=table.delimiter, decimal=",", encoding_setting="--encoding"
        )
        columns = table.read(numeric=others, wide=targets)
    markers = _missing_markers(columns, targets)
    if markers.found:
        # '?' among the numbers: read the file again with the markers as missing values.
        table.set_na_values(markers.every_column, markers.per_column)
        columns = table.read(numeric=others, wide=targets)
    # Several targets: the rows where all are filled (a text target is refused before anything else).
    all_filled = _multi_target_rows(data_path, targets, columns) if len(targets) > 1 else None
    return table, columns, others, all_filled, markers


@dataclass
class Markers:
    """Cells that mark a missing value among numbers: where each was found, and how init writes them."""

    found: dict = field(default_factory=dict)  # column -> {marker: first line}
    every_column: list = field(default_factory=list)  # data.na_values
    per_column: dict = field(default_factory=dict)  # data.columns.X.na_values, where a marker is a value elsewhere
    warnings: list = field(default_factory=list)

    def note(self, name: str) -> str:
        words = ", ".join(repr(marker) for marker in self.found.get(name, {}))
        return f"{words} read as missing" if words else ""


def _missing_markers(columns, targets: list) -> Markers:
    """Markers such as '?' in columns of numbers or dates (and any word among a target's numbers).

    A target of numbers with '?' in it would otherwise read as text, and text as 117 classes."""
    markers = Markers()
    for name, values in columns.text.items():
        mostly = mostly_numbers(values)
        if mostly is not None:
            bad = mostly[0]
        else:
            guess = detect_date_format(values) if name not in targets else None
            if guess is None or guess.alternatives or not guess.parsed.bad.any():
                continue
            bad = np.flatnonzero(guess.parsed.bad)  # dates with '?' for missing
        if bad.size == 0:
            continue
        words = dict.fromkeys(values[bad].tolist())  # in the order of their first line
        uncommon = [word for word in words if word not in COMMON_MARKERS]
        if uncommon and name not in targets:
            continue  # excluded with the cell named, as before
        first_line = {}
        for index in bad.tolist():
            first_line.setdefault(str(values[index]), columns.line(index))
        markers.found[name] = first_line
        if uncommon:
            markers.warnings.append(
                f"the target {name!r} holds numbers and {', '.join(map(repr, uncommon[:3]))} (line "
                f"{first_line[uncommon[0]]}); init reads {'them' if len(uncommon) > 1 else 'it'} as missing "
                f"(data.na_values) and skips those rows: check that {uncommon[0]!r} does not mean a value"
            )
    if not markers.found:
        return markers
    every = list(dict.fromkeys(word for found in markers.found.values() for word in found))
    # A marker that is a real value in some other text column ('-' as a category) is set per column.
    elsewhere = [
        values for name, values in columns.text.items() if name not in markers.found and np.isin(values, every).any()
    ]
    if elsewhere:
        markers.per_column = {name: list(found) for name, found in markers.found.items()}
    else:
        markers.every_column = every
    return markers
