"""predict and eval never answer with NaN: a number that overflows once scaled, or whose row
overflows inside the network, is an error naming its line and column, without a raw NumPy warning."""

import re
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from conftest import ROOT
from dltrain.cli import app
from dltrain.commands import fit
from dltrain.data import read_features
from dltrain.data.csv import FLOAT32_MAX

runner = CliRunner()
HEADER = "sepal_length,sepal_width,petal_length,petal_width"


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("iris")
    fit.fit(ROOT / "configs" / "iris.yaml", ["train.epochs=2", "data.cache=false"], out=folder / "run")
    return folder / "run"


def invoke_without_warnings(*args):
    """The command's result; any Python warning (a raw NumPy RuntimeWarning) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return runner.invoke(app, [str(arg) for arg in args])


def write_rows(path, rows, labelled):
    header = HEADER + (",species" if labelled else "")
    tail = ",setosa" if labelled else ""
    path.write_text(header + "\n" + "".join(",".join(f"{value!r}" for value in row) + tail + "\n" for row in rows))
    return path


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_number_that_overflows_once_scaled_is_an_error_naming_its_cell(command, iris_run, tmp_path):
    # 3.0e38 fits float32, but (x - 5.8) / 0.8 does not: today "setosa,nan,nan,nan", exit 0.
    path = write_rows(tmp_path / "rows.csv", [[5.1, 3.5, 1.4, 0.2], [3.0e38, 3.0, 1.0, 0.2]], command == "eval")
    result = invoke_without_warnings(command, iris_run, path)
    assert result.exit_code == 2, result.output
    assert f"{path}:3: column 'sepal_length' has a number too large for this model" in result.output
    assert "float32" in result.output and "nan" not in result.output.lower()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_row_that_overflows_inside_the_network_is_an_error_naming_it(command, iris_run, tmp_path):
    # Every input near float32's largest number, finite once scaled: the sums overflow.
    schema = dltrain.load(iris_run).schema
    huge = [0.9 * FLOAT32_MAX * min(float(divisor), 1.0) for divisor in schema.divisor]
    path = write_rows(tmp_path / "rows.csv", [[5.1, 3.5, 1.4, 0.2], huge], command == "eval")
    assert np.isfinite(read_features(path, schema, with_target=False)[0]).all()  # the inputs pass
    result = invoke_without_warnings(command, iris_run, path)
    assert result.exit_code == 2, result.output
    assert f"{path}:3: the model's output for this row is not a number" in result.output
    assert re.search(r"The input farthest from 0 once scaled is '(sepal|petal)_\w+' = \d", result.output)
    assert "nan" not in result.output.lower()


def test_large_numbers_that_stay_in_range_are_predicted(iris_run, tmp_path):
    path = write_rows(tmp_path / "rows.csv", [[1e20, 3.0, 1.0, 0.2], [5.1, -1e20, 1.4, 0.2]], False)
    result = invoke_without_warnings("predict", iris_run, path)
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.output.strip().splitlines()[1:]]
    assert len(rows) == 2 and all(np.isfinite([float(value) for value in row[1:]]).all() for row in rows)
