"""Cases a user review found: markup-like labels, unwritable outputs, tiny probabilities, bad rates."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dltrain.engine.activations import ACTIVATIONS
from dltrain.cli import app
from dltrain.config import load_config
from dltrain.errors import ConfigError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture
def markup_run(tmp_path):
    rows = "".join(f"{i},{'[b]x[/b]' if i % 2 else '[/]'}\n" for i in range(1, 21))
    (tmp_path / "labels.csv").write_text("a,y\n" + rows)
    (tmp_path / "c.yaml").write_text("name: m\ndata: {train: labels.csv, target: y, validation: 0}\n"
                                     "train: {epochs: 2}\n")
    result = run("fit", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_labels_that_look_like_markup_are_printed_as_written(markup_run):
    result = run("eval", markup_run / "run", markup_run / "labels.csv")
    assert result.exit_code == 0, result.output
    assert "[b]x[/b]" in result.output and "[/]" in result.output


def test_writing_into_a_missing_folder_or_onto_a_folder_is_a_clear_error(markup_run):
    for target, message in [(markup_run / "nowhere" / "p.csv", "folder not found"),
                            (markup_run / "run", "is a folder")]:
        result = run("predict", markup_run / "run", markup_run / "labels.csv", "--out", target)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_eval_json_writes_null_for_undefined_metrics(markup_run):
    (markup_run / "one_class.csv").write_text("a,y\n1,[/]\n2,[/]\n")
    result = run("eval", markup_run / "run", markup_run / "one_class.csv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert metrics["roc_auc"] is None


def test_sigmoid_keeps_tiny_probabilities_in_float32():
    z = np.array([-20.6, -80.0, 0.0, 30.0], dtype=np.float32)
    p = ACTIVATIONS["sigmoid"].forward(z, np.empty_like(z))
    np.testing.assert_allclose(p[:2], 1.0 / (1.0 + np.exp(-z[:2].astype(np.float64))), rtol=1e-5)
    assert p[0] > 0 and p[2] == 0.5 and p[3] == 1.0


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr=.inf", "optimizer.lr: must be a finite number"),
    ("optimizer={lr: 0.01, schedule: {name: cosine, min_lr: 1.0}}", "schedule.min_lr (1) must be below lr (0.01)"),
    ("optimizer.schedule={name: step, warmup_epochs: 5}", "warmup_epochs (5) must be below train.epochs (5)"),
])
def test_learning_rates_that_cannot_work_are_refused(tmp_path, override, message):
    (tmp_path / "c.yaml").write_text("name: m\ndata: {train: d.csv, target: y}\ntrain: {epochs: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml", [override])
    assert message in str(caught.value)


def test_init_detects_decimal_commas_and_quotes_values_in_comments(tmp_path):
    lines = ["x;note;label"]
    for i in range(40):
        note = "a" if i % 2 else '"b, c"'
        lines.append(f"{i % 7},{i % 3}5;{note};{'hi' if i % 7 > 3 else 'lo'}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    result = run("init", tmp_path / "d.csv", "--target", "label", "--out", tmp_path / "d.yaml")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "d.yaml").read_text()
    assert 'decimal: ","' in config
    assert "x: {type: numeric}" in config
    assert '"b, c"' in config  # a value holding a comma stays one value in the comment
    fitted = run("fit", tmp_path / "d.yaml", "--out", tmp_path / "run", "--quiet")
    assert fitted.exit_code == 0, fitted.output
