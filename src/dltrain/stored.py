"""The files dltrain writes and reads back, as pydantic models, and the one way they are read.

``model.json`` (``run_folder.RunManifest``, holding the data schema ``data.DataSchema`` and its
column encodings ``data.ColumnEncoding``) and the metadata of ``checkpoint.npz``
(``checkpoints.CheckpointMeta``) are each a ``Stored`` model: ``to_dict`` is its dump,
``from_dict`` its validation, and ``mode="before"`` validators upgrade what older versions wrote,
so old run folders keep loading. A file that does not fit its model (damaged, edited by hand,
or written by another program) is one ArtifactError naming the file and the field::

    error: run/model.json: data.scaler.offset: has 1 values for 5 model inputs
    hint: the file is damaged or was changed; train again
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from .errors import ArtifactError

DAMAGED = "the file is damaged or was changed"
_SHOWN = 60  # characters of a wrong value shown in a message


class FieldProblem(ValueError):
    """A problem found across fields (in a model's ``mode="after"`` check), naming the field it
    is reported at: ``raise FieldProblem("scaler.offset", "has 1 values for 5 model inputs")``."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field = field


def foreign(what: str) -> PydanticCustomError:
    """For a ``mode="before"`` check: the data is not this format at all (``not a dltrain WHAT``)."""
    return PydanticCustomError("foreign", "not a dltrain {what}", {"what": what})


def unsupported(what: str, version, supported: int, dltrain_version: str) -> PydanticCustomError:
    """For a ``mode="before"`` check: a format version this dltrain cannot read."""
    return PydanticCustomError(
        "unsupported_version",
        "{what} format version {version} is not supported by dltrain {dltrain} (it reads format {supported})",
        {"what": what, "version": repr(version), "dltrain": dltrain_version, "supported": supported},
    )


class Stored(BaseModel):
    """A stored format: exact types (a number stored as text is damage, not something to
    convert), unknown keys ignored (a newer dltrain may add some)."""

    model_config = ConfigDict(strict=True, extra="ignore", arbitrary_types_allowed=True)
    REMEDY: ClassVar[str] = "train again"  # what to do when a file of this format is damaged

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Any, context: dict | None = None):
        """Validate (and upgrade) stored data; a ``pydantic.ValidationError`` says what does not fit."""
        return cls.model_validate(data, context=context)

    @classmethod
    def read(cls, path: Path, data: Any, context: dict | None = None):
        """``from_dict`` for the contents of the file ``path``: what does not fit is an ArtifactError."""
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as error:
            raise stored_error(path, error, cls.REMEDY) from None


def damaged(path: Path, problem: str, remedy: str = "train again") -> ArtifactError:
    """The one message of a stored file that cannot be used: ``PATH: PROBLEM``, hint: what to do."""
    return ArtifactError(f"{path}: {problem}", hint=f"{DAMAGED}; {remedy}")


def stored_error(path: Path, error: ValidationError, remedy: str = "train again") -> ArtifactError:
    """The first problem of a failed validation, as ``damaged`` words it: ``PATH: FIELD: PROBLEM``."""
    items = error.errors()
    item = items[0]
    if item["type"] == "unsupported_version":
        return ArtifactError(f"{path}: {item['msg']}", hint=f"use a matching dltrain version, or {remedy}")
    more = len(items) - 1
    problem = describe_problem(item) + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
    context_error = (item.get("ctx") or {}).get("error")
    field = ".".join(part for part in (field_path(item["loc"]), getattr(context_error, "field", "")) if part)
    return damaged(path, f"{field}: {problem}" if field else problem, remedy)


def field_path(location) -> str:
    """pydantic's location as the file's keys: ``data.columns[1].type`` (union and type tags left out)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _TAG.match(part):
            text += f".{part}" if text else part
    return text


_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|function-\w+\[.*\]|none|nullable\[.*\])$")


def describe_problem(item) -> str:
    """What is wrong with one value, in plain words: ``must be a whole number (got 'two')``."""
    kind, context = item["type"], item.get("ctx") or {}
    value = item.get("input")
    shown = repr(value)
    got = f" (got {shown if len(shown) <= _SHOWN else shown[:_SHOWN] + ' …'})"
    if kind == "missing":
        return "is missing"
    if kind in ("value_error", "foreign"):
        return item["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return f"must be one of {', '.join(options)}{got}"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(context.values()))}{got}"
    for kinds, words in _KINDS:
        if kind in kinds:
            return f"{words}{got}"
    return f"{item['msg']}{got}"


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_KINDS = [
    (("int_type", "int_parsing", "int_from_float"), "must be a whole number"),
    (("float_type", "float_parsing"), "must be a number"),
    (("finite_number",), "must be a finite number"),
    (("bool_type", "bool_parsing"), "must be true or false"),
    (("string_type",), "must be text"),
    (("model_type", "model_attributes_type", "dict_type"), "must be a mapping of keys to values"),
    (("list_type",), "must be a list"),
    (("string_pattern_mismatch",), "is not in the expected form"),
    (("too_short",), "must not be empty"),
]


def _number_list(dtype):
    def validate(value):
        if isinstance(value, np.ndarray):  # built in code (fit), kept as it is
            return value
        if not isinstance(value, list) or not set(map(type, value)) <= {int, float}:  # at C speed
            raise ValueError(f"must be a list of numbers (got {str(value)[:_SHOWN]})")
        return np.asarray(value, dtype=dtype)

    return Annotated[np.ndarray, PlainValidator(validate), PlainSerializer(lambda array: array.tolist())]


# A vector of statistics, stored as a JSON list of numbers.
Float32Vector = _number_list(np.float32)
Float64Vector = _number_list(np.float64)
