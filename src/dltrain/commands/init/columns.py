"""What init learns of each column (its kind, why it is left out, what setting it needs) and of
the target (the task, the classes, the rows without a value)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data import BOOLEAN_WORDS, MAX_CATEGORIES, infer_task, target_labels
from ...data.cells import mostly_numbers
from ...data.dates import YEAR_FIRST, detect_date_format, varying_parts
from ...errors import DataError
from .reading import Markers
from .sections import empty_share, yaml_list

MAX_STARTER_CATEGORIES = 200
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^(id|uuid|guid|key|index)($|[_\W])", re.I)


@dataclass
class ColumnReport:
    name: str
    kind: str  # numeric | categorical | boolean | date
    empty: int
    rows: int
    distinct: int
    excluded: str | None = None  # why the column is left out
    settings: dict = field(default_factory=dict)
    note: str = ""
    width: int = 1  # model inputs (categories, date parts)


def _describe_text(name: str, values: np.ndarray, columns) -> ColumnReport:
    present = values[values != ""]
    unique = np.unique(present)
    report = ColumnReport(name, "categorical", int(values.size - present.size), int(values.size), int(unique.size))
    if present.size == 0:
        report.excluded = "every cell is empty"
        return report
    mostly = mostly_numbers(values)
    if mostly is not None:
        bad, numbers, total = mostly
        row = int(bad[0])
        report.excluded = (
            f"mostly numbers ({numbers} of {total}), but line {columns.line(row)} has "
            f"{str(values[row])!r}: fix such cells (or list the marker in data.na_values), then include it"
        )
        return report
    words = {word.lower() for word in unique.tolist()}
    if words <= set(BOOLEAN_WORDS):
        report.kind = "boolean"
        report.note = "/".join(sorted(words))
        return report
    if _describe_dates(report, values, columns):
        return report
    if unique.size > 20 and np.mean([" " in word for word in unique[:1000].tolist()]) > 0.5:
        report.excluded = f"free text: {unique.size} distinct values in {present.size} rows"
    elif unique.size == present.size and present.size >= 10:
        report.excluded = f"ID-like: all {present.size} values are different"
    elif unique.size > MAX_STARTER_CATEGORIES or (unique.size > 20 and unique.size > 0.5 * present.size):
        report.excluded = f"free text: {unique.size} distinct values in {present.size} rows"
    elif unique.size == 1:
        report.excluded = f"constant: every row holds {str(unique[0])!r}"
    else:
        # Quoted and escaped: a value may hold a comma or a line break.
        shown = ", ".join(json.dumps(value, ensure_ascii=False) for value in unique[:6].tolist())
        shown += ", …" if unique.size > 6 else ""
        report.note = f"{unique.size} values: {shown}"
    return report


def _describe_dates(report: ColumnReport, values: np.ndarray, columns) -> bool:
    """Whether the column holds dates; if so, the report says what the model will see, or why not."""
    guess = detect_date_format(values)
    if guess is None:
        return False
    if guess.alternatives:
        formats = " or ".join(f'"{text}"' for text in [guess.format, *guess.alternatives])
        report.excluded = (
            f"dates whose day and month could be either way round: to use them, set "
            f"data.columns.{report.name}.format: {formats} and remove the column from exclude"
        )
        return True
    if guess.parsed.bad.any():
        row = int(np.flatnonzero(guess.parsed.bad)[0])
        report.excluded = (
            f"mostly dates ({guess.format}), but line {columns.line(row)} has {str(values[row])!r}: "
            "fix such cells (or list the marker in data.na_values), then include it"
        )
        return True
    parsed = guess.parsed
    seconds = parsed.seconds()[parsed.valid]
    parts = varying_parts(parsed)
    report.kind = "date"
    report.width = len(parts)
    if guess.format not in YEAR_FIRST:
        report.settings["format"] = json.dumps(guess.format)  # day or month first: say which
    shown = sorted({part.split("_")[0] for part in parts}, key=parts.index)
    unit = "D" if np.all(seconds % 86400 == 0) else "m"
    first, last = (
        np.datetime_as_string(np.datetime64(int(value), "s"), unit=unit) for value in (seconds.min(), seconds.max())
    )
    report.note = f"dates {first} to {last} -> {len(parts)} inputs: {', '.join(shown)}"
    return True


def _describe_numbers(name: str, values: np.ndarray) -> ColumnReport:
    empty = np.isnan(values)
    present = values[~empty]
    unique = np.unique(present)
    report = ColumnReport(name, "numeric", int(empty.sum()), int(values.size), int(unique.size))
    if present.size == 0:
        report.excluded = "every cell is empty"
    elif unique.size == 1:
        report.excluded = f"constant: every row holds {float(unique[0]):g}"
    elif np.isinf(present).any():
        report.excluded = "holds infinite values: fix them to use it"
    else:
        integral = bool(np.all(present == np.round(present)))
        consecutive = integral and unique.size == present.size and unique[-1] - unique[0] == unique.size - 1
        if integral and unique.size == present.size and present.size >= 10 and (consecutive or _ID_NAME.search(name)):
            report.excluded = f"ID-like: all {present.size} values are different whole numbers"
        else:
            report.note = f"{float(present.min()):g} to {float(present.max()):g}"
    return report


@dataclass
class TargetProfile:
    """What init learned about the target column(s): the task, the classes, and the empty rows."""

    task: str
    note: str
    classes: list
    empty: np.ndarray  # rows whose target (any of them) is empty: skipped by training
    present: np.ndarray  # the target's non-empty values
    warnings: list


def column_reports(data_path: Path, columns, others: list, markers: Markers) -> list:
    """One report per non-target column: its kind, why it is excluded, and what it needs."""
    reports = [
        _describe_text(name, columns.text[name], columns)
        if name in columns.text
        else _describe_numbers(name, columns.numbers(name))
        for name in others
    ]
    for report in reports:
        if report.kind == "categorical":
            report.width = report.distinct
        if report.excluded is None and report.empty:
            report.settings["missing"] = "median" if report.kind in ("numeric", "date") else "mode"
            marked = markers.note(report.name)
            share = empty_share(report.empty, columns.n_rows) + (f", {marked}" if marked else "")
            report.note = f"{share}; {report.note}".rstrip("; ")
        if report.excluded is None and report.name in markers.per_column:
            report.settings["na_values"] = yaml_list(markers.per_column[report.name])
    if not any(report.excluded is None for report in reports):
        reasons = "; ".join(f"{report.name}: {report.excluded}" for report in reports)
        raise DataError(f"{data_path}: no column is usable as a feature ({reasons})")
    return reports


def profile_target(data_path: Path, targets: list, columns, all_filled) -> TargetProfile:
    """Rows without a target are skipped; the values of the first one decide the task."""
    target = targets[0]
    raw = columns.text[target] if target in columns.text else columns.numbers(target)
    empty = (raw == "") if raw.dtype.kind == "U" else np.isnan(raw)
    if all_filled is not None:
        empty = ~all_filled
    present = raw[~empty]
    if present.size == 0:
        raise DataError(f"{data_path}: the target column {target!r} is empty in every row")
    # A target that would be excluded as a feature for looking like a row identifier is
    # almost surely the wrong column: say so rather than write a config that cannot learn.
    described = (
        _describe_text(target, present, columns) if present.dtype.kind == "U" else _describe_numbers(target, present)
    )
    warnings = []
    if (described.excluded or "").startswith("ID-like"):
        warnings.append(
            f"the target {target!r} looks like a row identifier ({described.excluded[len('ID-like: ') :]}); "
            "predicting it is rarely meaningful: check --target"
        )
    task = infer_task(present) if len(targets) == 1 else "regression"
    classes = []
    if task == "classification":
        classes = sorted(set(target_labels(present).tolist()))
        if len(classes) < 2:
            raise DataError(
                f"{data_path}: the target {target!r} has only one value ({classes[0]!r}); there is nothing to learn"
            )
        if len(classes) > MAX_CATEGORIES:
            raise DataError(
                f"{data_path}: the target {target!r} has {len(classes)} distinct text values; "
                "choose a column with classes to predict, or a numeric one"
            )
        note = f"{len(classes)} classes: {', '.join(classes[:8])}{', …' if len(classes) > 8 else ''}" + (
            "; one sigmoid output" if len(classes) == 2 else ""
        )
    elif len(targets) > 1:
        note = f"multi-target regression: one linear output per target ({', '.join(targets)})"
    else:
        note = f"{target} is numeric ({np.unique(present).size} distinct values)"
    return TargetProfile(task, note, classes, empty, present, warnings)
