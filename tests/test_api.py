"""The Python API (dltrain.fit, dltrain.load, Run.predict / evaluate / metadata): the command
line's own library, giving its numbers and raising the errors it prints."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from conftest import ROOT
from dltrain.cli import app
from dltrain.cli.options import json_safe
from dltrain.errors import ArtifactError, ConfigError, DataError
from dltrain.report import evaluation_json

runner = CliRunner()
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns(".dltrain-cache"))
    run = dltrain.fit(folder / "configs" / "iris.yaml", out=folder / "runs" / "iris", overrides={"train.epochs": 5})
    return folder, run


def test_import_dltrain_loads_no_library_until_the_api_is_used():
    code = (
        "import sys, dltrain\n"
        "print(sorted(name for name in sys.modules if name.startswith(('dltrain.', 'numpy', 'pydantic'))))\n"
        "print(dltrain.fit.__module__, dltrain.load.__module__, dltrain.Run.__name__, 'numpy' in sys.modules)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert shown[0] == "['dltrain.engine', 'dltrain.engine.threads']"
    assert shown[1] == "dltrain.api dltrain.api Run True"


def test_fit_returns_the_run_it_saved(iris):
    folder, run = iris
    assert run.run_dir == folder / "runs" / "iris"
    assert run.config.train.epochs == 5 and run.config.loss == "cross_entropy"  # the override, auto resolved
    assert len(run.fit_result.history) == 5 and run.fit_result.stop_reason == "epochs done"
    assert run.metadata["training"]["epochs_done"] == 5
    assert run.metadata["data"]["class_labels"] == ["setosa", "versicolor", "virginica"]
    loaded = dltrain.load(run.run_dir)
    assert loaded.fit_result is None and loaded.metadata == run.metadata
    for key, value in run.model.params.items():
        assert np.array_equal(loaded.model.params[key], value), key


def test_predict_on_a_csv_is_dltrain_predict(iris):
    folder, run = iris
    data = folder / "data" / "iris.csv"
    predictions = run.predict(data)
    assert predictions.labels.shape == (150,) and predictions.probabilities.shape == (150, 3)
    assert predictions.values is None
    result = runner.invoke(app, ["predict", str(run.run_dir), str(data)])
    assert result.exit_code == 0, result.output
    shown = list(csv.reader(result.output.splitlines()))
    assert shown[0] == predictions.header == ["species", "prob_setosa", "prob_versicolor", "prob_virginica"]
    assert shown[1:] == predictions.text_rows()


def test_rows_as_a_csv_columns_or_row_mappings_give_the_same_predictions(iris):
    folder, run = iris
    with open(folder / "data" / "iris.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:7]  # cells as the file's text, the target among them
    columns = {name: [float(row[name]) for row in rows] for name in FLOWER}
    from_file = run.predict(str(folder / "data" / "iris.csv"))
    for predictions in (run.predict(rows), run.predict(columns)):
        assert predictions.labels.tolist() == from_file.labels[:7].tolist()
        np.testing.assert_array_equal(predictions.probabilities, from_file.probabilities[:7])
    assert run.predict([FLOWER]).labels.tolist() == ["setosa"]


def test_evaluate_is_dltrain_eval(iris):
    folder, run = iris
    data = folder / "data" / "iris.csv"
    metrics = dltrain.load(run.run_dir).evaluate(data)
    assert metrics["rows_scored"] == 150 and 0.0 <= metrics["accuracy"] <= 1.0
    result = runner.invoke(app, ["eval", str(run.run_dir), str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json_safe(evaluation_json(metrics, run.schema.class_labels))


def test_a_regression_run_predicts_values_in_the_targets_units(tmp_path):
    rows = ["x,y"] + [f"{index / 10},{2 * index / 10 + 1}" for index in range(40)]
    (tmp_path / "line.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "line.yaml").write_text(
        "data: {train: line.csv, target: y, validation: 0}\nmodel: {layers: []}\n"
        "optimizer: {name: adam, lr: 0.1}\ntrain: {epochs: 200, batch_size: 40}\n"
    )
    run = dltrain.fit(tmp_path / "line.yaml", out=tmp_path / "run")
    predictions = run.predict({"x": [0.5, 2.0]})
    assert predictions.labels is None and predictions.values.shape == (2, 1)
    np.testing.assert_allclose(predictions.values[:, 0], [2.0, 5.0], atol=0.05)
    assert run.evaluate(tmp_path / "line.csv")["r2"] > 0.99


def test_overrides_take_any_value_or_set_texts(iris, tmp_path):
    folder, _ = iris
    layers = [{"units": 4, "activation": "tanh"}]
    run = dltrain.fit(
        folder / "configs" / "iris.yaml", tmp_path / "a", {"model.layers": layers, "train.epochs": 1, "name": "x-y"}
    )
    assert [layer.units for layer in run.config.model.layers] == [4] and run.config.name == "x-y"
    run = dltrain.fit(folder / "configs" / "iris.yaml", tmp_path / "b", ["train.epochs=1", "model.layers=[]"])
    assert run.config.model.layers == [] and len(run.fit_result.history) == 1


def test_quiet_false_prints_a_line_per_epoch_and_quiet_prints_nothing(iris, tmp_path, capsys):
    folder, _ = iris
    dltrain.fit(folder / "configs" / "iris.yaml", tmp_path / "quiet", {"train.epochs": 2})
    assert capsys.readouterr() == ("", "")
    dltrain.fit(folder / "configs" / "iris.yaml", tmp_path / "told", {"train.epochs": 2}, quiet=False)
    out, err = capsys.readouterr()
    assert out == "" and [line.split()[:2] for line in err.splitlines()] == [["epoch", "1/2"], ["epoch", "2/2"]]


def _cli_error(*arguments) -> str:
    result = runner.invoke(app, [str(argument) for argument in arguments])
    assert result.exit_code == 2, result.output
    return result.output.strip().removeprefix("error: ")


def test_errors_are_the_ones_the_command_line_prints(iris, tmp_path):
    folder, run = iris
    config, data = folder / "configs" / "iris.yaml", folder / "data" / "iris.csv"
    with pytest.raises(ConfigError) as raised:
        dltrain.fit(config, tmp_path / "run", {"train.epochs": -1})
    assert str(raised.value) == _cli_error("fit", config, "--out", tmp_path / "run", "--set", "train.epochs=-1")
    with pytest.raises(ArtifactError) as raised:
        dltrain.load(tmp_path / "nowhere")
    assert str(raised.value) == _cli_error("predict", tmp_path / "nowhere", data)
    (tmp_path / "short.csv").write_text("sepal_length,sepal_width\n1,2\n")
    with pytest.raises(DataError) as raised:
        run.predict(tmp_path / "short.csv")
    assert str(raised.value) == _cli_error("predict", run.run_dir, tmp_path / "short.csv")
    with pytest.raises(DataError, match="row:0: column 'petal_width' is absent"):
        run.predict([{"sepal_length": 1, "sepal_width": 2, "petal_length": 3}])
    with pytest.raises(ConfigError, match="--delimiter 'x'"):
        run.evaluate(data, delimiter="x")
    with pytest.raises(TypeError, match="a CSV path"):
        run.predict(42)


def test_a_trainer_on_arrays_in_memory_learns_classes_and_values():
    """build.array_trainer: the bench's and the engine tests' way to a Trainer, checked as fit checks."""
    from dltrain.build import array_trainer

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3)).astype(np.float32)
    settings = {"model": {"layers": []}, "optimizer": {"lr": 0.05}, "train": {"epochs": 30, "batch_size": 32}}
    two_classes = (features[:, 0] > 0).astype(np.int64)
    trainer = array_trainer(settings, features, two_classes, ["no", "yes"])
    assert trainer.model.n_outputs == 1  # binary cross-entropy by default: one sigmoid output
    assert trainer.run().history[-1]["accuracy"] > 0.95
    values = np.column_stack([2 * features[:, 0], features[:, 1] - features[:, 2]])
    trainer = array_trainer(settings, features, values)
    assert trainer.model.n_outputs == 2 and trainer.run().history[-1]["r2"] > 0.99
    with pytest.raises(ConfigError, match="settings: train.epochs: must be > 0"):
        array_trainer({"train": {"epochs": 0}}, features, values)
