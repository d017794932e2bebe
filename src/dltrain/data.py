"""Columns to model inputs: column types, missing values, one-hot encoding, scaling, splits.

The preprocessing is fitted on the training rows only and stored in the run folder as a
``DataSchema``; ``read_features`` applies exactly the same steps to any CSV at eval or predict
time. Parsing the CSV text itself is csvio.py's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .csvio import DELIMITERS, Columns, CsvFile, listed
from .errors import ConfigError, DataError, did_you_mean

MAX_AUTO_CLASSES = 20  # an integer target with at most this many values is taken as classes,
MIN_ROWS_PER_CLASS = 5  # if it has on average this many rows per value (else it is a count or a score)
MAX_CATEGORIES = 1000  # one-hot columns beyond this are almost surely an ID or free text
MISSING_POLICIES = ("error", "drop", "mean", "median", "mode", "constant")
COLUMN_TYPES = ("numeric", "categorical", "boolean")
BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "t": True, "f": False,
                 "y": True, "n": False, "1": True, "0": False}
_KNOWN_SHOWN = 20  # known values listed in an error message
_STATISTICS_ROWS = 8192  # rows per block when statistics or row moves stream through a matrix


# ---------------------------------------------------------------- labels


def canonical_label(value) -> str:
    """One spelling per class label, so '1', '1.0' and ' 1' are the same class."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return _canonical_number(number) if math.isfinite(number) else text


def _canonical_number(number: float) -> str:
    return str(int(number)) if number == int(number) else repr(float(number))


def _label_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def target_labels(values: np.ndarray) -> np.ndarray:
    """Canonical label of every value (numbers or text), computed once per distinct value."""
    unique, inverse = np.unique(values, return_inverse=True)
    if values.dtype.kind == "f":
        labels = [_canonical_number(float(value)) for value in unique]
    else:
        labels = [canonical_label(value) for value in unique]
    return np.asarray(labels, dtype=object)[inverse.reshape(-1)]


def infer_task(values: np.ndarray) -> str:
    """'classification' for text, or for few distinct integers each with enough rows; else 'regression'.

    16 distinct integers in 20 rows are a quantity, not 16 classes: a classifier could not
    even hold out one row of each."""
    n_rows = values.size
    if values.dtype.kind != "f":
        try:
            values = np.unique(values).astype(np.float64)
        except ValueError:
            return "classification"
    values = values[~np.isnan(values)]
    integral = np.all(np.isfinite(values)) and np.all(values == np.round(values))
    distinct = np.unique(values).size
    enough_rows = distinct <= 2 or n_rows >= MIN_ROWS_PER_CLASS * distinct
    return "classification" if integral and distinct <= MAX_AUTO_CLASSES and enough_rows else "regression"


# ---------------------------------------------------------------- what the config asks for


def _dotted(path) -> str:
    """A config key path as the user writes it: data.columns.x.missing, data.exclude[0]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class ColumnOptions:
    """One column's settings from ``data.columns`` (None: inferred, or the data-level default)."""

    type: str | None = None
    missing: str | None = None
    fill: object = None
    unknown: str = "error"


_NO_OPTIONS = ColumnOptions()  # shared, never changed: most of a wide file's columns have no settings


@dataclass
class DataPlan:
    """Which columns are features and targets, and how each is to be treated."""

    path: Path
    features: list[str]
    targets: list[str]
    options: dict
    missing: str = "error"
    fill: object = None
    where: Callable = field(default=lambda path: "config")

    def option(self, name: str) -> ColumnOptions:
        return self.options.get(name) or _NO_OPTIONS

    def policy(self, name: str) -> tuple[str, object, tuple]:
        """(missing policy, fill, config path it came from) for one column."""
        own = self.option(name)
        if own.missing is not None:
            return own.missing, own.fill, ("data", "columns", name, "missing")
        return self.missing, self.fill, ("data", "missing")

    def target_policy(self, name: str) -> str:
        return "drop" if self.policy(name)[0] == "drop" else "error"

    def fail(self, path: tuple, message: str) -> ConfigError:
        return ConfigError(f"{self.where(path)}: {_dotted(path)}: {message}")

    def request(self, task: str) -> dict:
        """What to ask the CSV reader for: numeric, wide (float64 targets) and text columns."""
        numeric, text, fixed = [], [], {}
        for name in self.features:
            kind = self.option(name).type
            if kind in ("categorical", "boolean"):
                text.append(name)
            else:
                numeric.append(name)
                if kind == "numeric":
                    fixed[name] = (f"data.columns.{name}.type is numeric; fix the cell, or mark the column "
                                   "categorical")
        regression = task == "regression" or len(self.targets) > 1
        for name in self.targets:
            if regression:
                fixed[name] = "a regression target must be numeric"
        return {"numeric": numeric, "wide": list(self.targets), "text": text, "fixed": fixed}


def plan_data(table: CsvFile, target, features, exclude, columns: dict, missing: str, fill,
              where: Callable) -> DataPlan:
    """Check the column names a config uses against the CSV header and build the plan."""
    header = table.header
    known = table.positions  # membership tests by dict: a file may have 10⁶ columns
    targets = [target] if isinstance(target, str) else list(target)
    excluded = set(exclude)

    def fail(path, message, key=False):
        place = where(path, key=True) if key else where(path)
        return ConfigError(f"{place}: {_dotted(path)}: {message}")

    def unknown_column(path, name):
        return fail(path, f"column {name!r} is not in {table.path}{did_you_mean(name, header)}; "
                    f"columns are {listed(header)}",
                    key=path[1] == "columns")

    for name in targets:
        if name not in known:
            raise table.column_not_found(name, "target")
    for index, name in enumerate(exclude):
        if name not in known:
            raise unknown_column(("data", "exclude", index), name)
        if name in targets:
            raise fail(("data", "exclude", index), f"excludes the target {name!r}; remove it from data.exclude")
    if features is not None:
        for index, name in enumerate(features):
            if name not in known:
                raise table.column_not_found(name, "feature")
            if name in targets:
                raise fail(("data", "features"), f"lists the target {name!r}; remove it from the features")
            if name in excluded:
                raise fail(("data", "features"), f"lists {name!r}, which data.exclude excludes; keep one of them")
        feature_names = list(features)
    else:
        feature_names = [name for name in header if name not in excluded and name not in targets]
    if not feature_names:
        raise fail(("data",), f"no feature columns; {table.path} has only the target and excluded columns")
    options = {}
    features_set = set(feature_names)
    for name, spec in columns.items():
        if name not in known:
            raise unknown_column(("data", "columns", name), name)
        if name in excluded:
            raise fail(("data", "columns", name), f"{name!r} is excluded by data.exclude; remove one of them")
        if name not in targets and name not in features_set:
            raise fail(("data", "columns", name), f"{name!r} is not a feature (data.features leaves it out)")
        if name in targets:
            if spec.type is not None:
                raise fail(("data", "columns", name, "type"), "not used for the target; set task: "
                           "classification or regression instead")
            if spec.unknown != "error":
                raise fail(("data", "columns", name, "unknown"), "a class label training never saw is always "
                           "an error; remove unknown from the target")
            if spec.missing not in (None, "error", "drop"):
                raise fail(("data", "columns", name, "missing"), f"a target cannot be filled in "
                           f"({spec.missing}); use error, or drop to skip rows with an empty target")
        options[name] = spec
    return DataPlan(table.path, feature_names, targets, options, missing, fill, where)


# ---------------------------------------------------------------- one column's encoding


@dataclass
class ColumnEncoding:
    """How one CSV column becomes model inputs: its type, missing-value fill and categories."""

    name: str
    type: str = "numeric"
    missing: str = "error"
    fill: object = None            # the value an empty cell takes (fitted for mean, median, mode)
    categories: list = field(default_factory=list)
    unknown: str = "error"         # categorical: an unseen value is an error, or all zeros

    @property
    def width(self) -> int:
        return len(self.categories) if self.type == "categorical" else 1

    def input_names(self) -> list[str]:
        if self.type == "categorical":
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name]

    def to_dict(self) -> dict:
        data = {"name": self.name, "type": self.type, "missing": self.missing, "fill": self.fill}
        if self.type == "categorical":
            data.update(categories=list(self.categories), unknown=self.unknown)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ColumnEncoding":
        encoding = cls(str(data["name"]), data["type"], data["missing"], data.get("fill"),
                       [str(value) for value in data.get("categories", [])], data.get("unknown", "error"))
        if encoding.type not in COLUMN_TYPES or encoding.missing not in MISSING_POLICIES:
            raise ValueError(f"column {encoding.name!r}: unknown type {encoding.type!r} or missing "
                             f"policy {encoding.missing!r}")
        if encoding.unknown not in ("error", "ignore"):
            raise ValueError(f"column {encoding.name!r}: unknown must be error or ignore")
        if encoding.missing in ("mean", "median", "mode", "constant") and encoding.fill is None:
            raise ValueError(f"column {encoding.name!r}: missing {encoding.missing} without a fill value")
        if encoding.type == "categorical" and not encoding.categories:
            raise ValueError(f"column {encoding.name!r}: a categorical column without categories")
        fill = encoding.fill
        fits = {"numeric": lambda: isinstance(fill, (int, float)) and not isinstance(fill, bool) and math.isfinite(fill),
                "boolean": lambda: isinstance(fill, bool),
                "categorical": lambda: isinstance(fill, str)}
        if fill is not None and not fits[encoding.type]():
            raise ValueError(f"column {encoding.name!r}: the fill {fill!r} does not suit a {encoding.type} column")
        return encoding


def _missing_mask(columns: Columns, name: str) -> np.ndarray:
    if name in columns.text:
        return columns.text[name] == ""
    return np.isnan(columns.numbers(name))


def _suspect_numeric(columns: Columns, names) -> set:
    """Numeric columns that may hold NaN or inf: one float64 sum per column finds them all."""
    positions = columns.numeric_positions(names)
    suspects = {name for name in names if name in columns.wide}
    if positions:
        with np.errstate(all="ignore"):
            sums = np.add.reduce(columns.matrix, axis=0, dtype=np.float64)
        suspects.update(columns.numeric_names[position] for position in positions
                        if not math.isfinite(sums[position]))
    return suspects


def _first(mask: np.ndarray, rows: np.ndarray | None):
    """Index (into the full table) of the first True among ``rows``, or None."""
    if rows is not None:
        hits = rows[mask[rows]]
        return int(hits[0]) if hits.size else None
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _boolean_values(values: np.ndarray) -> tuple[np.ndarray, int | None]:
    """0/1 floats for boolean words (NaN for missing), and the index of the first other word."""
    unique, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    words = [word.lower() for word in unique.tolist()]
    mapped = np.array([float(BOOLEAN_WORDS[word]) if word in BOOLEAN_WORDS else np.nan for word in words],
                      dtype=np.float32)
    other = np.array([word != "" and word not in BOOLEAN_WORDS for word in words], dtype=bool)
    bad_rows = np.flatnonzero(other[inverse])
    return mapped[inverse], (int(bad_rows[0]) if bad_rows.size else None)


def _mostly_numbers(values: np.ndarray):
    """(indices of the non-numbers, numbers, non-missing) when at least half the cells are numbers."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    numeric = np.zeros(unique.size, dtype=bool)
    for index, word in enumerate(unique):
        try:
            float(word)
            numeric[index] = word != ""
        except ValueError:
            pass
    present = unique != ""
    n_numbers, n_present = int(counts[numeric].sum()), int(counts[present].sum())
    if n_present and n_numbers * 2 >= n_present and n_numbers < n_present:
        bad = np.flatnonzero((present & ~numeric)[inverse.reshape(-1)])
        return bad, n_numbers, n_present
    return None


# ---------------------------------------------------------------- the fitted schema


@dataclass
class DataSchema:
    """Everything needed to turn a CSV into model inputs and outputs: fitted on train, stored."""

    feature_names: list[str]
    target: str | list
    task: str
    scale: str
    offset: np.ndarray
    divisor: np.ndarray
    class_labels: list[str] = field(default_factory=list)
    binary: bool = False  # two classes predicted by one sigmoid output
    columns: list = field(default_factory=list)      # one ColumnEncoding per feature
    target_missing: str = "error"                     # drop: labelled rows with an empty target are skipped
    delimiter: str | None = None                      # None: detected in each file
    decimal: str = "."
    encoding: str = "utf-8"
    target_scale: str = "none"                        # regression: standard trains on (y - offset) / divisor
    target_offset: np.ndarray | None = None
    target_divisor: np.ndarray | None = None

    def __post_init__(self):
        if not self.columns:
            self.columns = [ColumnEncoding(name) for name in self.feature_names]

    # ------------------------------------------------------------ shape

    @property
    def targets(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)

    @property
    def input_names(self) -> list[str]:
        return [name for column in self.columns for name in column.input_names()]

    @property
    def n_inputs(self) -> int:
        return sum(column.width for column in self.columns)

    @property
    def n_outputs(self) -> int:
        if self.task == "regression":
            return len(self.targets)
        return 1 if self.binary else len(self.class_labels)

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, columns: Columns, encodings: list, train_rows: np.ndarray, all_rows: np.ndarray, targets,
            task: str, scale: str, target_missing: str = "error", csv_options: dict | None = None,
            target_scale: str = "none") -> "DataSchema":
        """Fit fills and scaling on ``train_rows``; categories and class labels on ``all_rows``."""
        fitted = [_fit_column(columns, encoding, train_rows, all_rows) for encoding in encodings]
        labels = []
        if task == "classification":
            name = targets[0]
            raw = columns.text[name] if name in columns.text else columns.numbers(name)
            labels = sorted(set(target_labels(raw[all_rows]).tolist()), key=_label_sort_key)
        width = sum(column.width for column in fitted)
        schema = cls([column.name for column in fitted], targets[0] if len(targets) == 1 else list(targets),
                     task, scale, np.zeros(width, dtype=np.float32), np.ones(width, dtype=np.float32), labels,
                     columns=fitted, target_missing=target_missing, **(csv_options or {}))
        schema._fit_scaling(columns, train_rows)
        if task == "regression" and target_scale == "standard":
            schema._fit_target_scaling(columns, train_rows)
        return schema

    def _fit_target_scaling(self, columns: Columns, train_rows: np.ndarray):
        """Mean and standard deviation of each regression target on the training rows."""
        values = np.column_stack([columns.numbers(name)[train_rows] for name in self.targets]).astype(np.float64)
        offset = values.mean(axis=0)
        divisor = values.std(axis=0)
        divisor[~(divisor > 0) | ~np.isfinite(divisor)] = 1.0  # a constant target is only shifted
        self.target_scale, self.target_offset, self.target_divisor = "standard", offset, divisor

    def unscale_targets(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs in the target's own units (the inverse of the target scaling)."""
        if self.target_divisor is None:
            return outputs
        return outputs * self.target_divisor + self.target_offset

    def _fit_scaling(self, columns: Columns, train_rows: np.ndarray):
        """Statistics of the numeric inputs on the training rows; one-hot and 0/1 inputs stay as they are.

        Computed in blocks of rows, in float64, so no copy of the training matrix is needed."""
        if self.scale == "none":
            return
        starts = np.cumsum([0] + [column.width for column in self.columns])[:-1]
        numeric = [(start, column) for start, column in zip(starts, self.columns) if column.type == "numeric"]
        if not numeric:
            return
        inputs = np.array([start for start, _ in numeric])
        positions = columns.numeric_positions([column.name for _, column in numeric])
        fills = np.array([np.nan if column.fill is None else column.fill for _, column in numeric], dtype=np.float32)
        every_column = positions == list(range(columns.matrix.shape[1]))
        any_fill = bool(np.any(~np.isnan(fills)))

        def blocks():
            for begin in range(0, len(train_rows), _STATISTICS_ROWS):
                chunk = train_rows[begin:begin + _STATISTICS_ROWS]
                block = columns.matrix[chunk] if every_column else columns.matrix[np.ix_(chunk, positions)]
                if any_fill:
                    block = np.where(np.isnan(block), fills, block)
                yield block

        if self.scale == "standard":
            total = sum(np.add.reduce(block, axis=0, dtype=np.float64) for block in blocks())
            offset = total / len(train_rows)
            divisor = np.sqrt(sum(np.add.reduce((block - offset) ** 2, axis=0) for block in blocks()) / len(train_rows))
        else:
            extremes = [(block.min(axis=0), block.max(axis=0)) for block in blocks()]
            offset = np.minimum.reduce([low for low, _ in extremes]).astype(np.float64)
            divisor = np.maximum.reduce([high for _, high in extremes]).astype(np.float64) - offset
        divisor[~(divisor > 0) | ~np.isfinite(divisor)] = 1.0  # a constant column becomes 0, never NaN
        self.offset[inputs] = offset
        self.divisor[inputs] = divisor

    # ------------------------------------------------------------ applying

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale model inputs in place with the training statistics."""
        features -= self.offset
        features /= self.divisor
        return features

    def _numeric_input(self, columns: Columns, column: ColumnEncoding, rows) -> np.ndarray:
        values = columns.numbers(column.name)
        values = values if rows is None else values[rows]
        if column.fill is not None:
            missing = np.isnan(values)
            if missing.any():
                values = np.where(missing, np.float32(column.fill), values)
        return values

    def encode_features(self, columns: Columns, rows: np.ndarray | None = None, in_place: bool = False) -> np.ndarray:
        """Scaled float32 model inputs for ``rows`` (all when None) of checked columns.

        When every feature is numeric, the reader's matrix already is the model input. With
        ``in_place`` the chosen (ascending) rows are moved to its front instead of copied, so
        a training split costs no second matrix; the columns are then spent."""
        plain = (all(column.type == "numeric" for column in self.columns)
                 and columns.numeric_names == self.feature_names)
        if plain:
            if rows is None:
                features = columns.matrix
            elif in_place:
                features = _rows_to_front(columns.matrix, rows)
            else:
                features = columns.matrix[rows]
            filled = [position for position, column in enumerate(self.columns) if column.fill is not None]
            for position in filled:
                values = features[:, position]
                values[np.isnan(values)] = self.columns[position].fill
            return self.transform(features)
        n_rows = columns.n_rows if rows is None else len(rows)
        features = np.zeros((n_rows, self.n_inputs), dtype=np.float32)
        start = 0
        for column in self.columns:
            if column.type == "numeric":
                features[:, start] = self._numeric_input(columns, column, rows)
            elif column.type == "boolean":
                values = columns.text[column.name] if rows is None else columns.text[column.name][rows]
                if column.fill is not None:
                    values = np.where(values == "", "true" if column.fill else "false", values)
                features[:, start] = _boolean_values(values)[0]
            else:
                self._one_hot(columns, column, rows, features[:, start:start + column.width])
            start += column.width
        return self.transform(features)

    def _one_hot(self, columns: Columns, column: ColumnEncoding, rows, out: np.ndarray):
        values = columns.text[column.name] if rows is None else columns.text[column.name][rows]
        if column.fill is not None:
            values = np.where(values == "", str(column.fill), values)
        categories = np.asarray(column.categories, dtype=str)
        order = np.argsort(categories)
        sorted_categories = categories[order]
        positions = np.searchsorted(sorted_categories, values)
        positions[positions >= len(categories)] = 0
        known = sorted_categories[positions] == values
        if not known.all() and column.unknown == "error":
            bad = int(np.flatnonzero(~known)[0])
            row = bad if rows is None else int(rows[bad])
            shown = ", ".join(column.categories[:_KNOWN_SHOWN])
            shown += " …" if len(column.categories) > _KNOWN_SHOWN else ""
            raise DataError(f"{columns.path}:{columns.line(row)}: column {column.name!r} has {str(values[bad])!r}, "
                            f"which training never saw; known values: {shown} (to encode unseen values as all zeros, "
                            f"set data.columns.{column.name}.unknown: ignore in the config and train again)")
        hit = np.flatnonzero(known)
        out[hit, order[positions[hit]]] = 1.0

    def encode_target(self, columns: Columns, rows: np.ndarray | None = None) -> np.ndarray:
        """Class indices (int64), a 0/1 column (binary) or float32 values, one column per target."""
        if self.task == "regression":
            values = np.column_stack([columns.numbers(name) for name in self.targets])
            values = values if rows is None else values[rows]
            if self.target_divisor is not None:
                return ((values - self.target_offset) / self.target_divisor).astype(np.float32)
            return values.astype(np.float32, copy=False)
        name = self.targets[0]
        raw = columns.text[name] if name in columns.text else columns.numbers(name)
        raw = raw if rows is None else raw[rows]
        labels = target_labels(raw)
        index_of = {label: index for index, label in enumerate(self.class_labels)}
        indices = np.fromiter((index_of.get(label, -1) for label in labels), dtype=np.int64, count=len(labels))
        if (indices < 0).any():
            bad = int(np.flatnonzero(indices < 0)[0])
            row = bad if rows is None else int(rows[bad])
            raise DataError(f"{columns.path}:{columns.line(row)}: target {name!r} has class {str(labels[bad])!r}, "
                            f"which training never saw; known classes: {', '.join(self.class_labels)}")
        if self.binary:
            return indices.astype(np.float32).reshape(-1, 1)
        return indices

    # ------------------------------------------------------------ reading a CSV like training did

    def open(self, path, dialect: dict | None = None) -> CsvFile:
        """Open a CSV as training did (the config's delimiter and encoding), or with ``dialect``.

        ``dialect`` ({"delimiter", "encoding"}, None values meaning detect and UTF-8) is for
        files from elsewhere, at eval and predict: the dialect belongs to each file, not to the
        model. The decimal mark stays the model's, unless the file is comma-separated."""
        if dialect is None:
            return CsvFile.open(path, self.delimiter, self.encoding, self.decimal)
        table = CsvFile.open(path, dialect.get("delimiter"), dialect.get("encoding") or "utf-8", self.decimal,
                             encoding_setting="--encoding")
        if table.delimiter == ",":
            table.decimal = "."
        return table

    def read_columns(self, table: CsvFile, with_target: bool) -> Columns:
        numeric = [column.name for column in self.columns if column.type == "numeric"]
        text = [column.name for column in self.columns if column.type != "numeric"]
        fixed = {name: "the model was trained on numbers in this column" for name in numeric}
        wide = []
        if with_target:
            for name in self.targets:
                table.index(name, "target")
                wide.append(name)
                if self.task == "regression":
                    fixed[name] = "a regression target must be numeric"
        for name in self.feature_names:
            table.index(name, "feature")
        return table.read(numeric=numeric, wide=wide, text=text, fixed=fixed)

    def usable_rows(self, columns: Columns, labelled: bool) -> np.ndarray | None:
        """Rows a trained model can use; raises for cells it cannot (None: every row)."""
        targets = self.targets if labelled else []
        return checked_rows(columns, self.columns, targets, self.target_missing,
                            "labelled" if labelled else "predict")

    # ------------------------------------------------------------ stored form

    def to_dict(self) -> dict:
        return {
            "target": self.target, "task": self.task, "feature_names": self.feature_names,
            "class_labels": self.class_labels, "binary": self.binary,
            "scaler": {"method": self.scale, "offset": self.offset.tolist(), "divisor": self.divisor.tolist()},
            "columns": [column.to_dict() for column in self.columns],
            "target_missing": self.target_missing,
            "csv": {"delimiter": self.delimiter, "decimal": self.decimal, "encoding": self.encoding},
            "target_scaler": {"method": self.target_scale,
                              "offset": None if self.target_offset is None else self.target_offset.tolist(),
                              "divisor": None if self.target_divisor is None else self.target_divisor.tolist()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DataSchema":
        """Rebuild from ``to_dict``; a ValueError, KeyError or TypeError names what is wrong."""
        scaler = data["scaler"]
        feature_names = [str(name) for name in data["feature_names"]]
        target = data["target"]
        if not isinstance(target, (str, list)) or not target:
            raise ValueError(f"target must be a column name or a list of them, not {target!r}")
        columns = [ColumnEncoding.from_dict(item) for item in data.get("columns", [])]
        if columns and [column.name for column in columns] != feature_names:
            raise ValueError("the column encodings do not match feature_names")
        csv_options = data.get("csv", {})
        if not isinstance(csv_options, dict) or not isinstance(scaler, dict) or not isinstance(data["class_labels"], list):
            raise ValueError("csv, scaler and class_labels must be a mapping, a mapping and a list")
        schema = cls(feature_names, target, data["task"], scaler["method"],
                     np.asarray(scaler["offset"], dtype=np.float32), np.asarray(scaler["divisor"], dtype=np.float32),
                     [str(label) for label in data["class_labels"]], bool(data["binary"]), columns,
                     data.get("target_missing", "error"), csv_options.get("delimiter"),
                     csv_options.get("decimal", "."), csv_options.get("encoding", "utf-8"))
        if schema.task not in ("classification", "regression") or schema.scale not in ("standard", "minmax", "none"):
            raise ValueError(f"unknown task {schema.task!r} or scaling {schema.scale!r}")
        if schema.offset.shape != (schema.n_inputs,) or schema.divisor.shape != (schema.n_inputs,):
            raise ValueError(f"the scaler has {schema.offset.size} offsets and {schema.divisor.size} divisors "
                             f"for {schema.n_inputs} inputs")
        if not (np.all(np.isfinite(schema.offset)) and np.all(np.isfinite(schema.divisor))
                and np.all(schema.divisor != 0)):
            raise ValueError("the scaler holds non-finite values or a zero divisor")
        if schema.task == "classification" and len(schema.class_labels) < 2:
            raise ValueError("a classifier needs at least two class labels")
        if schema.delimiter not in (None, *DELIMITERS) or schema.decimal not in (".", ","):
            raise ValueError(f"unknown delimiter {schema.delimiter!r} or decimal mark {schema.decimal!r}")
        if schema.target_missing not in ("error", "drop"):
            raise ValueError(f"unknown target_missing {schema.target_missing!r}")
        target_scaler = data.get("target_scaler") or {"method": "none"}  # none: saved before targets were scaled
        if target_scaler["method"] == "standard":
            offset = np.asarray(target_scaler["offset"], dtype=np.float64)
            divisor = np.asarray(target_scaler["divisor"], dtype=np.float64)
            if schema.task != "regression" or offset.shape != (len(schema.targets),) or divisor.shape != offset.shape:
                raise ValueError(f"the target scaler has {offset.size} offsets and {divisor.size} divisors "
                                 f"for {len(schema.targets)} regression targets")
            if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(divisor)) and np.all(divisor > 0)):
                raise ValueError("the target scaler holds non-finite values or a divisor <= 0")
            schema.target_scale, schema.target_offset, schema.target_divisor = "standard", offset, divisor
        elif target_scaler["method"] != "none":
            raise ValueError(f"unknown target scaling {target_scaler['method']!r}")
        return schema


def _rows_to_front(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` for ascending ``rows``, made by moving them forward inside ``matrix``."""
    if rows.size and np.any(np.diff(rows) <= 0):
        return matrix[rows]
    if not rows.size or rows[-1] == len(rows) - 1:  # already the leading rows, in order
        return matrix[:len(rows)]
    for begin in range(0, len(rows), _STATISTICS_ROWS):
        chunk = rows[begin:begin + _STATISTICS_ROWS]
        # Row k moves to position <= k, and every later source lies beyond what was written.
        matrix[begin:begin + len(chunk)] = matrix[chunk]
    return matrix[:len(rows)]


def _fit_column(columns: Columns, encoding: ColumnEncoding, train_rows: np.ndarray, all_rows: np.ndarray):
    """The column with its fill value (mean, median or mode of the training rows) and categories."""
    name = encoding.name
    fill = encoding.fill
    if encoding.type == "numeric":
        if encoding.missing not in ("mean", "median", "mode"):
            return encoding  # nothing to fit (most columns of a wide file)
        if encoding.missing in ("mean", "median", "mode"):
            values = columns.numbers(name)[train_rows]
            present = values[~np.isnan(values)].astype(np.float64)
            if present.size == 0:
                raise DataError(f"{columns.path}: column {name!r} has no values in the training rows to take "
                                f"the {encoding.missing} of; fill it in or exclude the column")
            if encoding.missing == "mean":
                fill = float(present.mean())
            elif encoding.missing == "median":
                fill = float(np.median(present))
            else:
                unique, counts = np.unique(present, return_counts=True)
                fill = float(unique[np.argmax(counts)])
        return ColumnEncoding(name, "numeric", encoding.missing, fill)
    values = columns.text[name]
    if encoding.missing == "mode":
        present = values[train_rows]
        if encoding.type == "boolean":
            words = _boolean_values(present)[0]
            words = words[~np.isnan(words)]
            if words.size == 0:
                raise DataError(f"{columns.path}: column {name!r} has no values in the training rows to take "
                                "the mode of; fill it in or exclude the column")
            fill = bool(np.count_nonzero(words) * 2 >= words.size)  # ties go to true
        else:
            present = present[present != ""]
            if present.size == 0:
                raise DataError(f"{columns.path}: column {name!r} has no values in the training rows to take "
                                "the mode of; fill it in or exclude the column")
            unique, counts = np.unique(present, return_counts=True)
            fill = str(unique[np.argmax(counts)])
    if encoding.type == "boolean":
        return ColumnEncoding(name, "boolean", encoding.missing, fill)
    categories = sorted(set(np.unique(values[all_rows]).tolist()) - {""} | ({str(fill)} if fill is not None else set()))
    if len(categories) > MAX_CATEGORIES:
        raise DataError(f"{columns.path}: column {name!r} has {len(categories)} distinct values, too many to "
                        f"one-hot encode (at most {MAX_CATEGORIES}); it looks like an ID or free text: add it to "
                        "data.exclude")
    return ColumnEncoding(name, "categorical", encoding.missing, fill, categories, encoding.unknown)


def checked_rows(columns: Columns, encodings: list, targets: list, target_missing: str, mode: str):
    """Rows to keep after ``drop`` policies; the earliest cell that cannot be used is a DataError.

    ``mode``: 'train' and 'labelled' drop rows under ``drop``; 'predict' never drops a row."""
    path = columns.path
    drop = np.zeros(columns.n_rows, dtype=bool)
    suspects = _suspect_numeric(columns, [encoding.name for encoding in encodings] + list(targets))
    masks = {}
    for encoding in encodings:
        if encoding.name in columns.text or encoding.name in suspects:
            masks[encoding.name] = _missing_mask(columns, encoding.name)
    problems = []  # (row, column position, message)
    for position, encoding in enumerate(encodings):
        mask = masks.get(encoding.name)
        if mask is None or not mask.any():
            continue
        if encoding.missing == "drop":
            if mode == "predict":
                row = _first(mask, None)
                problems.append((row, position, f"column {encoding.name!r} is empty (a missing value); the model "
                                 "was trained without such rows (missing: drop), so it cannot predict this one; "
                                 "fill the cell in"))
            else:
                drop |= mask
    for name in targets:
        mask = np.isnan(columns.numbers(name)) if name not in columns.text else columns.text[name] == ""
        if mask.any():
            if target_missing == "drop":
                drop |= mask
            else:
                row = _first(mask, None)
                problems.append((row, -1, f"target {name!r} is empty (a missing value); fill it in, or set "
                                 f"data.columns.{name}.missing: drop to skip rows without a target"))
    keep = np.flatnonzero(~drop) if drop.any() else None
    for position, encoding in enumerate(encodings):
        mask = masks.get(encoding.name)
        if mask is None:
            continue
        if encoding.missing == "error":
            row = _first(mask, keep)
            if row is not None:
                advice = ("fill it in, or set data.columns.{0}.missing (drop, mean, median, mode or constant)"
                          if mode == "train" else "the model was trained without missing values in this column; "
                          "fill it in").format(encoding.name)
                problems.append((row, position, f"column {encoding.name!r} is empty (a missing value); {advice}"))
        if encoding.name not in columns.text:
            values = columns.numbers(encoding.name)
            row = _first(np.isinf(values), keep)
            if row is not None:
                problems.append((row, position, f"column {encoding.name!r} has {float(values[row])!r}; "
                                 "features must be finite numbers"))
        elif encoding.type == "boolean":
            _, bad = _boolean_values(columns.text[encoding.name] if keep is None else columns.text[encoding.name][keep])
            if bad is not None:
                row = bad if keep is None else int(keep[bad])
                word = str(columns.text[encoding.name][row])
                problems.append((row, position, f"column {encoding.name!r} has {word!r}, which is not true/false "
                                 "(or yes/no, 1/0)"))
    for name in targets:
        if name not in columns.text:
            values = columns.numbers(name)
            row = _first(np.isinf(values), keep)
            if row is not None:
                problems.append((row, -1, f"target {name!r} has {float(values[row])!r}; targets must be finite"))
    if problems:
        row, _, message = min(problems, key=lambda problem: (columns.line(problem[0]), problem[1]))
        raise DataError(f"{path}:{columns.line(row)}: {message}")
    if keep is not None and keep.size == 0:
        raise DataError(f"{path}: every row has an empty cell in a column with missing: drop; no rows are left")
    return keep


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
            continue
        option = option or _NO_OPTIONS
        kind = option.type
        if name in columns.text:
            values = columns.text[name]
            if kind is None:
                mostly = _mostly_numbers(values)
                if mostly is not None:
                    bad, numbers, present = mostly
                    row = int(bad[0])
                    others = ""
                    if bad.size > 1:
                        shown = ", ".join(f"{columns.line(int(index))} ({str(values[index])!r})" for index in bad[1:6])
                        others = (f", nor are {bad.size - 1} more cell{'s' if bad.size > 2 else ''} (line "
                                  f"{shown}{', …' if bad.size > 6 else ''})")
                    raise DataError(f"{columns.path}:{columns.line(row)}: column {name!r} has {str(values[row])!r}, "
                                    f"which is not a number{others}, though {numbers} of its {present} values are; "
                                    f"fix the cell{'s' if bad.size > 1 else ''}, or set data.columns.{name}.type: "
                                    "categorical to treat the column as text")
                present = np.unique(values)
                words = {word.lower() for word in present.tolist()} - {""}
                kind = "boolean" if words and words <= set(BOOLEAN_WORDS) else "categorical"
            elif kind == "boolean":
                _, bad = _boolean_values(values)
                if bad is not None:
                    raise DataError(f"{columns.path}:{columns.line(bad)}: column {name!r} has {str(values[bad])!r}, "
                                    f"which is not true/false (or yes/no, 1/0); data.columns.{name}.type is boolean")
        else:
            kind = "numeric"
        missing, fill, path = plan.policy(name)
        if kind != "numeric" and missing in ("mean", "median"):
            if path[1] == "columns":
                raise plan.fail(path, f"{missing} needs a numeric column and {name!r} is {kind}; use mode or constant")
            missing = "mode"  # the data-wide default falls back to the most frequent value for text
        if missing == "constant":
            fill = _constant_fill(plan, name, kind, fill, path)
        elif missing not in ("mean", "median", "mode"):
            fill = None
        encodings.append(ColumnEncoding(name, kind, missing, fill if missing == "constant" else None,
                                        unknown=option.unknown))
        if option.unknown != "error" and kind != "categorical":
            raise plan.fail(("data", "columns", name, "unknown"), f"applies to categorical columns, and {name!r} "
                            f"is {kind}")
    return encodings


def _plain_numeric(plan: DataPlan, name: str) -> ColumnEncoding:
    """The unfitted encoding of a numeric column that ``data.columns`` does not mention."""
    missing, fill, path = plan.policy(name)
    fill = _constant_fill(plan, name, "numeric", fill, path) if missing == "constant" else None
    return ColumnEncoding(name, "numeric", missing, fill)


def _constant_fill(plan: DataPlan, name: str, kind: str, fill, path):
    fill_path = path[:-1] + ("fill",)
    if fill is None:
        raise plan.fail(fill_path, "missing: constant needs a fill value")
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


@dataclass
class Split:
    """Model-ready arrays for one part of the data."""

    features: np.ndarray
    targets: np.ndarray

    def __len__(self):
        return self.features.shape[0]


def read_features(path, schema: DataSchema, *, with_target: bool, dialect: dict | None = None):
    """Read a CSV for eval or predict: scaled features, and encoded targets when asked.

    Labelled data is treated like training data (rows under ``missing: drop`` are skipped);
    predictions never skip a row, so an empty cell there is an error unless it can be filled.
    ``dialect``: see ``DataSchema.open`` (None: the config's, for its validation and test files)."""
    table = schema.open(path, dialect)
    columns = schema.read_columns(table, with_target)
    rows = schema.usable_rows(columns, labelled=with_target)
    features = schema.encode_features(columns, rows)
    if not with_target:
        return features, None
    return features, schema.encode_target(columns, rows)


class CsvTable(CsvFile):
    """A CSV file read by column names (kept for scripts and tests that read plain numbers)."""

    def numeric(self, columns: list[str], role: str = "feature") -> np.ndarray:
        """The named columns as a float32 matrix; a bad or empty cell is a DataError naming line and column."""
        for name in columns:
            self.index(name, role)
        table = self.read(numeric=columns, fixed={name: "only numeric columns are supported here" for name in columns})
        checked_rows(table, [ColumnEncoding(name) for name in columns], [], "error", "labelled")
        return table.matrix

    def text(self, column: str, role: str = "target") -> np.ndarray:
        """One column as stripped strings."""
        self.index(column, role)
        return self.read(text=[column]).text[column]


def stratified_split(raw_labels: np.ndarray | None, n_rows: int, fraction: float, rng):
    """Indices (train, validation); classes keep their proportions when labels are given."""
    if fraction == 0:
        return np.arange(n_rows), np.arange(0)
    if raw_labels is None:
        order = rng.permutation(n_rows)
        n_validation = max(1, int(round(fraction * n_rows)))
        return np.sort(order[n_validation:]), np.sort(order[:n_validation])
    validation = []
    for label in np.unique(raw_labels):
        members = rng.permutation(np.flatnonzero(raw_labels == label))
        validation.append(members[:int(round(fraction * members.size))])
    validation = np.sort(np.concatenate(validation))
    mask = np.ones(n_rows, dtype=bool)
    mask[validation] = False
    return np.flatnonzero(mask), validation
