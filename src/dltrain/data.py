"""CSV files to arrays: column selection, target encoding, scaling fitted on train only, splits.

The numeric body is parsed by NumPy's C parser (``numpy.loadtxt``); only when that fails is
the file scanned again in Python, to name the exact line, column and value at fault.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

MAX_AUTO_CLASSES = 20  # an integer target with at most this many values is taken as classes


@dataclass
class CsvTable:
    """A CSV file's header, read before its body is parsed."""

    path: Path
    header: list[str]

    @classmethod
    def open(cls, path) -> "CsvTable":
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), None)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except OSError as error:
            raise DataError(f"{path}: cannot read ({error.strerror})") from None
        if not header:
            raise DataError(f"{path}: the file is empty; a header row of column names is needed")
        header = [name.strip() for name in header]
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise DataError(f"{path}:1: duplicated column name(s) {', '.join(map(repr, duplicates))}; "
                            "give every column a distinct name")
        return cls(path, header)

    def index(self, column: str, role: str) -> int:
        if column not in self.header:
            raise DataError(f"{self.path}:1: {role} column {column!r} not found; "
                            f"columns are {', '.join(self.header)}")
        return self.header.index(column)

    def numeric(self, columns: list[str], role: str = "feature") -> np.ndarray:
        """The named columns as a float32 matrix; a bad cell is a DataError naming line and column."""
        indices = [self.index(name, role) for name in columns]
        try:
            matrix = np.loadtxt(self.path, delimiter=",", skiprows=1, usecols=indices, dtype=np.float32,
                                ndmin=2, encoding="utf-8-sig", quotechar='"', comments=None)
        except ValueError:
            self._raise_first_bad_cell(indices, numeric=True)
            raise
        if matrix.shape[0] == 0:
            raise DataError(f"{self.path}: the file has a header but no data rows")
        if not np.isfinite(matrix).all():
            row, column = np.argwhere(~np.isfinite(matrix))[0]
            self._raise_first_bad_cell([indices[column]], numeric=True, finite=True)
        return matrix

    def text(self, column: str, role: str) -> np.ndarray:
        """One column as stripped strings."""
        index = self.index(column, role)
        try:
            values = np.loadtxt(self.path, delimiter=",", skiprows=1, usecols=[index], dtype=str,
                                ndmin=1, encoding="utf-8-sig", quotechar='"', comments=None)
        except ValueError:
            self._raise_first_bad_cell([index], numeric=False)
            raise
        values = np.char.strip(values)
        if values.shape[0] == 0:
            raise DataError(f"{self.path}: the file has a header but no data rows")
        empty = np.flatnonzero(values == "")
        if empty.size:
            self._raise_first_bad_cell([index], numeric=False)
        return values

    def _raise_first_bad_cell(self, indices, numeric, finite=False):
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row in reader:
                line = reader.line_num
                if not row or row == [""]:
                    continue
                if len(row) != len(self.header):
                    raise DataError(f"{self.path}:{line}: row has {len(row)} fields but the header has "
                                    f"{len(self.header)}; fix the row or its quoting")
                for index in indices:
                    cell = row[index].strip()
                    name = self.header[index]
                    if cell == "":
                        raise DataError(f"{self.path}:{line}: column {name!r} is empty (a missing value); "
                                        "fill it in or remove the row")
                    if numeric:
                        try:
                            value = float(cell)
                        except ValueError:
                            raise DataError(f"{self.path}:{line}: column {name!r} has {cell!r}, which is not "
                                            "a number; only numeric feature columns are supported") from None
                        if finite and not math.isfinite(value):
                            raise DataError(f"{self.path}:{line}: column {name!r} has {cell!r}; "
                                            "features must be finite numbers")


def canonical_label(value: str) -> str:
    """One spelling per class label, so '1', '1.0' and ' 1' are the same class."""
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return value


def _label_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def infer_task(raw_target: np.ndarray) -> str:
    """'classification' for text or few distinct integers, else 'regression'."""
    try:
        values = raw_target.astype(np.float64)
    except ValueError:
        return "classification"
    integral = np.all(np.isfinite(values)) and np.all(values == np.round(values))
    return "classification" if integral and np.unique(values).size <= MAX_AUTO_CLASSES else "regression"


@dataclass
class DataSchema:
    """Everything needed to turn a CSV into model inputs and outputs: fitted on train, stored."""

    feature_names: list[str]
    target: str
    task: str
    scale: str
    offset: np.ndarray
    divisor: np.ndarray
    class_labels: list[str] = field(default_factory=list)
    binary: bool = False  # two classes predicted by one sigmoid output

    @classmethod
    def fit(cls, features: np.ndarray, raw_target: np.ndarray, feature_names, target, task, scale):
        """Fit scaling statistics (on the training rows only) and the class label order."""
        if scale == "standard":
            offset = features.mean(axis=0, dtype=np.float64)
            divisor = features.std(axis=0, dtype=np.float64)
        elif scale == "minmax":
            offset = features.min(axis=0).astype(np.float64)
            divisor = features.max(axis=0).astype(np.float64) - offset
        else:
            offset = np.zeros(features.shape[1])
            divisor = np.ones(features.shape[1])
        divisor[divisor == 0] = 1.0  # a constant column becomes 0, never NaN
        labels = []
        if task == "classification":
            labels = sorted({canonical_label(value) for value in raw_target.tolist()}, key=_label_sort_key)
        return cls(list(feature_names), target, task, scale, offset.astype(np.float32),
                   divisor.astype(np.float32), labels)

    @property
    def n_outputs(self) -> int:
        if self.task == "regression":
            return 1
        return 1 if self.binary else len(self.class_labels)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale features in place with the training statistics."""
        features -= self.offset
        features /= self.divisor
        return features

    def encode_target(self, raw_target: np.ndarray, path) -> np.ndarray:
        """Class indices (int64), 0/1 column (binary) or float32 column (regression)."""
        if self.task == "regression":
            try:
                return raw_target.astype(np.float32).reshape(-1, 1)
            except ValueError:
                bad = next(i for i, value in enumerate(raw_target) if not _is_number(value))
                raise DataError(f"{path}:{bad + 2}: target {self.target!r} has {raw_target[bad]!r}, "
                                "which is not a number; a regression target must be numeric") from None
        index_of = {label: index for index, label in enumerate(self.class_labels)}
        labels = [canonical_label(value) for value in raw_target.tolist()]
        try:
            indices = np.fromiter((index_of[label] for label in labels), dtype=np.int64, count=len(labels))
        except KeyError as error:
            line = labels.index(error.args[0]) + 2
            raise DataError(f"{path}:{line}: target {self.target!r} has class {error.args[0]!r}, which "
                            f"training never saw; known classes: {', '.join(self.class_labels)}") from None
        if self.binary:
            return indices.astype(np.float32).reshape(-1, 1)
        return indices

    def to_dict(self) -> dict:
        return {
            "target": self.target, "task": self.task, "feature_names": self.feature_names,
            "class_labels": self.class_labels, "binary": self.binary,
            "scaler": {"method": self.scale, "offset": self.offset.tolist(), "divisor": self.divisor.tolist()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DataSchema":
        scaler = data["scaler"]
        return cls(list(data["feature_names"]), data["target"], data["task"], scaler["method"],
                   np.asarray(scaler["offset"], dtype=np.float32), np.asarray(scaler["divisor"], dtype=np.float32),
                   list(data["class_labels"]), bool(data["binary"]))


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class Split:
    """Model-ready arrays for one part of the data."""

    features: np.ndarray
    targets: np.ndarray

    def __len__(self):
        return self.features.shape[0]


def read_features(path, schema: DataSchema, *, with_target: bool):
    """Read a CSV for eval or predict: scaled features, and encoded targets when asked."""
    table = CsvTable.open(path)
    features = schema.transform(table.numeric(schema.feature_names))
    if not with_target:
        return features, None
    raw_target = table.text(schema.target, "target")
    return features, schema.encode_target(raw_target, path)


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
