"""How one CSV column becomes model inputs (``ColumnEncoding``): a stored format of model.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, TypeAlias, get_args

import numpy as np
from pydantic import ConfigDict
from pydantic_core import core_schema

from ..stored import FieldProblem
from .dates import DATE_PARTS, ISO_FORMAT, compile_format, parse_dates

MISSING_POLICIES = get_args(Literal["error", "drop", "mean", "median", "mode", "constant"])
COLUMN_TYPES = get_args(Literal["numeric", "categorical", "boolean", "date"])
if TYPE_CHECKING:  # pydantic checks the choices when stored; code passes checked text
    MissingPolicy: TypeAlias = str
    ColumnType: TypeAlias = str
    UnknownPolicy: TypeAlias = str
else:
    MissingPolicy, ColumnType = Literal[MISSING_POLICIES], Literal[COLUMN_TYPES]
    UnknownPolicy = Literal["error", "ignore"]
_FILLED = ("mean", "median", "mode", "constant")  # policies whose fitted encoding holds a fill
# The keys only some types store: categories for categorical columns, a format and parts for dates.
_OWN_KEYS = {"categories": "categorical", "unknown": "categorical", "format": "date", "parts": "date"}


@dataclass
class ColumnEncoding:
    """How one CSV column becomes model inputs: its type, missing-value fill and categories.

    A plain dataclass, made once per column (a wide file has tens of thousands): the config's
    requests (``columns.column_encodings``) and the fitted ones (``columns.fit_column``). As part
    of a ``DataSchema`` it is a stored format, validated by pydantic from its annotations, and
    checked whole as a fitted encoding must be (``_fitted``)."""

    __pydantic_config__ = ConfigDict(strict=True)

    name: str
    type: ColumnType = "numeric"
    missing: MissingPolicy = "error"
    fill: Any = None  # the value an empty cell takes (fitted for mean, median, mode)
    categories: list[str] = field(default_factory=list)
    unknown: UnknownPolicy = "error"  # categorical: an unseen value is an error, or all zeros
    format: Optional[str] = None  # date: how its cells are written; its fill is ISO text
    parts: list[str] = field(default_factory=list)  # date: the model inputs it becomes (DATE_PARTS)

    @property
    def width(self) -> int:
        if self.type == "date":
            return len(self.parts)
        return len(self.categories) if self.type == "categorical" else 1

    def input_names(self) -> list[str]:
        if self.type == "categorical":
            return [f"{self.name}={category}" for category in self.categories]
        if self.type == "date":
            return [f"{self.name}.{part}" for part in self.parts]
        return [self.name]

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        schema = handler(source)
        schema["strict"] = False  # stored as a mapping; its fields keep their exact types
        return core_schema.no_info_after_validator_function(
            _fitted, schema, serialization=core_schema.wrap_serializer_function_ser_schema(_stored_keys)
        )


def _stored_keys(encoding: ColumnEncoding, handler) -> dict:
    data = handler(encoding)
    for key, kind in _OWN_KEYS.items():
        if encoding.type != kind:
            del data[key]
    return data


def _fitted(encoding: ColumnEncoding) -> ColumnEncoding:
    """A fitted encoding, whole: a fill of the column's kind where its policy needs one,
    categories, a date's format and parts."""
    if encoding.missing in _FILLED and encoding.fill is None:
        raise FieldProblem("fill", f"missing: {encoding.missing} without a fill value")
    if encoding.type == "categorical" and not encoding.categories:
        raise FieldProblem("categories", "a categorical column without categories")
    if encoding.type == "date":
        _check_date(encoding)
    fill = encoding.fill
    fits = {
        "numeric": lambda: isinstance(fill, (int, float)) and not isinstance(fill, bool) and math.isfinite(fill),
        "boolean": lambda: isinstance(fill, bool),
        "categorical": lambda: isinstance(fill, str),
        "date": lambda: isinstance(fill, str),
    }
    if fill is not None and not fits[encoding.type]():
        raise FieldProblem("fill", f"the fill {fill!r} does not suit a {encoding.type} column")
    return encoding


def _check_date(encoding: ColumnEncoding):
    if encoding.format is None:
        raise FieldProblem("format", "a date column without a format")
    try:
        compile_format(encoding.format)
    except ValueError as error:
        raise FieldProblem("format", f"{encoding.format!r}: {error}") from None
    parts = encoding.parts
    if not parts or [part for part in parts if part not in DATE_PARTS] or len(set(parts)) != len(parts):
        raise FieldProblem("parts", f"unknown, repeated or no date parts {parts!r}")
    if isinstance(encoding.fill, str) and not parse_dates(np.array([encoding.fill]), ISO_FORMAT).valid[0]:
        raise FieldProblem("fill", f"the date fill {encoding.fill!r} is not an ISO date")
