"""Request bodies to cells and predictions to answers; every mistake a 4xx naming its place.

A cell error from the shared pipeline starts with where it is (``row:3:`` for a JSON row
counted from 0, ``body:5:`` for a line of a CSV body); that place becomes the answer's
``row`` or ``line``, and the column it names its ``column``."""

from __future__ import annotations

import ast
import itertools
import json
import operator
import re
from collections.abc import Mapping, Sequence

import numpy as np
import orjson

from ...data import DataSchema
from ...predictions import Predictions, cells_from_rows

ROW_SOURCE = "row"  # JSON rows in messages: row:<index from 0>:
CSV_SOURCE = "body"  # a CSV body in messages: body:<line>:

BUG_MESSAGE = "internal error (a dltrain bug, logged by the server); please report it"

_PLACE = re.compile(r"^(row|body):(?:(\d+):)? ")
_COLUMN = re.compile(r"\b(?:column|target) ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


class RequestError(Exception):
    """A request the server cannot answer: its HTTP status and a JSON body saying why."""

    def __init__(self, status: int, message: str, **place):
        super().__init__(message)
        self.status = status
        self.place = {key: value for key, value in place.items() if value is not None}

    def body(self) -> bytes:
        return json.dumps({"error": str(self), **self.place}).encode()


def from_user_error(message: str, status: int = 422) -> RequestError:
    """A DltrainError's message, its ``row:N:`` or ``body:N:`` prefix made the answer's row or line."""
    place: dict = {}
    match = _PLACE.match(message)
    if match:
        source, number = match.groups()
        rest = message[match.end() :]
        if number is None:
            message = rest if source == ROW_SOURCE else f"the CSV body: {rest}"
        elif source == ROW_SOURCE:
            place["row"] = int(number)
            message = f"row {number}: {rest}"
        else:
            place["line"] = int(number)
            message = f"line {number} of the CSV body: {rest}"
    column = _COLUMN.search(message)
    if column:
        place["column"] = ast.literal_eval(column.group(1))
    return RequestError(status, message, **place)


def too_large(size: int, limit: int) -> RequestError:
    """The 413 for a body of ``size`` bytes over ``limit``."""
    return RequestError(
        413,
        f"the body is {size / 2**20:.1f} MB, more than the {limit / 2**20:g} MB this server takes "
        "(dltrain serve --max-body); send the rows in several requests",
    )


_SHAPES = 'send {"rows": [{"column": value, ...}, ...]} or {"columns": {"column": [value, ...], ...}}'


def json_cells(body: bytes, schema: DataSchema, max_rows: int) -> tuple[dict, int, bool]:
    """(columns of cells, number of rows, whether they came as columns) of a JSON request body."""
    try:
        data = orjson.loads(body)
    except ValueError as error:
        raise RequestError(
            400,
            f"the body is not JSON ({error}); {_SHAPES}, or a CSV file with Content-Type: text/csv",
        ) from None
    if not isinstance(data, dict) or len({"rows", "columns"} & set(data)) != 1:
        raise RequestError(422, f"{_SHAPES}")
    if "rows" in data:
        rows = data["rows"]
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, f'"rows" must be a list of row objects with at least one row; {_SHAPES}')
        _check_rows(len(rows), max_rows)
        return rows_as_cells(rows, schema.feature_names), len(rows), False
    columns = data["columns"]
    if not isinstance(columns, dict):
        raise RequestError(422, f'"columns" must be an object of column: [values]; {_SHAPES}')
    for name, values in columns.items():
        if not isinstance(values, list):
            raise RequestError(
                422, f"column {name!r} must be a list of cells (got {type(values).__name__})", column=name
            )
    n_rows = max((len(columns[name]) for name in schema.feature_names if name in columns), default=0)
    _check_rows(n_rows, max_rows)
    return columns, n_rows, True


def rows_as_cells(rows: list, names: Sequence[str]) -> dict[str, list]:
    """``cells_from_rows`` at C speed for the usual body (every row an object holding every
    column): the same cells, the same objects. Anything else is read by ``cells_from_rows``,
    whose message names the row and the column."""
    if set(map(type, rows)) == {dict}:
        try:  # a column at a time: no tuple per row for the garbage collector to visit
            return {name: list(map(operator.itemgetter(name), rows)) for name in names}
        except KeyError:  # a row lacks a column: cells_from_rows says which
            pass
    return cells_from_rows(rows, names, ROW_SOURCE)


def _check_rows(n_rows: int, max_rows: int) -> None:
    if n_rows > max_rows:
        raise RequestError(
            413,
            f"{n_rows:,} rows in one request, more than the {max_rows:,} this server takes "
            "(dltrain serve --max-rows); send them in several requests",
        )


def float32_lists(array: np.ndarray) -> list:
    """float32 values as Python floats that print as predict prints them (the shortest text that
    reads back as the same float32: 0.99944836, not 0.9994483590126038)."""
    return orjson.loads(orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY))


def predictions_json(predictions: Predictions, by_columns: bool = False) -> bytes:
    """{"predictions": [{column: value, ...}, ...]} with predict's column names and numbers, or with
    ``by_columns`` {"predictions": {column: [value, ...], ...}} (the fast form for many rows)."""
    numbers = predictions.values if predictions.values is not None else predictions.probabilities
    assert numbers is not None
    if not np.isfinite(numbers).all():  # one check for the usual answer; the row only when one is bad
        row = int(np.flatnonzero(~np.isfinite(numbers).all(axis=1))[0])
        raise RequestError(
            422,
            f"row {row}: the model's output is not a finite number (its inputs are far outside the "
            "training data, so float32 overflowed); check the row's values",
            row=row,
        )
    header = predictions.header
    names = header if predictions.labels is None else header[1:]
    if by_columns:
        answer: dict = {} if predictions.labels is None else {header[0]: predictions.labels.tolist()}
        answer.update((name, np.ascontiguousarray(numbers[:, index])) for index, name in enumerate(names))
        return orjson.dumps({"predictions": answer}, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(set(header)) == len(header) and len(predictions):
        return _rows_answer(predictions, header, numbers)
    return dict_rows_json(predictions, header, names, numbers)


def dict_rows_json(predictions: Predictions, header: list, names: list, numbers: np.ndarray) -> bytes:
    """{"predictions": [{column: value, ...}, ...]} built as a dict per row and dumped by orjson:
    the answer where a header repeats a name (and what the fast rows answer must equal)."""
    values = float32_lists(numbers)
    if predictions.labels is None:
        items = [dict(zip(names, row)) for row in values]
    else:
        target = header[0]
        items = [{target: label, **dict(zip(names, row))} for label, row in zip(predictions.labels.tolist(), values)]
    return orjson.dumps({"predictions": items})


def _rows_answer(predictions: Predictions, header: list, numbers: np.ndarray) -> bytes:
    """The bytes ``orjson.dumps({"predictions": [{column: value, ...}, ...]})`` writes, without a
    dict per row: each cell's text is cut from orjson's text of its column (the same Python floats,
    so the same digits), and each row is joined from its cells' texts between the fixed keys."""
    cells = [orjson.dumps(column)[1:-1].split(b",") for column in float32_lists(numbers.T)]
    if predictions.labels is not None:
        labels = predictions.labels.tolist()
        texts = {label: orjson.dumps(label) for label in set(labels)}
        cells.insert(0, list(map(texts.__getitem__, labels)))
    parts: list = []
    for position, (name, column) in enumerate(zip(header, cells)):
        parts += [itertools.repeat((b"," if position else b"{") + orjson.dumps(name) + b":"), column]
    rows = map(b"".join, zip(*parts, itertools.repeat(b"}")))
    return b'{"predictions":[' + b",".join(rows) + b"]}"


def v2_cells(body: bytes, schema: DataSchema, max_rows: int) -> tuple[dict, int]:
    """The KServe V2 inference request ({"inputs": [{"name", "shape", "datatype", "data"}]}) as cells."""
    try:
        data = orjson.loads(body)
    except ValueError as error:
        raise RequestError(400, f"the body is not JSON ({error})") from None
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(item, Mapping) for item in inputs):
        raise RequestError(422, 'send {"inputs": [{"name": column, "shape": [rows], "datatype": ..., "data": [...]}]}')
    cells = {}
    for item in inputs:
        name, values = item.get("name"), item.get("data")
        if not isinstance(name, str) or not isinstance(values, list):
            raise RequestError(422, "each input needs a name (the column) and data (a list of cells)")
        if values and isinstance(values[0], list):  # shape [rows, 1], nested
            values = [cell for row in values for cell in (row if isinstance(row, list) else [row])]
        cells[name] = values
    n_rows = max((len(cells[name]) for name in schema.feature_names if name in cells), default=0)
    _check_rows(n_rows, max_rows)
    return cells, n_rows


def v2_outputs(name: str, predictions: Predictions) -> bytes:
    """The KServe V2 inference answer: label (BYTES) and probabilities (FP32), or the values."""
    numbers = predictions.values if predictions.values is not None else predictions.probabilities
    assert numbers is not None
    if not np.isfinite(numbers).all():
        predictions_json(predictions)  # raises the error naming the row
    outputs = []
    if predictions.labels is not None:
        outputs.append(
            {
                "name": "label",
                "datatype": "BYTES",
                "shape": [len(predictions)],
                "data": predictions.labels.tolist(),
            }
        )
        outputs.append(
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(numbers.shape),
                "data": float32_lists(numbers.reshape(-1)),
            }
        )
    else:
        outputs.append(
            {
                "name": "prediction",
                "datatype": "FP32",
                "shape": list(numbers.shape),
                "data": float32_lists(numbers.reshape(-1)),
            }
        )
    return orjson.dumps({"model_name": name, "outputs": outputs})
