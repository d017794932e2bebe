"""The starter config's YAML, one function per section (data:, data.columns, model, optimizer and
train, a commented-out tune:), each decision written beside its reason."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...data.dialect import DELIMITER_NAMES
from .reading import Markers

if TYPE_CHECKING:
    from .columns import TargetProfile

MAX_LISTED_COLUMNS = 40  # wider files list only the columns that need a setting
# Below this many training rows one validation split is too small to choose between trials:
# the starter's search scores them by cross-validation (tune.cv).
CV_BELOW_ROWS = 2000
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


def _commented(code: str, comment: str, width: int = 31) -> str:
    return f"{code:<{width}} # {comment}" if comment else code


def empty_share(count: int, total: int) -> str:
    """How many of a column's cells are empty, as "3 empty cells (5%)"."""
    return f"{count} empty cell{'s' if count != 1 else ''} ({100 * count / total:.0f}%)"


def yaml_list(values) -> str:
    """A YAML flow list of scalars: [a, "b c", 3]."""
    return f"[{', '.join(yaml_scalar(value) for value in values)}]"


def data_lines(
    data_path: Path,
    out_path: Path,
    targets: list,
    table,
    reports: list,
    classes: list,
    encoding: str,
    markers: Markers,
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
            _commented(f"  na_values: {yaml_list(markers.every_column)}", f"read as missing; found in {where}")
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


def column_lines(features: list, targets: list, target: TargetProfile, columns, markers: Markers) -> list:
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
            own = f", na_values: {yaml_list(markers.per_column[name])}" if name in markers.per_column else ""
            marked = markers.note(name)
            entries.append(
                (
                    f"    {yaml_scalar(name)}: {{missing: drop{own}}}",
                    f"the target: {empty_share(int(empty.sum()), columns.n_rows)}{', ' + marked if marked else ''}; "
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


def model_and_training_lines(target: TargetProfile, n_inputs: int, sizes: dict, dates: bool) -> list:
    """The task, ``model:``, ``optimizer:`` and ``train:``, sized by ``sizes``."""
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


def tune_lines(sizes: dict, config_name: str) -> list:
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
        f"#     model.layers[0].units: {yaml_list([max(1, units // 2), units, units * 2, units * 4])}",
        "",
    ]
