"""The config's ``data:`` section: the files, the target and features, the CSV dialect, missing
values, and each column's settings under ``data.columns``."""

from __future__ import annotations

import datetime
import math
from typing import Literal, Optional, Union

from pydantic import field_validator, model_serializer, model_validator

from ..files import text_codec
from ..labels import canonical_label
from .base import Spec

MissingPolicy = Literal["error", "drop", "mean", "median", "mode", "constant"]
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _check_fill(missing, fill):
    """``fill`` belongs with ``missing: constant``, and that policy needs it."""
    if missing == "constant" and fill is None:
        raise ValueError("missing: constant needs fill, e.g. fill: 0")
    if fill is not None and missing != "constant":
        raise ValueError("fill is used only with missing: constant")


def _fill_value(value):
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()  # a date fill
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError("must be a number, text, or true/false")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number, text, or true/false")
    return value


def _na_values(value):
    """Markers of a missing value: text (numbers are taken as written, e.g. -999)."""
    if value is None:
        return value
    if not isinstance(value, list):
        raise ValueError('must be a list of cell texts that mean "missing", e.g. ["?", "-"]')
    markers = []
    for item in value:
        if isinstance(item, dict):
            raise ValueError('lists a mapping (YAML reads an unquoted ? that way); quote each marker: ["?"]')
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(
                f"lists {item!r}; give each marker as quoted text, as it is written in the CSV "
                '(e.g. "?", "-", "n.a.", "-999")'
            )
        marker = (canonical_label(item) if isinstance(item, (int, float)) else item).strip()
        if not marker:
            raise ValueError("lists an empty marker; empty cells are always missing, leave it out")
        markers.append(marker)
    return list(dict.fromkeys(markers))


def _column_names(value, what):
    if not isinstance(value, list):
        return value
    duplicates = sorted({name for name in value if value.count(name) > 1}, key=str)
    if duplicates:
        raise ValueError(f"lists {duplicates[0]!r} twice; {what}")
    return value


class ColumnSpec(Spec):
    """One column's settings under ``data.columns``."""

    type: Optional[Literal["numeric", "categorical", "boolean", "date"]] = None  # None: inferred from the cells
    missing: Optional[MissingPolicy] = None  # None: data.missing
    fill: Optional[Union[bool, float, str]] = None  # the value for missing: constant
    unknown: Literal["error", "ignore"] = "error"  # categorical: an unseen value
    format: Optional[str] = None  # dates: e.g. "%d/%m/%Y" (None: detected for year-first dates)
    na_values: Optional[list[str]] = None  # cells that mean "missing" here, beside data.na_values

    @field_validator("fill", mode="before")
    @classmethod
    def _scalar_fill(cls, value):
        return _fill_value(value)

    @field_validator("na_values", mode="before")
    @classmethod
    def _markers(cls, value):
        return _na_values(value)

    @model_validator(mode="after")
    def _fill_goes_with_constant(self):
        _check_fill(self.missing, self.fill)
        if self.format is not None and self.type not in (None, "date"):
            raise ValueError(f"format is for date columns (type: date), and this column is {self.type}")
        return self

    @model_serializer(mode="wrap")
    def _only_settings_given(self, handler):
        # A dumped column lists what it sets, e.g. {missing: median}, and still loads back equal.
        data = handler(self)
        return {
            key: value
            for key, value in data.items()
            if value is not None and not (key == "unknown" and value == "error")
        }


class DataSpec(Spec):
    train: str
    target: Union[str, list[str]]
    features: Optional[list[str]] = None
    exclude: list[str] = []
    validation: Union[float, str] = 0.2
    test: Optional[str] = None
    scale: Literal["standard", "minmax", "none"] = "standard"
    target_scale: Literal["standard", "none"] = "standard"  # regression targets only
    delimiter: Optional[Literal[",", ";", "\t", "|"]] = None  # None: detected in each file
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    missing: MissingPolicy = "error"
    fill: Optional[Union[bool, float, str]] = None
    na_values: list[str] = []  # cells that mean "missing" in every column, beside empty, NA, null, ...
    columns: dict[str, ColumnSpec] = {}
    cache: bool = True
    # Batches from the on-disk store (true), from memory (false), or auto: the store for large data.
    store: Union[bool, Literal["auto"]] = "auto"
    shuffle: Literal["auto", "rows", "blocks"] = "auto"  # the store's shuffle: exact by row, or by blocks

    @field_validator("train", "test", "validation", mode="after")
    @classmethod
    def _usable_path(cls, value):
        if isinstance(value, str) and ("\x00" in value or not value.strip()):
            raise ValueError("must be a file path (not empty, no NUL character)")
        return value

    @field_validator("validation", mode="before")
    @classmethod
    def _fraction_or_path(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("must be a fraction between 0 and 1, or a CSV path")
        if isinstance(value, (int, float)) and not 0 <= value < 1:
            raise ValueError("must be a fraction >= 0 and < 1, or a CSV path")
        return value

    @field_validator("target", mode="before")
    @classmethod
    def _column_or_columns(cls, value):
        if isinstance(value, list):
            if not value or not all(isinstance(name, str) and name for name in value):
                raise ValueError("must be a column name, or a non-empty list of numeric column names")
            return _column_names(value, "name each target once")
        if not isinstance(value, str) or not value:
            raise ValueError("must be a column name, or a list of numeric column names")
        return value

    @field_validator("features", "exclude", mode="after")
    @classmethod
    def _distinct(cls, value):
        return _column_names(value, "name each column once")

    @field_validator("delimiter", mode="before")
    @classmethod
    def _delimiter_alias(cls, value):
        value = DELIMITER_ALIASES.get(value, value) if isinstance(value, str) else value
        if value not in (None, ",", ";", "\t", "|"):
            raise ValueError("must be ',', ';', tab (\"\\t\") or '|', or null to detect it")
        return value

    @field_validator("encoding", mode="after")
    @classmethod
    def _known_encoding(cls, value):
        text_codec(value)  # ValueError, reported at the key, for a name that is not a text encoding
        return value

    @field_validator("fill", mode="before")
    @classmethod
    def _scalar_fill(cls, value):
        return _fill_value(value)

    @field_validator("na_values", mode="before")
    @classmethod
    def _markers(cls, value):
        return [] if value is None else _na_values(value)

    @model_validator(mode="after")
    def _consistent(self):
        _check_fill(self.missing, self.fill)
        if self.delimiter is not None and self.delimiter == self.decimal:
            raise ValueError("delimiter and decimal are both ','; a decimal comma needs delimiter ';'")
        return self
