"""What the config asks of the data: targets, features, per-column settings, and the task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigSource
from ..errors import ConfigError, did_you_mean
from ..labels import canonical_label, canonical_number
from .csv import CsvFile, listed
from .targets import task_of


def label_sort_key(label: str):
    """Class labels in order: numbers by value first, then texts."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def target_labels(values: np.ndarray) -> np.ndarray:
    """Canonical label of every value (numbers or text), computed once per distinct value."""
    unique, inverse = np.unique(values, return_inverse=True)
    if values.dtype.kind == "f":
        labels = [canonical_number(float(value)) for value in unique]
    else:
        labels = [canonical_label(value) for value in unique]
    return np.asarray(labels, dtype=str)[inverse.reshape(-1)]


def infer_task(values: np.ndarray) -> str:
    """'classification' for text, or for few distinct integers each with enough rows; else 'regression'
    (see ``targets.task_of``)."""
    if values.dtype.kind != "f":
        try:
            return task_of(np.unique(values).astype(np.float64), values.size)
        except ValueError:
            return "classification"
    return task_of(np.unique(values), values.size)


@dataclass
class ColumnOptions:
    """One column's settings from ``data.columns`` (None: inferred, or the data-level default)."""

    type: str | None = None
    missing: str | None = None
    fill: object = None
    unknown: str = "error"
    format: str | None = None  # dates
    na_values: tuple = ()  # markers of a missing value in this column, beside the data-wide ones


NO_OPTIONS = ColumnOptions()  # shared, never changed: most of a wide file's columns have no settings


@dataclass
class DataPlan:
    """Which columns are features and targets, and how each is to be treated."""

    path: Path
    features: list[str]
    targets: list[str]
    options: dict
    missing: str = "error"
    fill: object = None
    source: ConfigSource | None = None
    na_values: tuple = ()  # data.na_values: markers of a missing value in every column

    def option(self, name: str) -> ColumnOptions:
        return self.options.get(name) or NO_OPTIONS

    def column_na_values(self) -> dict:
        """Each column's own markers of a missing value (data.columns.X.na_values)."""
        return {name: list(option.na_values) for name, option in self.options.items() if option.na_values}

    def read_markers(self, table: CsvFile) -> None:
        """Have ``table`` read the configured markers as missing values."""
        table.set_na_values(self.na_values, self.column_na_values())

    def policy(self, name: str) -> tuple[str, object, tuple]:
        """(missing policy, fill, config path it came from) for one column."""
        own = self.option(name)
        if own.missing is not None:
            return own.missing, own.fill, ("data", "columns", name, "missing")
        return self.missing, self.fill, ("data", "missing")

    def target_policy(self, name: str) -> str:
        return "drop" if self.policy(name)[0] == "drop" else "error"

    def fail(self, path: tuple, message: str) -> ConfigError:
        source = self.source or ConfigSource("config", {}, {})
        return source.fail(path, message)

    def request(self, task: str) -> dict:
        """What to ask the CSV reader for: numeric, wide (float64 targets) and text columns."""
        numeric, text, fixed = [], [], {}
        for name in self.features:
            option = self.option(name)
            kind = "date" if option.format is not None else option.type
            if kind in ("categorical", "boolean", "date"):
                text.append(name)
            else:
                numeric.append(name)
                if kind == "numeric":
                    fixed[name] = f"data.columns.{name}.type is numeric; fix the cell, or mark the column categorical"
        regression = task == "regression" or len(self.targets) > 1
        for name in self.targets:
            if regression:
                fixed[name] = (
                    "a regression target must be numeric (if the cell marks a missing value, add it to data.na_values)"
                )
        return {"numeric": numeric, "wide": list(self.targets), "text": text, "fixed": fixed}


def plan_data(
    table: CsvFile,
    target,
    features,
    exclude,
    columns: dict,
    missing: str,
    fill,
    source: ConfigSource,
    na_values=(),
) -> DataPlan:
    """Check the column names a config uses against the CSV header and build the plan."""
    targets = [target] if isinstance(target, str) else list(target)
    _check_targets_and_exclude(table, targets, exclude, source)
    feature_names = _feature_names(table, targets, features, set(exclude), source)
    options = _column_options(table, targets, feature_names, set(exclude), columns, source)
    return DataPlan(table.path, feature_names, targets, options, missing, fill, source, tuple(na_values))


def _unknown_column(table: CsvFile, source: ConfigSource, path: tuple, name: str) -> ConfigError:
    return source.fail(
        path,
        f"column {name!r} is not in {table.path}{did_you_mean(name, table.header)}; columns are {listed(table.header)}",
        key=path[1] == "columns",
    )


def _check_targets_and_exclude(table: CsvFile, targets: list, exclude, source: ConfigSource) -> None:
    """Every target is a column; every excluded name is a column and not a target."""
    known = table.positions  # membership tests by dict: a file may have 10⁶ columns
    for name in targets:
        if name not in known:
            raise table.column_not_found(name, "target")
    for index, name in enumerate(exclude):
        if name not in known:
            raise _unknown_column(table, source, ("data", "exclude", index), name)
        if name in targets:
            raise source.fail(("data", "exclude", index), f"excludes the target {name!r}; remove it from data.exclude")


def _feature_names(table: CsvFile, targets: list, features, excluded: set, source: ConfigSource) -> list[str]:
    """data.features checked against the header, or every column but the targets and the excluded."""
    fail = source.fail
    if features is not None:
        for name in features:
            if name not in table.positions:
                raise table.column_not_found(name, "feature")
            if name in targets:
                raise fail(("data", "features"), f"lists the target {name!r}; remove it from the features")
            if name in excluded:
                raise fail(("data", "features"), f"lists {name!r}, which data.exclude excludes; keep one of them")
        feature_names = list(features)
    else:
        feature_names = [name for name in table.header if name not in excluded and name not in targets]
    if not feature_names:
        raise fail(("data",), f"no feature columns; {table.path} has only the target and excluded columns")
    return feature_names


def _column_options(
    table: CsvFile, targets: list, feature_names: list, excluded: set, columns: dict, source: ConfigSource
) -> dict:
    """data.columns checked: each names a used column, and a target's only the settings a target takes."""
    options = {}
    features_set = set(feature_names)
    for name, spec in columns.items():
        if name not in table.positions:
            raise _unknown_column(table, source, ("data", "columns", name), name)
        if name in excluded:
            raise source.fail(("data", "columns", name), f"{name!r} is excluded by data.exclude; remove one of them")
        if name not in targets and name not in features_set:
            raise source.fail(("data", "columns", name), f"{name!r} is not a feature (data.features leaves it out)")
        if name in targets:
            _check_target_options(name, spec, source)
        options[name] = spec
    return options


def _check_target_options(name: str, spec: ColumnOptions, source: ConfigSource) -> None:
    """A target's data.columns entry: no type, unknown, format, or filling of its missing cells."""
    fail = source.fail
    if spec.type is not None:
        raise fail(
            ("data", "columns", name, "type"),
            "not used for the target; set task: classification or regression instead",
        )
    if spec.unknown != "error":
        raise fail(
            ("data", "columns", name, "unknown"),
            "a class label training never saw is always an error; remove unknown from the target",
        )
    if spec.format is not None:
        raise fail(("data", "columns", name, "format"), "not used for the target; dates are features only")
    if spec.missing not in (None, "error", "drop"):
        raise fail(
            ("data", "columns", name, "missing"),
            f"a target cannot be filled in ({spec.missing}); use error, or drop to skip rows with an empty target",
        )
