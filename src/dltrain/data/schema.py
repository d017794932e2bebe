"""The fitted preprocessing, stored in the run folder: CSV columns to model inputs and targets.

Fitted on the training rows only; ``read_features`` applies exactly the same steps to any CSV
at eval or predict time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, did_you_mean
from .columns import (
    KNOWN_SHOWN,
    STATISTICS_ROWS,
    ColumnEncoding,
    boolean_values,
    checked_rows,
    date_inputs,
    fit_column,
    rows_to_front,
)
from .csv import (
    DELIMITERS,
    FLOAT32_MAX,
    MISSING_TOKENS,
    Columns,
    CsvFile,
    listed,
    numeric_markers,
    refuse_beyond_float32,
    to_numbers,
    to_text,
)
from .plan import label_sort_key, target_labels


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
    columns: list = field(default_factory=list)  # one ColumnEncoding per feature
    target_missing: str = "error"  # drop: labelled rows with an empty target are skipped
    delimiter: str | None = None  # None: detected in each file
    decimal: str = "."
    encoding: str = "utf-8"
    target_scale: str = "none"  # regression: standard trains on (y - offset) / divisor
    target_offset: np.ndarray | None = None
    target_divisor: np.ndarray | None = None
    na_values: list = field(default_factory=list)  # data.na_values: missing-value markers of every column
    column_na_values: dict = field(default_factory=dict)  # data.columns.X.na_values, features and targets

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
    def fit(
        cls,
        columns: Columns,
        encodings: list,
        train_rows: np.ndarray,
        all_rows: np.ndarray,
        targets,
        task: str,
        scale: str,
        target_missing: str = "error",
        csv_options: dict | None = None,
        target_scale: str = "none",
    ) -> "DataSchema":
        """Fit fills and scaling on ``train_rows``; categories and class labels on ``all_rows``."""
        fitted = [fit_column(columns, encoding, train_rows, all_rows) for encoding in encodings]
        labels = []
        if task == "classification":
            name = targets[0]
            raw = columns.text[name] if name in columns.text else columns.numbers(name)
            labels = sorted(set(target_labels(np.unique(raw[all_rows])).tolist()), key=label_sort_key)
        width = sum(column.width for column in fitted)
        schema = cls(
            [column.name for column in fitted],
            targets[0] if len(targets) == 1 else list(targets),
            task,
            scale,
            np.zeros(width, dtype=np.float32),
            np.ones(width, dtype=np.float32),
            labels,
            columns=fitted,
            target_missing=target_missing,
            **(csv_options or {}),
        )
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
        for start, column in zip(starts, self.columns):
            if column.type == "date":  # a few inputs per column, computed from its parsed cells
                values = date_inputs(columns, column, train_rows).astype(np.float64)
                where = slice(start, start + column.width)
                if self.scale == "standard":
                    self._store_statistics(where, values.mean(axis=0), values.std(axis=0))
                else:
                    low = values.min(axis=0)
                    self._store_statistics(where, low, values.max(axis=0) - low)
        numeric = [(start, column) for start, column in zip(starts, self.columns) if column.type == "numeric"]
        if not numeric:
            return
        inputs = np.array([start for start, _ in numeric])
        positions = columns.numeric_positions([column.name for _, column in numeric])
        fills = np.array([np.nan if column.fill is None else column.fill for _, column in numeric], dtype=np.float32)
        every_column = positions == list(range(columns.matrix.shape[1]))
        any_fill = bool(np.any(~np.isnan(fills)))

        def blocks():
            for begin in range(0, len(train_rows), STATISTICS_ROWS):
                chunk = train_rows[begin : begin + STATISTICS_ROWS]
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
        self._store_statistics(inputs, offset, divisor)

    def _store_statistics(self, inputs, offset: np.ndarray, divisor: np.ndarray):
        divisor = np.array(divisor, dtype=np.float64)
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
                values = np.where(missing, np.float32(column.fill), values)  # type: ignore[arg-type]  # a number
        return values

    def encode_features(self, columns: Columns, rows: np.ndarray | None = None, in_place: bool = False) -> np.ndarray:
        """Scaled float32 model inputs for ``rows`` (all when None) of checked columns.

        When every feature is numeric, the reader's matrix already is the model input. With
        ``in_place`` the chosen (ascending) rows are moved to its front instead of copied, so
        a training split costs no second matrix; the columns are then spent."""
        plain = all(column.type == "numeric" for column in self.columns) and columns.numeric_names == self.feature_names
        if plain:
            if rows is None:
                features = columns.matrix
            elif in_place:
                features = rows_to_front(columns.matrix, rows)
            else:
                features = columns.matrix[rows]
            fills = np.array([np.nan if column.fill is None else column.fill for column in self.columns], np.float32)
            filled = ~np.isnan(fills)
            if filled.any():  # a block of rows at a time: one pass, not one strided pass per column
                for begin in range(0, len(features), STATISTICS_ROWS):
                    block = features[begin : begin + STATISTICS_ROWS]
                    np.copyto(block, fills, where=np.isnan(block) & filled)
            return self.transform(features)
        n_rows = columns.n_rows if rows is None else len(rows)
        features = np.zeros((n_rows, self.n_inputs), dtype=np.float32)
        from_matrix = self._numeric_from_matrix(columns, rows, features)
        start = 0
        for column in self.columns:
            if column.type == "numeric":
                if column.name not in from_matrix:
                    features[:, start] = self._numeric_input(columns, column, rows)
            elif column.type == "date":
                features[:, start : start + column.width] = date_inputs(columns, column, rows)
            elif column.type == "boolean":
                values = columns.text[column.name] if rows is None else columns.text[column.name][rows]
                if column.fill is not None:
                    values = np.where(values == "", "true" if column.fill else "false", values)
                features[:, start] = boolean_values(values)[0]
            else:
                self._one_hot(columns, column, rows, features[:, start : start + column.width])
            start += column.width
        return self.transform(features)

    def _numeric_from_matrix(self, columns: Columns, rows, features: np.ndarray) -> set:
        """Copy the numeric features held in the reader's matrix into ``features`` (missing cells
        filled), a block of rows at a time: one pass over the rows, not one per column. Returns
        their names."""
        chosen = [
            (start, column)
            for start, column in zip(np.cumsum([0] + [column.width for column in self.columns]), self.columns)
            if column.type == "numeric" and columns.is_numeric(column.name)
        ]
        if not chosen:
            return set()
        inputs = [int(start) for start, _ in chosen]
        positions = columns.numeric_positions([column.name for _, column in chosen])
        fills = np.array([np.nan if column.fill is None else column.fill for _, column in chosen], dtype=np.float32)
        # Runs of features that sit side by side in both matrices are copied as slices.
        runs, first = [], 0
        for index in range(1, len(chosen) + 1):
            if (
                index == len(chosen)
                or inputs[index] != inputs[index - 1] + 1
                or positions[index] != positions[index - 1] + 1
            ):
                runs.append(
                    (
                        slice(inputs[first], inputs[index - 1] + 1),
                        slice(positions[first], positions[index - 1] + 1),
                        fills[first:index],
                    )
                )
                first = index
        for begin in range(0, len(features), STATISTICS_ROWS):
            stop = min(begin + STATISTICS_ROWS, len(features))
            block = columns.matrix[begin:stop] if rows is None else columns.matrix[rows[begin:stop]]
            for target, source, run_fills in runs:
                out = features[begin:stop, target]
                out[...] = block[:, source]
                if not np.isnan(run_fills).all():
                    np.copyto(out, run_fills, where=np.isnan(out) & ~np.isnan(run_fills))
        return {column.name for _, column in chosen}

    def _one_hot(self, columns: Columns, column: ColumnEncoding, rows, out: np.ndarray):
        if column.name in columns.categories:
            self._one_hot_codes(columns, column, rows, out)
            return
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
            self._unseen(columns, column, bad if rows is None else int(rows[bad]), str(values[bad]))
        hit = np.flatnonzero(known)
        out[hit, order[positions[hit]]] = 1.0

    def _one_hot_codes(self, columns: Columns, column: ColumnEncoding, rows, out: np.ndarray):
        """``_one_hot`` for a column the fast reader gave as codes: each distinct word looked up once."""
        codes, words = columns.categories[column.name]
        codes = codes if rows is None else codes[rows]
        index_of = {category: index for index, category in enumerate(column.categories)}
        fill = None if column.fill is None else str(column.fill)
        lookup = [index_of.get(fill if word == "" and fill is not None else word, -1) for word in words.tolist()]
        index = np.array(lookup, dtype=np.intp)[codes]
        known = index >= 0
        if not known.all() and column.unknown == "error":
            bad = int(np.flatnonzero(~known)[0])
            self._unseen(columns, column, bad if rows is None else int(rows[bad]), str(words[codes[bad]]))
        hit = np.flatnonzero(known)
        out[hit, index[hit]] = 1.0

    def _unseen(self, columns: Columns, column: ColumnEncoding, row: int, word: str):
        shown = ", ".join(column.categories[:KNOWN_SHOWN])
        shown += " …" if len(column.categories) > KNOWN_SHOWN else ""
        raise DataError(
            f"{columns.path}:{columns.line(row)}: column {column.name!r} has {word!r}, "
            f"which training never saw; known values: {shown} (to encode unseen values as all zeros, "
            f"set data.columns.{column.name}.unknown: ignore in the config and train again)"
        )

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
        distinct, inverse = np.unique(raw, return_inverse=True)  # each distinct value looked up once
        labels = target_labels(distinct)
        index_of = {label: index for index, label in enumerate(self.class_labels)}
        indices = np.array([index_of.get(label, -1) for label in labels.tolist()], dtype=np.int64)[inverse.reshape(-1)]
        if (indices < 0).any():
            bad = int(np.flatnonzero(indices < 0)[0])
            row = bad if rows is None else int(rows[bad])
            raise DataError(
                f"{columns.path}:{columns.line(row)}: target {name!r} has class {str(labels[inverse[bad]])!r}, "
                f"which training never saw; known classes: {', '.join(self.class_labels)}"
            )
        if self.binary:
            return indices.astype(np.float32).reshape(-1, 1)
        return indices

    def missing_tokens(self, name: str | None = None) -> list[str]:
        """Every cell text (after stripping spaces) that is a missing value in column ``name`` (None: any column)."""
        own = self.column_na_values.get(name, ()) if name is not None else ()
        return sorted(MISSING_TOKENS | set(self.na_values) | set(own))

    # ------------------------------------------------------------ reading a CSV like training did

    def open(self, path, dialect: dict | None = None, content: bytes | None = None) -> CsvFile:
        """Open a CSV as training did (the config's delimiter and encoding), or with ``dialect``.

        ``dialect`` ({"delimiter", "encoding"}, None values meaning detect and UTF-8) is for
        files from elsewhere, at eval and predict: the dialect belongs to each file, not to the
        model. The decimal mark stays the model's, unless the file is comma-separated.
        ``content``: the CSV's bytes (a request's body), ``path`` then naming it in messages."""
        if dialect is None:
            table = CsvFile.open(path, self.delimiter, self.encoding, self.decimal, content=content)
        else:
            table = CsvFile.open(
                path,
                dialect.get("delimiter"),
                dialect.get("encoding") or "utf-8",
                self.decimal,
                encoding_setting=dialect.get("encoding_setting", "--encoding"),  # what a message tells to set
                content=content,
            )
            if table.delimiter == ",":
                table.decimal = "."
        table.set_na_values(self.na_values, self.column_na_values)  # the markers belong to the model's data
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

    def read_cells(self, cells: Mapping[str, Sequence], source: str = "row") -> Columns:
        """The feature columns of ``cells`` ({column: cells}, as from JSON), typed as ``read_columns``
        types a CSV's: a cell is a number, a text, a boolean or None, and is read as the same text
        in a CSV file would be (None, NaN and the missing-value tokens are empty cells). Rows are
        numbered from 0 in messages, which start ``{source}:{row}:``; extra columns are ignored."""
        where = Path(source)
        for name in self.feature_names:
            if name not in cells:
                raise DataError(
                    f"{where}: feature column {name!r} not found{did_you_mean(name, list(cells))}; "
                    f"the model needs {listed(self.feature_names)}"
                )
        lengths = {name: len(cells[name]) for name in self.feature_names}
        n_rows = lengths[self.feature_names[0]]
        if n_rows == 0 or any(length != n_rows for length in lengths.values()):
            other = next((name for name, length in lengths.items() if length != n_rows), None)
            raise DataError(
                f"{where}: no rows to predict; give each column a list of cells"
                if other is None
                else f"{where}: column {self.feature_names[0]!r} has {n_rows} cells and {other!r} "
                f"{lengths[other]}; give every column one cell per row"
            )
        numeric = [column.name for column in self.columns if column.type == "numeric"]
        lines = np.arange(n_rows)
        matrix = np.empty((n_rows, len(numeric)), dtype=np.float64)
        for position, name in enumerate(numeric):
            matrix[:, position] = _cell_numbers(cells[name], where, name, frozenset(self.missing_tokens(name)))
        refuse_beyond_float32(where, matrix, lines, numeric)
        text = {
            column.name: to_text(
                [_cell_text(value, where, column.name, row) for row, value in enumerate(cells[column.name])],
                frozenset(self.missing_tokens(column.name)),
            )
            for column in self.columns
            if column.type != "numeric"
        }
        return Columns(where, lines, numeric, matrix.astype(np.float32), {}, text)

    def usable_rows(self, columns: Columns, labelled: bool) -> np.ndarray | None:
        """Rows a trained model can use; raises for cells it cannot (None: every row)."""
        targets = self.targets if labelled else []
        return checked_rows(columns, self.columns, targets, self.target_missing, "labelled" if labelled else "predict")

    # ------------------------------------------------------------ stored form

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "task": self.task,
            "feature_names": self.feature_names,
            "class_labels": self.class_labels,
            "binary": self.binary,
            "scaler": {"method": self.scale, "offset": self.offset.tolist(), "divisor": self.divisor.tolist()},
            "columns": [column.to_dict() for column in self.columns],
            "target_missing": self.target_missing,
            "csv": {
                "delimiter": self.delimiter,
                "decimal": self.decimal,
                "encoding": self.encoding,
                "na_values": list(self.na_values),
                "column_na_values": {name: list(values) for name, values in self.column_na_values.items()},
            },
            "target_scaler": {
                "method": self.target_scale,
                "offset": None if self.target_offset is None else self.target_offset.tolist(),
                "divisor": None if self.target_divisor is None else self.target_divisor.tolist(),
            },
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
        if (
            not isinstance(csv_options, dict)
            or not isinstance(scaler, dict)
            or not isinstance(data["class_labels"], list)
        ):
            raise ValueError("csv, scaler and class_labels must be a mapping, a mapping and a list")
        schema = cls(
            feature_names=feature_names,
            target=target,
            task=data["task"],
            scale=scaler["method"],
            offset=np.asarray(scaler["offset"], dtype=np.float32),
            divisor=np.asarray(scaler["divisor"], dtype=np.float32),
            class_labels=[str(label) for label in data["class_labels"]],
            binary=bool(data["binary"]),
            columns=columns,
            target_missing=data.get("target_missing", "error"),
            delimiter=csv_options.get("delimiter"),
            decimal=csv_options.get("decimal", "."),
            encoding=csv_options.get("encoding", "utf-8"),
            na_values=_markers(csv_options.get("na_values", [])),
            column_na_values=_column_markers(csv_options.get("column_na_values", {})),
        )
        if schema.task not in ("classification", "regression") or schema.scale not in ("standard", "minmax", "none"):
            raise ValueError(f"unknown task {schema.task!r} or scaling {schema.scale!r}")
        if schema.offset.shape != (schema.n_inputs,) or schema.divisor.shape != (schema.n_inputs,):
            raise ValueError(
                f"the scaler has {schema.offset.size} offsets and {schema.divisor.size} divisors "
                f"for {schema.n_inputs} inputs"
            )
        if not (
            np.all(np.isfinite(schema.offset)) and np.all(np.isfinite(schema.divisor)) and np.all(schema.divisor != 0)
        ):
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
                raise ValueError(
                    f"the target scaler has {offset.size} offsets and {divisor.size} divisors "
                    f"for {len(schema.targets)} regression targets"
                )
            if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(divisor)) and np.all(divisor > 0)):
                raise ValueError("the target scaler holds non-finite values or a divisor <= 0")
            schema.target_scale, schema.target_offset, schema.target_divisor = "standard", offset, divisor
        elif target_scaler["method"] != "none":
            raise ValueError(f"unknown target scaling {target_scaler['method']!r}")
        return schema


def _cell_text(value, where: Path, name: str, row: int) -> str:
    """A JSON cell as the text a CSV would hold: None and NaN are empty, true is "true", 3 is "3"."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + " …"
    raise DataError(
        f"{where}:{row}: column {name!r} has {shown}, a {type(value).__name__}; a cell is a number, "
        "a text, true/false or null"
    )


_NUMBER_TYPES = {int, float, type(None)}


def _cell_numbers(values: Sequence, where: Path, name: str, tokens: frozenset = MISSING_TOKENS) -> np.ndarray:
    """A numeric column's cells as float64 (NaN: missing, or a marker in ``tokens``); text that is not a
    number names its row."""
    markers = numeric_markers(tokens)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        numbers = values.astype(np.float64).reshape(-1)
        numbers[np.isin(numbers, markers)] = np.nan
        return numbers
    if set(map(type, values)) <= _NUMBER_TYPES:  # map and set at C speed: no Python loop per cell
        try:
            numbers = np.array(values, dtype=np.float64).reshape(-1)  # None becomes NaN
            numbers[np.isin(numbers, markers)] = np.nan
            return numbers
        except OverflowError:  # an integer beyond float64: read as text, like a CSV's
            pass
    texts = [_cell_text(value, where, name, row) for row, value in enumerate(values)]
    numbers, bad = to_numbers(texts, ".", tokens)
    numbers[np.isin(numbers, markers)] = np.nan
    if bad is not None:
        raise DataError(
            f"{where}:{bad}: column {name!r} has {texts[bad].strip()!r}, which is not a number; "
            "the model was trained on numbers in this column"
        )
    return numbers


@dataclass
class FeatureRows:
    """Model inputs read from a CSV for eval or predict, and the CSV line of each row."""

    path: Path
    lines: np.ndarray
    features: np.ndarray
    targets: np.ndarray | None

    def refuse_non_finite(self, schema: DataSchema, outputs: np.ndarray) -> None:
        """A row whose model outputs (in the units shown) are not finite float32 numbers is an
        error naming its line and its input farthest from 0 once scaled: finite inputs can
        still overflow inside the network, and a label beside NaN probabilities, or a metric
        over them, would be a wrong answer given as a right one."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(outputs) <= FLOAT32_MAX).reshape(len(outputs), -1).all(axis=1)
        if not bad.any():
            return
        row = int(np.flatnonzero(bad)[0])
        scaled = self.features[row].astype(np.float64)
        position = int(np.argmax(np.abs(scaled)))
        raw = scaled[position] * float(schema.divisor[position]) + float(schema.offset[position])
        raise DataError(
            f"{self.path}:{int(self.lines[row])}: the model's output for this row is not a number: it "
            f"overflows inside the network. The input farthest from 0 once scaled is "
            f"{schema.input_names[position]!r} = {raw:.6g} (scaled: {scaled[position]:.3g}); correct or "
            "remove the value"
        )


@dataclass
class LabelledRows(FeatureRows):
    """A labelled CSV read as training data is: the usable rows' inputs and targets, and what the
    ``missing: drop`` policies skipped (a target's or a feature's empty cell)."""

    rows_read: int
    rows_skipped: int
    skipped_for_target: int  # of the skipped rows, those whose target cell is empty
    first_skipped_lines: list  # the first few skipped rows' lines in the file

    SHOWN_LINES = 10


def _encoded_features(schema: DataSchema, columns: Columns, rows) -> np.ndarray:
    """``encode_features``, where a number that fits float32 but not once scaled (3e38 over a
    divisor below 1) is an error naming its cell, instead of an input of inf that the model
    would turn into NaN."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, by cell
        features = schema.encode_features(columns, rows)
    finite = np.isfinite(features)
    if finite.all():
        return features
    row, position = (int(index) for index in np.argwhere(~finite)[0])
    offset, divisor = float(schema.offset[position]), float(schema.divisor[position])
    source = row if rows is None else int(rows[row])
    # The cell itself may be scaled in place by now; what passes the limit is known.
    raise DataError(
        f"{columns.path}:{columns.line(source)}: column {schema.input_names[position]!r} has a number too "
        f"large for this model (beyond about ±{FLOAT32_MAX * divisor:.3g}): scaled with the training "
        f"statistics, (x - {offset:.6g}) / {divisor:.6g}, it passes float32's largest number "
        f"({FLOAT32_MAX:.3g}); correct or remove the value"
    )


def read_labelled(path, schema: DataSchema, dialect: dict | None = None, content: bytes | None = None) -> LabelledRows:
    """Read a labelled CSV (eval, a validation or test file): see ``read_features``, and say which
    rows were skipped."""
    table = schema.open(path, dialect, content)
    columns = schema.read_columns(table, with_target=True)
    rows = schema.usable_rows(columns, labelled=True)
    skipped = np.zeros(columns.n_rows, dtype=bool)
    if rows is not None:
        skipped[:] = True
        skipped[rows] = False
    empty_target = np.zeros(columns.n_rows, dtype=bool)
    for name in schema.targets:
        empty_target |= columns.text[name] == "" if name in columns.text else np.isnan(columns.numbers(name))
    skipped_rows = np.flatnonzero(skipped)
    return LabelledRows(
        columns.path,
        columns.lines if rows is None else columns.lines[rows],
        _encoded_features(schema, columns, rows),
        schema.encode_target(columns, rows),
        columns.n_rows,
        len(skipped_rows),
        int(empty_target[skipped_rows].sum()),
        [columns.line(row) for row in skipped_rows[: LabelledRows.SHOWN_LINES]],
    )


def read_rows(path, schema: DataSchema, dialect: dict | None = None, content: bytes | None = None) -> FeatureRows:
    """Read a CSV for predict: one row of scaled inputs per row of the file, even an empty one
    (filled where the model fills, else an error naming the line), with the rows' lines."""
    table = schema.open(path, dialect, content)
    table.keep_empty_rows = True
    columns = schema.read_columns(table, with_target=False)
    features = _encoded_features(schema, columns, schema.usable_rows(columns, labelled=False))
    return FeatureRows(columns.path, columns.lines, features, None)


def _markers(values) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise ValueError(f"na_values must be a list of text markers, not {values!r}")
    return list(values)


def _column_markers(values) -> dict:
    if not isinstance(values, dict):
        raise ValueError(f"column_na_values must map column names to lists of markers, not {values!r}")
    return {str(name): _markers(markers) for name, markers in values.items()}


def read_features(
    path, schema: DataSchema, *, with_target: bool, dialect: dict | None = None, content: bytes | None = None
):
    """Read a CSV for eval or predict: scaled features, and encoded targets when asked.

    Labelled data is treated like training data (rows under ``missing: drop`` are skipped);
    predictions never skip a row, so an empty cell there is an error unless it can be filled.
    ``dialect``, ``content``: see ``DataSchema.open`` (None: the config's, for its validation and test files)."""
    read = read_labelled(path, schema, dialect, content) if with_target else read_rows(path, schema, dialect, content)
    return read.features, read.targets
