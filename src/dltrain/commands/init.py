"""``dltrain init``: look at a CSV and write a commented starter config that trains as written.

Every decision is visible in the YAML: the detected delimiter, each column's type, the columns
left out and why (IDs, dates, free text, constants), how empty cells are filled, the task and
a network sized to the data.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ConfigSource, build_config, parse_yaml
from ..data import BOOLEAN_WORDS, MAX_CATEGORIES, infer_task, target_labels
from ..data.csv import DELIMITER_NAMES, CsvFile, mostly_numbers
from ..data.dates import YEAR_FIRST, detect_date_format, varying_parts
from ..errors import ConfigError, DataError
from ..files import check_writable, open_regular, write_output

MAX_LISTED_COLUMNS = 40  # wider files list only the columns that need a setting
MAX_STARTER_CATEGORIES = 200
TARGET_UPDATES = 3000  # epochs are chosen to give about this many optimizer steps
# Below this many training rows one validation split is too small to choose between trials:
# the starter's search scores them by cross-validation (tune.cv).
CV_BELOW_ROWS = 2000
_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)$|^(id|uuid|guid|key|index)($|[_\W])", re.I)
# Cells that mark a missing value among numbers, as files from elsewhere write them (data.na_values).
COMMON_MARKERS = ("?", "-", "--", "n/a", ".", "null", "None")
DATE_EXPANSION = (
    "# A date column becomes numbers: year, month, day, weekday, day of year, and hour and minute when",
    "# the cells have a time; month and weekday also as sine/cosine (December beside January). Parts",
    "# that never vary in the training rows are left out (dates that are all the 1st have no weekday).",
)
_PLAIN = re.compile(r"^[A-Za-z_./][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "~"}


def yaml_scalar(value) -> str:
    """A YAML scalar: plain when unambiguous, else a double-quoted (JSON) string."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


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


@dataclass
class StarterConfig:
    text: str
    features: list[str]
    excluded: dict
    task: str
    n_inputs: int
    classes: list[str]
    warnings: list[str] = field(default_factory=list)


def _commented(code: str, comment: str, width: int = 31) -> str:
    return f"{code:<{width}} # {comment}" if comment else code


def _share(count: int, total: int) -> str:
    return f"{count} empty cell{'s' if count != 1 else ''} ({100 * count / total:.0f}%)"


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


_DECIMAL_COMMA = re.compile(r"^[-+]?\d*,\d+$")


def _uses_decimal_commas(columns) -> bool:
    """Whether some text column holds (nearly) only numbers written with a decimal comma."""
    for values in columns.text.values():
        present = values[values != ""][:1000].tolist()
        if present and sum(bool(_DECIMAL_COMMA.match(value)) for value in present) >= 0.9 * len(present):
            return True
    return False


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


@dataclass
class _TargetProfile:
    """What init learned about the target column(s): the task, the classes, and the empty rows."""

    task: str
    note: str
    classes: list
    empty: np.ndarray  # rows whose target (any of them) is empty: skipped by training
    present: np.ndarray  # the target's non-empty values
    warnings: list


# An opening bracket or brace followed by what JSON puts next (a key, a value, a nested array or
# object): a JSON document or JSON lines, not a CSV header such as "[a],[b]".
_JSON_START = re.compile(r'\s*[\[{]\s*(["{\[\]}]|-?\d|true|false|null)')


def _refuse_json(data_path: Path, encoding: str):
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


def _read_for_init(data_path: Path, targets: list, encoding: str):
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
class _Markers:
    """Cells that mark a missing value among numbers: where each was found, and how init writes them."""

    found: dict = field(default_factory=dict)  # column -> {marker: first line}
    every_column: list = field(default_factory=list)  # data.na_values
    per_column: dict = field(default_factory=dict)  # data.columns.X.na_values, where a marker is a value elsewhere
    warnings: list = field(default_factory=list)

    def note(self, name: str) -> str:
        words = ", ".join(repr(marker) for marker in self.found.get(name, {}))
        return f"{words} read as missing" if words else ""


def _missing_markers(columns, targets: list) -> _Markers:
    """Markers such as '?' in columns of numbers or dates (and any word among a target's numbers).

    A target of numbers with '?' in it would otherwise read as text, and text as 117 classes."""
    markers = _Markers()
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


def _column_reports(data_path: Path, columns, others: list, markers: _Markers) -> list:
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
            share = _share(report.empty, columns.n_rows) + (f", {marked}" if marked else "")
            report.note = f"{share}; {report.note}".rstrip("; ")
        if report.excluded is None and report.name in markers.per_column:
            report.settings["na_values"] = _yaml_list(markers.per_column[report.name])
    if not any(report.excluded is None for report in reports):
        reasons = "; ".join(f"{report.name}: {report.excluded}" for report in reports)
        raise DataError(f"{data_path}: no column is usable as a feature ({reasons})")
    return reports


def _profile_target(data_path: Path, targets: list, columns, all_filled) -> _TargetProfile:
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
    return _TargetProfile(task, note, classes, empty, present, warnings)


def _training_sizes(n_inputs: int, kept_rows: int) -> dict:
    """A network and a schedule sized to the data: about TARGET_UPDATES steps, early stopping."""
    train_rows = max(1, int(kept_rows * 0.8))
    batch_size = 32 if train_rows < 10_000 else 128
    batches = math.ceil(train_rows / batch_size)
    epochs = int(min(200, max(10, math.ceil(TARGET_UPDATES / batches))))
    units = 16 if n_inputs <= 8 else 32 if n_inputs <= 64 else 64 if n_inputs <= 256 else 128
    return {
        "batch_size": batch_size,
        "batches": batches,
        "epochs": epochs,
        # About a tenth of the epochs: small data (many short, noisy epochs) waits longer.
        "patience": int(min(20, max(5, epochs // 10))),
        "learning_rate": 0.01 if train_rows < 5_000 else 0.001,
        "layers": [units, units] if train_rows >= 5_000 else [units],
        "train_rows": train_rows,
    }


def _yaml_list(values) -> str:
    return f"[{', '.join(yaml_scalar(value) for value in values)}]"


def _data_lines(
    data_path: Path,
    out_path: Path,
    targets: list,
    table,
    reports: list,
    classes: list,
    encoding: str,
    markers: _Markers,
):
    """The ``data:`` section up to the per-column settings."""
    relative = os.path.relpath(data_path.resolve(), out_path.resolve().parent)
    target = yaml_scalar(targets[0]) if len(targets) == 1 else f"[{', '.join(yaml_scalar(name) for name in targets)}]"
    lines = [
        "data:",
        _commented(f"  train: {yaml_scalar(relative)}", "relative to this file"),
        f"  target: {target}",
        _commented(f"  delimiter: {json.dumps(table.delimiter)}", f"detected: {DELIMITER_NAMES[table.delimiter]}"),
    ]
    if table.decimal != ".":
        lines.append(_commented(f"  decimal: {json.dumps(table.decimal)}", "detected: numbers like 3,14"))
    if table.encoding.replace("-sig", "") != "utf-8":
        lines.append(f"  encoding: {yaml_scalar(encoding)}")
    if markers.every_column:
        where = ", ".join(f"{name} (line {min(found.values())})" for name, found in list(markers.found.items())[:4]) + (
            ", …" if len(markers.found) > 4 else ""
        )
        lines.append(
            _commented(f"  na_values: {_yaml_list(markers.every_column)}", f"read as missing; found in {where}")
        )
    excluded = {report.name: report.excluded for report in reports if report.excluded}
    if excluded:
        lines.append(_commented("  exclude:", "never used as features"))
        lines.extend(_commented(f"    - {yaml_scalar(column)}", reason) for column, reason in excluded.items())
    return lines + [
        _commented("  validation: 0.2", "fraction held out" + (", stratified by class" if classes else "")),
        _commented("  scale: standard", "numeric columns; statistics from the training split only"),
        _commented("  missing: error", "an empty cell in a column without its own policy stops training"),
    ]


def _column_lines(features: list, targets: list, target: _TargetProfile, columns, markers: _Markers) -> list:
    """``data.columns``: every setting a column needs (all columns when the file is narrow)."""
    listed = [
        report
        for report in features
        if len(features) <= MAX_LISTED_COLUMNS or report.settings or report.kind != "numeric"
    ]
    # Every target shares one policy: a row missing any of them is skipped.
    empty_targets = targets if target.empty.any() else []
    lines = []
    if listed or empty_targets:
        entries = []
        for report in listed:
            settings = {"type": report.kind, **report.settings}
            body = ", ".join(f"{key}: {value}" for key, value in settings.items())
            entries.append((f"    {yaml_scalar(report.name)}: {{{body}}}", report.note))
        for name in empty_targets:
            empty = columns.text[name] == "" if name in columns.text else np.isnan(columns.numbers(name))
            own = f", na_values: {_yaml_list(markers.per_column[name])}" if name in markers.per_column else ""
            marked = markers.note(name)
            entries.append(
                (
                    f"    {yaml_scalar(name)}: {{missing: drop{own}}}",
                    f"the target: {_share(int(empty.sum()), columns.n_rows)}{', ' + marked if marked else ''}; "
                    "those rows are skipped",
                )
            )
        width = max(31, *(len(code) for code, _ in entries))
        if any(report.kind == "date" for report in listed):
            lines.extend(f"  {line}" for line in DATE_EXPANSION)
        lines.append("  columns:")
        lines.extend(_commented(code, note, width) for code, note in entries)
    unlisted = len(features) - len(listed)
    if unlisted:
        which = "other " if listed else ""
        lines.append(f"  # the {which}{unlisted} feature columns are numeric with no empty cells")
    return lines


def _model_and_training_lines(target: _TargetProfile, n_inputs: int, sizes: dict, dates: bool) -> list:
    return [
        _commented(f"task: {target.task}", target.note),
        "model:",
        _commented("  layers:", f"{n_inputs} inputs after one-hot encoding{' and date expansion' if dates else ''}"),
        *[f"    - {{units: {width}, activation: relu}}" for width in sizes["layers"]],
        _commented("  output: {activation: auto}", "softmax, sigmoid or linear, from the task"),
        f"optimizer: {{name: adam, lr: {sizes['learning_rate']}}}",
        "train:",
        _commented(
            f"  epochs: {sizes['epochs']}",
            f"{sizes['epochs'] * sizes['batches']} updates of {sizes['batch_size']} rows",
        ),
        f"  batch_size: {sizes['batch_size']}",
        _commented(
            f"  early_stopping: {{monitor: val_loss, patience: {sizes['patience']}, restore_best: true}}",
            "stop when val_loss stalls; keep the best epoch",
        ),
        "",
    ]


def _tune_lines(sizes: dict, config_name: str) -> list:
    """A search of the starter, commented out: with few training rows, scored by cross-validation."""
    units = sizes["layers"][0]
    lines = [
        f"# To search this config, uncomment the section below and run: dltrain tune {config_name} (docs/tune.md)",
        "# tune:",
        "#   metric: val_loss",
        "#   trials: 30",
    ]
    if sizes["train_rows"] < CV_BELOW_ROWS:
        lines.append(
            _commented(
                "#   cv: 5",
                f"{sizes['train_rows']} training rows: score each trial by 5-fold cross-validation, as one "
                "small validation split would pick a lucky trial",
            )
        )
    return lines + [
        "#   space:",
        "#     optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}",
        "#     optimizer.weight_decay: {low: 1.0e-6, high: 1.0e-1, log: true}",
        f"#     model.layers[0].units: {_yaml_list([max(1, units // 2), units, units * 2, units * 4])}",
        "",
    ]


def starter_config(data_path, target, out_path, encoding: str = "utf-8") -> StarterConfig:
    """The YAML text of a starter config for ``data_path`` predicting ``target`` (a column, or a list of
    numeric columns for multi-target regression), to be saved at ``out_path``."""
    data_path, out_path = Path(data_path), Path(out_path)
    targets = [target] if isinstance(target, str) else list(target)
    repeated = sorted({name for name in targets if targets.count(name) > 1})
    if repeated:
        raise ConfigError(f"--target {repeated[0]} is given twice; name each target once")
    _refuse_json(data_path, encoding)
    table, columns, others, all_filled, markers = _read_for_init(data_path, targets, encoding)
    reports = _column_reports(data_path, columns, others, markers)
    features = [report for report in reports if report.excluded is None]
    profile = _profile_target(data_path, targets, columns, all_filled)
    profile.warnings[:0] = markers.warnings
    n_inputs = sum(report.width for report in features)
    sizes = _training_sizes(n_inputs, int(profile.present.size))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", data_path.stem).strip("-._") or "model"
    name = name if name[0].isalnum() else f"run-{name}"
    lines = [
        f"# Starter config written by `dltrain init {data_path.name} "
        f"{' '.join(f'--target {name}' for name in targets)}`.",
        f"# {columns.n_rows} rows, {len(table.header)} columns. Train it with: dltrain fit {out_path.name}",
        *[f"# warning: {warning}" for warning in profile.warnings],
        f"name: {yaml_scalar(name)}",
        "seed: 0",
        *_data_lines(data_path, out_path, targets, table, reports, profile.classes, encoding, markers),
        *_column_lines(features, targets, profile, columns, markers),
        *_model_and_training_lines(profile, n_inputs, sizes, any(report.kind == "date" for report in features)),
        *_tune_lines(sizes, out_path.name),
    ]
    excluded = {report.name: report.excluded for report in reports if report.excluded}
    return StarterConfig(
        "\n".join(lines),
        [report.name for report in features],
        excluded,
        profile.task,
        n_inputs,
        profile.classes,
        profile.warnings,
    )


def write_starter_config(data_path, target, out_path, force: bool = False, encoding: str = "utf-8") -> StarterConfig:
    """Write the starter config to ``out_path`` (refusing to overwrite unless ``force``)."""
    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path}: already exists; pass --force to overwrite it, or choose another --out")
    if out_path.is_dir():
        raise ConfigError(f"{out_path}: is a folder; give --out a file name such as config.yaml")
    check_writable(out_path, make_parents=True)
    starter = starter_config(data_path, target, out_path, encoding)
    data, positions = parse_yaml(starter.text, str(out_path))
    build_config(data, ConfigSource(str(out_path), positions, {}))  # a config that does not load is our bug
    try:
        write_output(out_path, starter.text)
    except OSError as error:
        raise ConfigError(f"{out_path}: cannot write ({error.strerror or error})") from None
    return starter
