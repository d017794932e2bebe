"""`dltrain init`: a commented starter config that trains as written."""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dltrain.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture
def messy_csv(tmp_path):
    """Semicolons, a BOM, CRLF, an ID, dates, free text, empty cells, a boolean and a categorical column."""
    rng = np.random.default_rng(0)
    lines = ["customer_id;signup_date;income;region;member;note;constant;monthly_spend"]
    for index in range(160):
        region = ["north", "south", "east", "west"][index % 4]
        income = 30000 + rng.random() * 40000
        spend = income / 1000 + {"north": 5, "south": -5, "east": 0, "west": 8}[region] + rng.normal()
        cells = [
            f"C{index:05d}",
            f"2021-{index % 12 + 1:02d}-{index % 28 + 1:02d}",
            "" if index % 9 == 4 else f"{income:.2f}",
            "" if index % 13 == 6 else region,
            "yes" if index % 3 else "no",
            f'"free words about customer {index}; nothing more"',
            "1",
            "" if index % 31 == 10 else f"{spend:.3f}",
        ]
        lines.append(";".join(cells))
    path = tmp_path / "data" / "customers.csv"
    path.parent.mkdir()
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    return path


def test_init_writes_a_commented_config_that_trains_as_written(tmp_path, messy_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    result = run("init", messy_csv, "--target", "monthly_spend", "--out", "configs/spend.yaml")
    assert result.exit_code == 0, result.output
    # signup_date (one year, every month and day) becomes 8 inputs: month and its sine/cosine, day,
    # weekday and its sine/cosine, day of year.
    assert "wrote configs/spend.yaml: 4 feature columns (14 inputs), 3 excluded; task regression" in result.output
    text = (tmp_path / "configs" / "spend.yaml").read_text()
    assert "train: ../data/customers.csv" in text  # relative to the config itself
    assert 'delimiter: ";"' in text and "# detected: ';'" in text
    assert "- customer_id               # ID-like: all 160 values are different" in text
    assert "signup_date: {type: date}" in text and "-> 8 inputs: month, day, weekday, dayofyear" in text
    assert "# A date column becomes numbers: year, month, day, weekday, day of year" in text
    assert "- note                      # free text: 160 distinct values" in text
    assert "- constant                  # constant: every row holds 1" in text
    assert "income: {type: numeric, missing: median}   # 18 empty cells (11%)" in text
    assert (
        'region: {type: categorical, missing: mode} # 12 empty cells (8%); 4 values: "east", "north", "south", "west"'
    ) in text
    assert "member: {type: boolean}" in text
    assert "monthly_spend: {missing: drop}" in text and "those rows are skipped" in text
    assert "task: regression" in text
    config = yaml.safe_load(text)
    assert config["data"]["exclude"] == ["customer_id", "note", "constant"]
    # It trains as written, from another working directory.
    monkeypatch.chdir(messy_csv.parent)
    fitted = run("fit", tmp_path / "configs" / "spend.yaml", "--out", tmp_path / "run", "--quiet")
    assert fitted.exit_code == 0, fitted.output
    assert "validation" in fitted.output
    evaluated = run("eval", tmp_path / "run", messy_csv, "--json")
    assert evaluated.exit_code == 0, evaluated.output


def test_init_on_a_classification_target(tmp_path, root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init", root / "data" / "iris.csv", "--target", "species")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "iris.yaml").read_text()
    assert "task: classification            # 3 classes: setosa, versicolor, virginica" in text
    assert "fraction held out, stratified by class" in text
    assert "exclude" not in text
    fitted = run("fit", "iris.yaml", "--out", "run", "--quiet", "--set", "train.epochs=40")
    assert fitted.exit_code == 0, fitted.output


def test_init_lists_only_columns_that_need_a_setting_in_wide_files(tmp_path):
    header = ",".join(f"p{index}" for index in range(60)) + ",label"
    rows = [",".join(str((row * 7 + column) % 255) for column in range(60)) + f",{row % 2}" for row in range(40)]
    (tmp_path / "wide.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    result = run("init", tmp_path / "wide.csv", "--target", "label", "--out", tmp_path / "wide.yaml")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "wide.yaml").read_text()
    assert "p3:" not in text and "# the 60 feature columns are numeric with no empty cells" in text
    assert "one sigmoid output" in text


def test_init_refuses_to_overwrite_and_names_mistakes(tmp_path, messy_csv):
    out = tmp_path / "c.yaml"
    out.write_text("mine\n")
    result = run("init", messy_csv, "--target", "monthly_spend", "--out", out)
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    assert out.read_text() == "mine\n"
    assert run("init", messy_csv, "--target", "monthly_spend", "--out", out, "--force").exit_code == 0
    result = run("init", messy_csv, "--target", "spend", "--out", tmp_path / "d.yaml")
    assert result.exit_code == 2
    assert "target column 'spend' not found; columns are customer_id, signup_date" in result.output
    result = run("init", tmp_path / "none.csv", "--target", "y", "--out", tmp_path / "e.yaml")
    assert result.exit_code == 2 and "none.csv: file not found" in result.output
    result = run("init", messy_csv)
    assert result.exit_code == 2 and "Missing option '--target'" in result.output
    (tmp_path / "one.csv").write_text("x,y\n1,a\n2,a\n")
    result = run("init", tmp_path / "one.csv", "--target", "y", "--out", tmp_path / "f.yaml")
    assert result.exit_code == 2 and "has only one value ('a'); there is nothing to learn" in result.output
    assert "Traceback" not in result.output


def test_init_warns_when_the_target_looks_like_a_row_identifier(tmp_path, messy_csv):
    out = tmp_path / "ids.yaml"
    result = run("init", messy_csv, "--target", "customer_id", "--out", out)
    assert result.exit_code == 0, result.output
    warning = "the target 'customer_id' looks like a row identifier (all 160 values are different)"
    assert f"warning: {warning}" in " ".join(result.output.split())
    assert f"# warning: {warning}" in out.read_text(encoding="utf-8")
    (tmp_path / "numbered.csv").write_text("row,x\n" + "".join(f"{i},{i % 7}\n" for i in range(1, 41)))
    result = run("init", tmp_path / "numbered.csv", "--target", "row", "--out", tmp_path / "rows.yaml")
    assert result.exit_code == 0 and "looks like a row identifier" in result.output
    # An ordinary target gets no warning.
    result = run("init", messy_csv, "--target", "monthly_spend", "--out", tmp_path / "spend.yaml")
    assert result.exit_code == 0 and "warning" not in result.output


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


@pytest.mark.parametrize(
    "name, text, kind",
    [
        ("cars.json", '[\n  {"mpg": 18, "year": 70},\n  {"mpg": 15, "year": 70}\n]\n', "JSON"),
        ("cars.csv", '{"rows": [{"mpg": 18, "year": 70}]}', "JSON"),
        ("cars.jsonl", '{"mpg": 18, "year": 70}\n{"mpg": 15, "year": 70}\n', "JSON lines"),
    ],
)
def test_init_names_a_json_file_as_json(tmp_path, name, text, kind):
    (tmp_path / name).write_text(text)
    result = run("init", tmp_path / name, "--target", "mpg", "--out", tmp_path / "c.yaml")
    assert result.exit_code == 2, result.output
    assert f"this looks like {kind}, not CSV" in result.output and "columns are" not in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.yaml").exists()


def test_init_reads_a_header_that_only_starts_with_a_bracket(tmp_path):
    (tmp_path / "brackets.csv").write_text("[a],[b]\n" + "".join(f"{i % 7 / 2},{i}\n" for i in range(30)))
    result = run("init", tmp_path / "brackets.csv", "--target", "[b]", "--out", tmp_path / "c.yaml")
    assert result.exit_code == 0, result.output
