"""The fast conversions of `dltrain serve`'s JSON rows (serve/wire.py) against the plain ones
they replace: the same cells (the same objects), the same messages, the same answer bytes."""

from __future__ import annotations

import numpy as np
import pytest

from dltrain.commands.serve.wire import dict_rows_json, predictions_json, rows_as_cells
from dltrain.errors import DataError
from dltrain.predictions import Predictions, cells_from_rows

AWKWARD = [
    0,
    1,
    -7,
    10**400,  # beyond float64: read as text, like a CSV's
    2**63,
    1.5,
    -0.0,
    1e-320,
    1e308,
    float("nan"),
    True,
    False,
    None,
    "",
    "NA",
    "n/a",
    "  3.5 ",
    "abc",
    "Zürich",
    "東京",
    "🙂",
    '"quoted", with a comma',
    "back\\slash",
    [1],
    {"a": 1},
]


def test_rows_as_cells_gives_the_very_cells_of_cells_from_rows():
    names = ["x", "y", "z"]
    rows = [
        {"x": value, "y": AWKWARD[-1 - index], "z": index, "extra": "ignored"} for index, value in enumerate(AWKWARD)
    ]
    fast, plain = rows_as_cells(rows, names), cells_from_rows(rows, names)
    assert list(fast) == list(plain) == names
    for name in names:
        assert len(fast[name]) == len(plain[name]) == len(rows)
        assert all(a is b for a, b in zip(fast[name], plain[name]))  # the same objects, so the same reading
    one = rows_as_cells(rows, ["x"])
    assert list(one) == ["x"] and all(a is b for a, b in zip(one["x"], plain["x"]))


@pytest.mark.parametrize(
    "rows",
    [
        [{"x": 1, "y": 2}, {"x": 1}],  # a row lacks a column
        [{"x": 1, "y": 2}, [1, 2]],  # a row that is not an object
        [{"x": 1, "y": 2}, "x"],
        [None],
        [{"y": 2, "x": 1}, {"x": 1, "y": 2, "z": 3}, {"Y": 2, "x": 1}],
    ],
)
def test_rows_as_cells_refuses_as_cells_from_rows_does(rows):
    with pytest.raises(DataError) as plain:
        cells_from_rows(rows, ["x", "y"])
    with pytest.raises(DataError) as fast:
        rows_as_cells(rows, ["x", "y"])
    assert str(fast.value) == str(plain.value) and str(fast.value).startswith("row:")


def _plain_rows_json(predictions: Predictions) -> bytes:
    """The answer as it was written before: a dict per row, dumped by orjson."""
    numbers = predictions.numbers
    header = predictions.header
    return dict_rows_json(predictions, header, header if predictions.labels is None else header[1:], numbers)


NUMBERS = [0.0, -0.0, 1.0, 0.1, 1 / 3, 0.99944836, 1e-7, 1e-45, 1e-320, 1.17549435e-38, 123456.79, 1e20, 3.4e38, -2.5]


def test_the_rows_answer_is_byte_for_byte_the_dict_per_row_answer():
    generator = np.random.default_rng(0)
    labels = ["setosa", "Zürich", "東京", 'a "quoted", label', "back\\slash", "🙂"]
    probabilities = np.concatenate(
        [
            np.array(NUMBERS * 6, dtype=np.float32).reshape(-1, 6),
            generator.random((50, 6), dtype=np.float32),
            generator.standard_normal((50, 6)).astype(np.float32) * np.float32(1e30),
        ]
    )
    classes = np.arange(len(probabilities)) % len(labels)
    header = ["species", *(f"prob_{label}" for label in labels)]
    classified = Predictions(header, np.asarray(labels, dtype=object)[classes], probabilities, None, classes)
    regressed = Predictions(["price", "größe"], None, None, probabilities[:, :2])
    single = Predictions(["y"], None, None, probabilities[:1, :1])
    clashing = Predictions(["prob_a", "prob_a"], np.array(["a"], dtype=object), probabilities[:1, :1], None)
    for predictions in (classified, regressed, single, clashing):
        assert predictions_json(predictions) == _plain_rows_json(predictions)
