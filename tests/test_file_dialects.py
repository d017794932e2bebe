"""Delimiter, quoting, BOM and encoding belong to each file, not to the model that read the first one."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dltrain.cli import app
from dltrain.commands import fit

BASE = Path(__file__).parent / "bad_inputs" / "_base"
runner = CliRunner()


@pytest.fixture(scope="module")
def semicolon_run(tmp_path_factory):
    """A model trained on a ;-separated file, with data.delimiter set to ';' in its config."""
    folder = tmp_path_factory.mktemp("semicolon")
    (folder / "semi.csv").write_text((BASE / "base.csv").read_text().replace(",", ";"))
    (folder / "semi.yaml").write_text(
        (BASE / "base.yaml").read_text().replace("train: base.csv", "train: semi.csv\n  delimiter: ';'")
    )
    fit.fit(folder / "semi.yaml", out=folder / "run")
    return folder


def _predict(run, path, *options):
    result = runner.invoke(app, ["predict", str(run), str(path), *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_model_trained_on_semicolons_predicts_a_comma_file_alike(semicolon_run, tmp_path):
    comma = tmp_path / "comma.csv"
    shutil.copy(BASE / "base.csv", comma)
    expected = _predict(semicolon_run / "run", semicolon_run / "semi.csv")
    assert _predict(semicolon_run / "run", comma) == expected


def test_a_bom_tab_separated_latin1_file_predicts_alike_with_options(semicolon_run, tmp_path):
    text = (BASE / "base.csv").read_text()
    expected = _predict(semicolon_run / "run", semicolon_run / "semi.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.replace(",", "\t").encode("utf-8"))
    assert _predict(semicolon_run / "run", bom) == expected
    latin = tmp_path / "latin.csv"
    latin.write_bytes(text.replace(",", "|").encode("latin-1"))
    assert _predict(semicolon_run / "run", latin, "--encoding", "latin-1", "--delimiter", "pipe") == expected


def test_eval_takes_the_delimiter_option_over_detection(semicolon_run):
    result = runner.invoke(app, ["eval", str(semicolon_run / "run"), str(BASE / "base.csv"), "--delimiter", ";"])
    assert result.exit_code == 2
    assert (
        "base.csv:1: target column 'label' not found (the header was read as one column with delimiter ';'"
        in result.output
    )


def test_the_configs_delimiter_still_applies_to_the_configs_validation_file(semicolon_run, tmp_path):
    (tmp_path / "semi.csv").write_text((semicolon_run / "semi.csv").read_text())
    (tmp_path / "val.csv").write_text((BASE / "base.csv").read_text())  # commas, where the config says ';'
    (tmp_path / "c.yaml").write_text(
        (semicolon_run / "semi.yaml").read_text().replace("target: label", "target: label\n  validation: val.csv")
    )
    result = runner.invoke(app, ["check", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert (
        "val.csv:1: target column 'label' not found (the header was read as one column with delimiter ';'"
        in result.output
    )
