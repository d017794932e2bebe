"""The fitted preprocessing, stored in the run folder: CSV columns to model inputs and targets.

Fitted on the training rows only; ``rows.read_features`` applies exactly the same steps to any
CSV at eval or predict time. ``DataSchema`` is the ``data`` part of model.json (a stored format:
see ``stored``), its fields laid out as the file holds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, TypeAlias, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..errors import DataError
from ..stored import FieldProblem, Float32Vector, Float64Vector, Stored
from .cells import MISSING_TOKENS
from .checks import checked_rows
from .columns import (
    KNOWN_SHOWN,
    STATISTICS_ROWS,
    ColumnEncoding,
    boolean_inputs,
    date_inputs,
    fit_column,
    rows_to_front,
)
from .csv import CsvFile
from .dialect import DELIMITERS
from .parsed import Columns
from .plan import label_sort_key
from .rows import read_cells
from .statistics import input_scaling, numeric_fills, present_values, target_scaling
from .targets import class_labels, target_classes

if TYPE_CHECKING:  # pydantic checks the choices when stored; code passes a validated config's text
    ScaleMethod: TypeAlias = str
    Task: TypeAlias = str
    TargetMissing: TypeAlias = str
else:
    ScaleMethod = Literal["standard", "minmax", "none"]
    Task = Literal["classification", "regression"]
    TargetMissing = Literal["error", "drop"]


class Scaler(Stored):
    """The inputs' scaling, fitted on the training rows: each input becomes (x - offset) / divisor."""

    method: ScaleMethod
    offset: Float32Vector
    divisor: Float32Vector

    @model_validator(mode="after")
    def _usable(self):
        if not np.all(np.isfinite(self.offset)):
            raise FieldProblem("offset", "holds NaN or infinite values")
        if not (np.all(np.isfinite(self.divisor)) and np.all(self.divisor != 0)):
            raise FieldProblem("divisor", "holds NaN, infinite or zero values")
        return self


class CsvOptions(Stored):
    """How training read its CSV: eval and predict read files the same way (data.delimiter, …)."""

    delimiter: Optional[str] = None  # None: detected in each file
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    na_values: list[str] = Field(default_factory=list)  # data.na_values: missing-value markers of every column
    column_na_values: dict[str, list[str]] = Field(
        default_factory=dict
    )  # data.columns.X.na_values, features and targets

    @field_validator("delimiter")
    @classmethod
    def _known_delimiter(cls, value):
        if value is not None and value not in DELIMITERS:
            raise ValueError(f"must be one of ',', ';', tab, '|' (got {value!r})")
        return value


class TargetScaler(Stored):
    """Regression targets' scaling (data.target_scale): standard trains on (y - offset) / divisor."""

    method: Literal["none", "standard"] = "none"
    offset: Optional[Float64Vector] = None
    divisor: Optional[Float64Vector] = None

    @model_validator(mode="after")
    def _usable(self):
        if self.method == "none":
            self.offset = self.divisor = None
        elif self.offset is None or self.divisor is None or self.offset.shape != self.divisor.shape:
            raise FieldProblem("offset", "standard scaling needs as many offsets as divisors")
        elif not np.all(np.isfinite(self.offset)):
            raise FieldProblem("offset", "holds NaN or infinite values")
        elif not (np.all(np.isfinite(self.divisor)) and np.all(self.divisor > 0)):
            raise FieldProblem("divisor", "holds NaN or infinite values, or values <= 0")
        return self


def _shorthand(part: str, name: str) -> Any:
    """A read-only attribute for a field of one of the schema's parts (its scaler, csv, target_scaler)."""
    return property(lambda schema: getattr(getattr(schema, part), name))


class DataSchema(Stored):
    """Everything needed to turn a CSV into model inputs and outputs: fitted on train, stored."""

    target: Union[str, list[str]]
    task: Task
    feature_names: list[str]
    class_labels: list[str] = Field(default_factory=list)
    binary: bool = False  # two classes predicted by one sigmoid output
    scaler: Scaler
    columns: list[ColumnEncoding] = Field(default_factory=list)  # one per feature
    target_missing: TargetMissing = "error"  # drop: labelled rows with an empty target are skipped
    csv: CsvOptions = Field(default_factory=CsvOptions)
    target_scaler: TargetScaler = Field(default_factory=TargetScaler)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data):
        """Schemas from before column encodings (every feature numeric) and target scaling (none)."""
        if isinstance(data, dict) and not data.get("columns") and isinstance(data.get("feature_names"), list):
            data = {**data, "columns": [{"name": name} for name in data["feature_names"]]}
        if isinstance(data, dict) and data.get("target_scaler", 0) is None:
            data = {key: value for key, value in data.items() if key != "target_scaler"}
        return data

    @field_validator("target", mode="before")
    @classmethod
    def _named(cls, value):
        if not value or not (
            isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"must be a column name or a list of them (got {value!r})")
        return value

    @model_validator(mode="after")
    def _fits_together(self):
        if [column.name for column in self.columns] != self.feature_names:
            raise FieldProblem("columns", "the column encodings do not match feature_names")
        n_inputs = self.n_inputs
        for name in ("offset", "divisor"):
            if getattr(self.scaler, name).shape != (n_inputs,):
                size = getattr(self.scaler, name).size
                raise FieldProblem(f"scaler.{name}", f"has {size} values for {n_inputs} model inputs")
        if self.task == "classification" and (
            len(self.class_labels) < 2 or (self.binary and len(self.class_labels) != 2)
        ):
            needs = "exactly two (binary)" if self.binary else "two or more"
            raise FieldProblem("class_labels", f"a classifier needs {needs}, not {self.class_labels}")
        if self.target_offset is not None and (
            self.task != "regression" or self.target_offset.shape != (len(self.targets),)
        ):
            raise FieldProblem(
                "target_scaler.offset",
                f"has {self.target_offset.size} values for {len(self.targets)} regression targets",
            )
        return self

    # The stored fields by the short names the code reads (read-only): schema.offset is schema.scaler.offset.
    scale: ClassVar = _shorthand("scaler", "method")
    offset: ClassVar = _shorthand("scaler", "offset")
    divisor: ClassVar = _shorthand("scaler", "divisor")
    delimiter: ClassVar = _shorthand("csv", "delimiter")
    decimal: ClassVar = _shorthand("csv", "decimal")
    encoding: ClassVar = _shorthand("csv", "encoding")
    na_values: ClassVar = _shorthand("csv", "na_values")
    column_na_values: ClassVar = _shorthand("csv", "column_na_values")
    target_scale: ClassVar = _shorthand("target_scaler", "method")
    target_offset: ClassVar = _shorthand("target_scaler", "offset")
    target_divisor: ClassVar = _shorthand("target_scaler", "divisor")

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
        all_rows: np.ndarray | None,
        targets,
        task: str,
        scale: str,
        target_missing: str = "error",
        csv_options: dict | None = None,
        target_scale: str = "none",
    ) -> "DataSchema":
        """Fit fills and scaling on ``train_rows``; categories and class labels on ``all_rows`` (None: every row)."""
        numeric = [encoding.name for encoding in encodings if encoding.type == "numeric"]
        present = present_values(columns, numeric, train_rows, scale) if numeric else None
        fills = numeric_fills(columns, encodings, train_rows, present)
        fitted = [fit_column(columns, encoding, train_rows, all_rows, fills) for encoding in encodings]
        labels = []
        if task == "classification":
            labels = sorted(class_labels(columns, targets[0], all_rows).tolist(), key=label_sort_key)
        offset, divisor = input_scaling(columns, fitted, scale, train_rows, present)
        target_scaler = TargetScaler()
        if task == "regression" and target_scale == "standard":
            target_offset, target_divisor = target_scaling(columns, targets, train_rows)
            target_scaler = TargetScaler(method="standard", offset=target_offset, divisor=target_divisor)
        return cls(
            target=targets[0] if len(targets) == 1 else list(targets),
            task=task,
            feature_names=[column.name for column in fitted],
            class_labels=labels,
            scaler=Scaler(method=scale, offset=offset, divisor=divisor),
            columns=fitted,
            target_missing=target_missing,
            csv=CsvOptions(**(csv_options or {})),
            target_scaler=target_scaler,
        )

    def unscale_targets(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs in the target's own units (the inverse of the target scaling)."""
        if self.target_divisor is None:
            return outputs
        return outputs * self.target_divisor + self.target_offset

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
            matrix = columns.matrix
            if not isinstance(matrix, np.ndarray):  # a store's: the rows read into memory
                features = matrix[slice(None) if rows is None else rows]
            elif rows is None:
                features = matrix
            elif in_place:
                features = rows_to_front(matrix, rows)
            else:
                features = matrix[rows]
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
                features[:, start] = boolean_inputs(columns, column.name, rows, column.fill)
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
        labels, inverse = target_classes(columns, name, rows)  # each distinct label looked up once
        index_of = {label: index for index, label in enumerate(self.class_labels)}
        indices = np.array([index_of.get(label, -1) for label in labels.tolist()], dtype=np.int64)[inverse]
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
        return table.read(**self.column_request(table, with_target))

    def column_request(self, table: CsvFile, with_target: bool) -> dict:
        """What ``CsvFile.read`` is asked for to read ``table`` for eval or predict: the numeric,
        wide (targets) and text columns, and those where text is an error (``fixed``)."""
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
        return {"numeric": numeric, "wide": wide, "text": text, "fixed": fixed}

    def read_cells(self, cells: Mapping[str, Sequence], source: str = "row") -> Columns:
        """The feature columns of ``cells`` ({column: cells}, as from JSON), typed as a CSV's (``rows.read_cells``)."""
        return read_cells(self, cells, source)

    def usable_rows(self, columns: Columns, labelled: bool, whole: bool = True) -> np.ndarray | None:
        """Rows a trained model can use; raises for cells it cannot (None: every row). ``whole``:
        see ``checks.checked_rows`` (False for a chunk of a file, whose rows may all be skipped)."""
        targets = self.targets if labelled else []
        mode = "labelled" if labelled else "predict"
        return checked_rows(columns, self.columns, targets, self.target_missing, mode, whole)
