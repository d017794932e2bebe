"""Date columns (parsing, expansion, the stored schema) and missing-value markers (data.na_values)."""

import datetime
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import dltrain
from dltrain.cli import app
from dltrain.commands import check, fit, predict
from dltrain.data import DataSchema, read_features
from dltrain.data import cache as datacache
from dltrain.data.csv import CsvFile
from dltrain.data.dates import (
    DATE_PARTS,
    compile_format,
    date_features,
    detect_date_format,
    parse_dates,
    varying_parts,
)
from dltrain.errors import ArtifactError, ConfigError, DataError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


# ---------------------------------------------------------------- parsing


def test_parsing_matches_the_standard_library_on_random_dates_and_times():
    rng = np.random.default_rng(0)
    seconds = rng.integers(-2_000_000_000, 4_000_000_000, 500)
    moments = [datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=int(value)) for value in seconds]
    forms = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y/%m/%d"]
    cells = np.array([moment.strftime(forms[index % 3]) for index, moment in enumerate(moments)])
    parsed = parse_dates(cells, "%Y-%m-%d")  # slashes need their own format
    iso = np.arange(500) % 3 != 2
    assert not parsed.bad[iso].any() and parsed.bad[~iso].all()
    slashes = parse_dates(cells[~iso], "%Y/%m/%d")
    assert not slashes.bad.any()
    features = date_features(parsed, DATE_PARTS)
    for row in np.flatnonzero(iso):
        moment = moments[row]
        expected = {
            "year": moment.year,
            "month": moment.month,
            "day": moment.day,
            "weekday": moment.weekday(),
            "dayofyear": moment.timetuple().tm_yday,
            "hour": moment.hour,
            "minute": moment.minute,
            "month_sin": np.sin(2 * np.pi * (moment.month - 1) / 12),
            "weekday_cos": np.cos(2 * np.pi * moment.weekday() / 7),
        }
        for part, value in expected.items():
            assert features[row, DATE_PARTS.index(part)] == pytest.approx(value, abs=1e-6), (cells[row], part)


def test_cells_that_are_not_dates_and_every_accepted_form():
    cells = np.array(
        [
            "2012-01-31",
            "2012-1-5",
            "2012-01-31T10:30:15.250Z",
            "2012-01-31 10:30+02:00",
            "",
            "2013-02-29",  # no such day
            "2012-13-01",
            "2012-01-31 25:00",
            "31/01/2012",
            "soon",
        ]
    )
    parsed = parse_dates(cells, "%Y-%m-%d")
    assert parsed.missing.tolist() == [False] * 4 + [True] + [False] * 5
    assert parsed.bad.tolist() == [False] * 5 + [True] * 5
    assert parsed.day[:4].tolist() == [31, 5, 31, 31] and parsed.hour[2:4].tolist() == [10, 10]
    day_first = parse_dates(np.array(["31/01/2012 08:15", "1/2/99", "29.02.2000"]), "%d/%m/%Y %H:%M")
    assert day_first.bad.tolist() == [False, True, True]
    assert parse_dates(np.array(["010299"]), "%d%m%y").year.tolist() == [1999]
    assert parse_dates(np.array(["20120131"]), "%Y%m%d").days.tolist() == [15370]  # 2012-01-31


@pytest.mark.parametrize(
    "text, message",
    [
        ("%d %b %Y", "%b is not a directive dates understand"),
        ("%m/%d", "no year"),
        ("%Y-%d", "%d without %m"),
        ("%Y-%m-%d %Y", "%Y appears twice"),
        ("20%y-%m", "a digit"),
    ],
)
def test_a_format_that_cannot_work_says_why(text, message):
    with pytest.raises(ValueError, match=message):
        compile_format(text)


def test_detection_reads_year_first_dates_and_asks_when_day_and_month_could_swap():
    assert detect_date_format(np.array(["2012-01-31", "", "2012-02-01 10:00"])).format == "%Y-%m-%d"
    assert detect_date_format(np.array(["2012/01/31", "2012/02/01"])).format == "%Y/%m/%d"
    settled = detect_date_format(np.array(["01/02/2012", "25/02/2012"]))
    assert settled.format == "%d/%m/%Y" and settled.alternatives == []
    ambiguous = detect_date_format(np.array(["01/02/2012", "03/04/2012"]))
    assert ambiguous.alternatives == ["%m/%d/%Y"]
    for not_dates in (["1970", "1971"], ["red", "blue"], ["12-ab", "3-4-5"]):
        assert detect_date_format(np.array(not_dates)) is None


def test_only_the_parts_that_vary_become_inputs():
    yearly = parse_dates(np.array(["1970-01-01", "1975-01-01", "1982-01-01"]), "%Y-%m-%d")
    assert varying_parts(yearly) == ["year"]  # the 1st of January has no weekday to learn from
    monthly = parse_dates(np.array(["2012-01", "2012-07"]), "%Y-%m")
    assert varying_parts(monthly) == ["month", "month_sin", "month_cos"]
    hourly = parse_dates(np.array(["2012-01-01 10:00", "2012-01-02 11:00"]), "%Y-%m-%d")
    assert varying_parts(hourly) == list(DATE_PARTS[4:10])


# ---------------------------------------------------------------- a date column in a project


def readings(rows=160, marker_every=0):
    """A CSV whose target depends on the month and the weekday of a date column."""
    rng = np.random.default_rng(1)
    start = np.datetime64("2015-01-01")
    lines = ["day,temperature,site,demand"]
    for index in range(rows):
        day = start + np.timedelta64(int(index * 5 + rng.integers(0, 5)), "D")
        moment = day.astype(datetime.date)
        temperature = rng.normal(12, 4)
        demand = 10 + 6 * np.cos(2 * np.pi * (moment.month - 1) / 12) + 4 * (moment.weekday() >= 5) + 0.2 * temperature
        marked = marker_every and index % marker_every == 3
        cells = [
            "?" if marker_every and index % 19 == 5 else str(day).replace("-", "/"),
            "?" if marked else f"{temperature:.1f}",
            ["north", "south"][index % 2],
            "?" if marker_every and index % 23 == 7 else f"{demand:.2f}",
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def project(tmp_path, text, data_yaml="", name="demand"):
    (tmp_path / f"{name}.csv").write_text(text)
    (tmp_path / f"{name}.yaml").write_text(
        f"name: {name}\ndata:\n  train: {name}.csv\n  target: demand\n  cache: false\n{data_yaml}"
        "model: {layers: [{units: 16}]}\noptimizer: {name: adam, lr: 0.02}\ntrain: {epochs: 8, batch_size: 16}\n"
    )
    return tmp_path / f"{name}.yaml"


def test_a_date_column_is_typed_expanded_and_stored(tmp_path):
    result = check.check(project(tmp_path, readings()))
    schema = result.data.schema
    day = schema.columns[0]
    assert (day.type, day.format) == ("date", "%Y/%m/%d")
    assert day.parts == list(DATE_PARTS[:9])  # no time in the cells: no hour or minute
    assert schema.input_names[:3] == ["day.year", "day.month", "day.month_sin"]
    assert schema.n_inputs == 9 + 1 + 2
    assert np.allclose(result.data.train.in_memory().features[:, :9].mean(axis=0), 0, atol=1e-5)  # scaled like numbers


def test_the_schema_round_trips_and_refuses_a_damaged_date_column(tmp_path):
    config = project(
        tmp_path,
        readings(marker_every=11),
        '  na_values: ["?"]\n  missing: median\n  columns: {demand: {missing: drop}}\n',
    )
    fit.fit(config, out=tmp_path / "run")
    run_ = dltrain.load(tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "model.json").read_text())["data"]
    assert stored["csv"]["na_values"] == ["?"]
    day = stored["columns"][0]
    assert day["type"] == "date" and day["missing"] == "median" and day["fill"].startswith(("2015-", "2016-"))
    again = DataSchema.from_dict(json.loads(json.dumps(run_.schema.to_dict())))
    assert again.to_dict() == run_.schema.to_dict() == stored
    original = read_features(tmp_path / "demand.csv", run_.schema, with_target=True)
    rebuilt = read_features(tmp_path / "demand.csv", again, with_target=True)
    np.testing.assert_array_equal(original[0], rebuilt[0])
    assert np.isfinite(original[0]).all()
    for change, message in [
        ({"format": "%d %b"}, "columns[0].format: '%d %b': %b is not a directive"),
        ({"parts": ["year", "fortnight"]}, "columns[0].parts: unknown, repeated or no date parts"),
        ({"fill": "yesterday"}, "columns[0].fill: the date fill 'yesterday' is not an ISO date"),
    ]:
        damaged = json.loads(json.dumps(stored))
        damaged["columns"][0].update(change)
        with pytest.raises(ArtifactError, match=re.escape(f"model.json: {message}")):
            DataSchema.read(Path("model.json"), damaged)


def test_init_fit_and_predict_on_a_csv_with_a_date_column_and_question_marks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demand.csv").write_text(readings(marker_every=11))
    written = run("init", "demand.csv", "--target", "demand", "--out", "demand.yaml")
    assert written.exit_code == 0, written.output
    assert "task regression" in written.output and "classes" not in written.output
    text = (tmp_path / "demand.yaml").read_text()
    assert 'na_values: ["?"]' in text and "found in day (line 7)" in text
    assert "day: {type: date, missing: median}" in text and "-> 9 inputs: year, month, day, weekday, dayofyear" in text
    assert "demand: {missing: drop}" in text and "'?' read as missing; those rows are skipped" in text
    config = yaml.safe_load(text)
    assert config["data"]["na_values"] == ["?"] and "exclude" not in config["data"]
    fitted = run("fit", "demand.yaml", "--out", "run", "--quiet", "--set", "train.epochs=40")
    assert fitted.exit_code == 0, fitted.output
    evaluated = json.loads(run("eval", "run", "demand.csv", "--json").output)
    assert evaluated["r2"] > 0.5  # the month and the weekend carry most of the target
    (tmp_path / "new.csv").write_text(
        "site,day,temperature\nnorth,2016/07/02,?\nnorth,?,12\nsouth, 2016/1/6 ,12\n"  # a Saturday, a fill, a Wednesday
    )
    predicted = run("predict", "run", "new.csv")
    assert predicted.exit_code == 0, predicted.output
    assert predicted.output.splitlines()[0] == "demand" and len(predicted.output.splitlines()) == 4
    (tmp_path / "bad.csv").write_text("site,day,temperature\nnorth,2016/02/30,12\n")
    refused = run("predict", "run", "bad.csv")
    assert refused.exit_code == 2
    assert "bad.csv:2: column 'day' has '2016/02/30', which is not a date in the model's format (%Y/%m/%d)" in (
        refused.output
    )


def test_export_refuses_a_date_column_by_name(tmp_path):
    pytest.importorskip("onnx")
    fit.fit(project(tmp_path, readings()), out=tmp_path / "run")
    result = run("export", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "column 'day' is a date column, which ONNX export does not take" in result.output
    assert not (tmp_path / "run" / "model.onnx").exists()


@pytest.mark.parametrize(
    "data_yaml, csv_change, message",
    [
        (
            '  columns:\n    day: {format: "%d %b %Y"}\n',
            None,
            r"demand.yaml:7:19: data.columns.day.format: '%d %b %Y': %b is not a directive",
        ),
        (
            '  columns:\n    day: {format: "%d/%m/%Y"}\n',
            None,
            r"demand.csv:2: column 'day' has '2015/01/0\d', which is not a date in the format %d/%m/%Y; "
            r"fix the cell, add it to data.na_values",
        ),
        (
            "",
            ("2015/01/0", "01/0"),
            r"column 'day' holds dates such as '\d\d/01/2015', which read both as day/month and as "
            r'month/day; set data.columns.day.format: "%d/%m/%Y" or "%m/%d/%Y"',
        ),
        ("", ("2015/01/0", "2015/01/x"), r"demand.csv:2: column 'day' has '2015/01/x\d', which is not a date"),
        ("  columns:\n    site: {type: date}\n", None, r"column 'site' is a date column \(data.columns.site.type\)"),
        ('  columns:\n    site: {type: categorical, format: "%Y"}\n', None, "format is for date columns"),
    ],
)
def test_date_mistakes_name_the_key_or_the_cell(tmp_path, data_yaml, csv_change, message):
    text = readings(rows=30)
    if csv_change:
        old, new = csv_change
        lines = text.splitlines()
        if new == "01/0":  # day-first dates whose day is never above 12: either order reads them
            lines[1:] = [_day_first(line) for line in lines[1:] if _day_first(line) is not None]
        else:
            lines[1] = lines[1].replace(old, new, 1)
        text = "\n".join(lines) + "\n"
    with pytest.raises((ConfigError, DataError), match=message):
        check.check(project(tmp_path, text, data_yaml))


def _day_first(line):
    """'2015/03/04,…' as '04/03/2015,…', or None when the day is above 12."""
    date, rest = line.split(",", 1)
    year, month, day = date.split("/")
    return None if int(day) > 12 else f"{day}/{month}/{year},{rest}"


def test_a_bare_year_column_stays_numeric_beside_a_date_column(tmp_path):
    text = "year,made,demand\n" + "".join(
        f"{1970 + index % 12},{1970 + index % 12}-01-01,{index * 0.5}\n" for index in range(40)
    )
    schema = check.check(project(tmp_path, text)).data.schema
    assert [(column.type, column.width) for column in schema.columns] == [("numeric", 1), ("date", 1)]
    assert schema.input_names == ["year", "made.year"]


# ---------------------------------------------------------------- missing-value markers


def test_a_target_with_a_question_mark_is_never_guessed_as_classes(tmp_path):
    text = "x,demand\n" + "".join(f"{index},{'?' if index % 9 == 4 else index * 1.5 + 0.25}\n" for index in range(60))
    with pytest.raises(DataError) as caught:
        check.check(project(tmp_path, text))
    message = str(caught.value)
    assert "demand.csv:6: target 'demand' has '?', which is not a number, though 53 of its 60 values are" in message
    assert 'add it to data.na_values (data.na_values: ["?"])' in message
    assert "data.columns.demand.missing: drop" in message and "classes" in message
    fixed = check.check(project(tmp_path, text, '  na_values: ["?"]\n  columns: {demand: {missing: drop}}\n'))
    assert fixed.config.task == "regression" and len(fixed.data.train) + len(fixed.data.validation) == 53


def test_markers_per_column_and_as_numbers(tmp_path):
    text = "a,b,site,demand\n1,-999,?,1.5\n2,-999.0,x,2\n-,4,?,3\n4,5,y,4\n"
    path = tmp_path / "d.csv"
    path.write_text(text)
    table = CsvFile.open(path)
    table.set_na_values(["-999"], {"a": ["-"]})
    columns = table.read(numeric=["a", "b"], wide=["demand"], text=["site"])
    assert np.isnan(columns.numbers("a")).tolist() == [False, False, True, False]
    assert np.isnan(columns.numbers("b")).tolist() == [True, True, False, False]  # -999 and -999.0 alike
    assert columns.text["site"].tolist() == ["?", "x", "?", "y"]  # "?" is a marker nowhere here
    assert table.missing_tokens("a") >= {"-", "-999", "NA", ""} and "-" not in table.missing_tokens("b")


def test_the_markers_are_part_of_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setattr(datacache, "MIN_BYTES", 0)
    path = tmp_path / "d.csv"
    path.write_text("a,demand\n" + "".join(f"{'?' if index % 5 == 0 else index},{index}\n" for index in range(50)))
    request = {"numeric": ["a"], "wide": ["demand"], "text": [], "fixed": {}}
    plain = datacache.read_columns(CsvFile.open(path), request, tmp_path / "cache")
    assert "a" in plain.text  # '?' made it text
    table = CsvFile.open(path)
    table.set_na_values(["?"])
    marked = datacache.read_columns(table, request, tmp_path / "cache")
    assert "a" not in marked.text and int(np.isnan(marked.numbers("a")).sum()) == 10


@pytest.mark.parametrize(
    "data_yaml, message",
    [
        ("  na_values: [?]\n", 'quote each marker: \\["\\?"\\]'),
        ("  na_values: [yes]\n", "lists True; give each marker as quoted text"),
        ('  na_values: [""]\n', "lists an empty marker"),
        ("  na_values: '?'\n", "must be a list of cell texts"),
    ],
)
def test_bad_na_values_name_the_key(tmp_path, data_yaml, message):
    with pytest.raises(ConfigError, match=r"demand.yaml:\d+:\d+: data.na_values: .*" + message):
        check.check(project(tmp_path, readings(rows=20), data_yaml))


def test_predict_reads_the_markers_the_model_was_trained_with(tmp_path):
    text = "x,site,demand\n" + "".join(
        f"{'n.a.' if index % 7 == 3 else index % 10},{['a', 'b'][index % 2]},{index % 10 * 2.5 + 0.1}\n"
        for index in range(60)
    )
    config = project(tmp_path, text, '  columns:\n    x: {na_values: ["n.a."], missing: mean}\n')
    fit.fit(config, out=tmp_path / "run")
    (tmp_path / "new.csv").write_text("site,x\na,n.a.\nb,4\n")
    header, rows = predict.predict_rows(tmp_path / "run", tmp_path / "new.csv")
    assert header == ["demand"] and len(rows) == 2
    schema = dltrain.load(tmp_path / "run").schema
    assert "n.a." in schema.missing_tokens("x") and "n.a." not in schema.missing_tokens("site")
    cells = schema.read_cells({"site": ["a", "b"], "x": ["n.a.", 4]})  # JSON rows (dltrain serve) alike
    assert np.isnan(cells.numbers("x")).tolist() == [True, False]


def test_init_writes_the_format_of_day_first_dates_and_excludes_ambiguous_ones(tmp_path):
    rows = [
        (f"{day % 28 + 1:02d}/{day % 12 + 1:02d}/2020", f"{day % 12 + 1:02d}/{day % 9 + 1:02d}/2020")
        for day in range(60)
    ]
    text = "settled,ambiguous,x,y\n" + "".join(f"{a},{b},{i % 5},{i * 0.5}\n" for i, (a, b) in enumerate(rows))
    (tmp_path / "d.csv").write_text(text)
    result = run("init", tmp_path / "d.csv", "--target", "y", "--out", tmp_path / "d.yaml")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "d.yaml").read_text()
    assert 'settled: {type: date, format: "%d/%m/%Y"}' in config
    assert "excluded ambiguous: dates whose day and month could be either way round" in result.output
    assert 'data.columns.ambiguous.format: "%d/%m/%Y" or "%m/%d/%Y"' in config
    assert check.check(tmp_path / "d.yaml").data.schema.columns[0].format == "%d/%m/%Y"
