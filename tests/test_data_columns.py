"""Column types, missing values, one-hot encoding and the stored schema, as fit, eval and predict see them."""

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dltrain
from dltrain.cli import app
from dltrain.commands import check, evaluate, fit, predict
from dltrain.data import DataSchema, read_features
from dltrain.errors import ArtifactError, ConfigError, DataError

runner = CliRunner()


def customers(rows=120, seed=0, **blanks):
    """A mixed CSV: numeric income, categorical region, boolean member, an ID and a numeric target."""
    rng = np.random.default_rng(seed)
    lines = ["customer_id,income,region,member,spend"]
    for index in range(rows):
        region = ["north", "south", "east"][index % 3]
        member = ["yes", "no"][index % 2]
        income = 30 + rng.random() * 40
        spend = income / 10 + {"north": 2, "south": -2, "east": 0}[region] + (1.5 if member == "yes" else 0)
        cells = {"income": f"{income:.2f}", "region": region, "member": member, "spend": f"{spend:.3f}"}
        for column, every in blanks.items():
            if index % every == 1:
                cells[column] = ""
        lines.append(f"C{index:04d},{cells['income']},{cells['region']},{cells['member']},{cells['spend']}")
    return "\n".join(lines) + "\n"


def project(tmp_path, csv_text, data_yaml="", extra="", name="shop"):
    (tmp_path / f"{name}.csv").write_text(csv_text)
    (tmp_path / f"{name}.yaml").write_text(
        f"name: {name}\ndata:\n  train: {name}.csv\n  target: spend\n  exclude: [customer_id]\n  cache: false\n"
        f"{data_yaml}model: {{layers: [{{units: 8}}]}}\noptimizer: {{name: adam, lr: 0.02}}\n"
        f"train: {{epochs: 30, batch_size: 16}}\n{extra}"
    )
    return tmp_path / f"{name}.yaml"


def test_types_are_inferred_and_encoded(tmp_path):
    result = check.check(project(tmp_path, customers()))
    schema = result.data.schema
    assert [(column.name, column.type) for column in schema.columns] == [
        ("income", "numeric"),
        ("region", "categorical"),
        ("member", "boolean"),
    ]
    assert schema.input_names == ["income", "region=east", "region=north", "region=south", "member"]
    features = result.data.train.in_memory().features
    assert features.shape[1] == 5
    one_hot = features[:, 1:4]
    assert set(np.unique(one_hot)) == {0.0, 1.0} and np.all(one_hot.sum(axis=1) == 1)
    assert set(np.unique(features[:, 4])) == {0.0, 1.0}  # booleans stay 0/1
    assert abs(features[:, 0].mean()) < 1e-5  # numeric columns are standardised


def test_a_mixed_file_trains_and_predicts_with_the_stored_encoding(tmp_path):
    config = project(tmp_path, customers(rows=300))
    result = fit.fit(config, out=tmp_path / "run")
    assert result.metrics["validation"]["r2"] > 0.8
    manifest = json.loads((tmp_path / "run" / "model.json").read_text())
    region = next(column for column in manifest["data"]["columns"] if column["name"] == "region")
    assert region == {
        "name": "region",
        "type": "categorical",
        "missing": "error",
        "fill": None,
        "categories": ["east", "north", "south"],
        "unknown": "error",
    }
    # Columns in another order, with the target missing: predictions follow the rows.
    (tmp_path / "new.csv").write_text("region,member,income\nsouth,no,50\nnorth,yes,50\n")
    header, rows = predict.predict_rows(tmp_path / "run", tmp_path / "new.csv")
    assert header == ["spend"]
    south, north = (float(row[0]) for row in rows)
    assert north - south > 3  # north +2 and member +1.5 against south -2


def test_schema_round_trips_through_model_json(tmp_path):
    config = project(
        tmp_path,
        customers(income=7, region=5),
        "  columns:\n    income: {missing: median}\n    region: {missing: mode, unknown: ignore}\n",
    )
    fit.fit(config, out=tmp_path / "run")
    run = dltrain.load(tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "model.json").read_text())["data"]
    again = DataSchema.from_dict(json.loads(json.dumps(run.schema.to_dict())))
    assert again.to_dict() == run.schema.to_dict() == stored
    original = read_features(tmp_path / "shop.csv", run.schema, with_target=True)
    rebuilt = read_features(tmp_path / "shop.csv", again, with_target=True)
    np.testing.assert_array_equal(original[0], rebuilt[0])
    np.testing.assert_array_equal(original[1], rebuilt[1])


def test_missing_default_is_an_error_naming_file_line_and_column(tmp_path):
    with pytest.raises(
        DataError,
        match=r"shop.csv:3: column 'income' is empty \(a missing value\); fill it in, "
        r"or set data.columns.income.missing",
    ):
        check.check(project(tmp_path, customers(income=10)))


def test_drop_drops_the_rows(tmp_path):
    config = project(tmp_path, customers(rows=100, income=10), "  missing: drop\n", "")
    result = check.check(config, ["data.validation=0"])
    assert len(result.data.train) == 90


def test_fills_use_training_statistics_only_and_are_reused_at_predict(tmp_path):
    text = customers(rows=100, income=4)
    config = project(tmp_path, text, "  columns:\n    income: {missing: mean}\n")
    fit.fit(config, out=tmp_path / "run", overrides=["train.epochs=1"])
    run = dltrain.load(tmp_path / "run")
    income = next(column for column in run.schema.columns if column.name == "income")
    # The mean over the training split, not over the whole file.
    data = check.check(config)
    all_values = np.array([float(row["income"]) for row in csv.DictReader(io.StringIO(text)) if row["income"]])
    assert income.fill != pytest.approx(all_values.mean(), abs=1e-9)
    offset, divisor = run.schema.offset[0], run.schema.divisor[0]
    np.testing.assert_allclose(data.data.train.in_memory().features[:, 0].mean(), 0, atol=1e-5)
    (tmp_path / "new.csv").write_text("income,region,member\n,north,yes\n")
    features, _ = read_features(tmp_path / "new.csv", run.schema, with_target=False)
    assert features[0, 0] == pytest.approx((income.fill - offset) / divisor, rel=1e-5)


@pytest.mark.parametrize("policy, expected", [("median", 50.0), ("mode", 40.0), ("constant", -1.0)])
def test_median_mode_and_constant(tmp_path, policy, expected):
    lines = ["income,region,member,spend"] + [f"{v},north,yes,{i}" for i, v in enumerate([40, 40, 50, 60, 70])]
    lines.append(",south,no,9")
    fill = ", fill: -1" if policy == "constant" else ""
    config = project(
        tmp_path, "\n".join(lines) + "\n", f"  columns:\n    income: {{missing: {policy}{fill}}}\n", name="small"
    )
    config.write_text(config.read_text().replace("exclude: [customer_id]", "validation: 0"))
    schema = check.check(config).data.schema
    assert schema.columns[0].fill == expected


def test_categorical_mode_and_constant_fills_become_categories(tmp_path):
    config = project(tmp_path, customers(region=4), "  columns:\n    region: {missing: constant, fill: unknown}\n")
    schema = check.check(config).data.schema
    assert schema.columns[1].categories == ["east", "north", "south", "unknown"]


def test_a_target_cell_that_is_empty(tmp_path):
    text = customers(spend=10)
    with pytest.raises(
        DataError,
        match=r"shop.csv:3: target 'spend' is empty \(a missing value\); fill it in, or "
        r"set data.columns.spend.missing: drop",
    ):
        check.check(project(tmp_path, text, "  missing: median\n"))  # a fill policy never fills the target
    result = check.check(project(tmp_path, text, "  columns:\n    spend: {missing: drop}\n"), ["data.validation=0"])
    assert len(result.data.train) == 108


def test_unknown_categories_at_predict_time(tmp_path):
    fit.fit(project(tmp_path, customers(), extra=""), out=tmp_path / "strict", overrides=["train.epochs=1"])
    (tmp_path / "new.csv").write_text("income,region,member\n50,north,yes\n50,atlantis,no\n")
    result = runner.invoke(app, ["predict", str(tmp_path / "strict"), str(tmp_path / "new.csv")])
    assert result.exit_code == 2
    assert (
        "new.csv:3: column 'region' has 'atlantis', which training never saw; known values: east, north, "
        "south (to encode unseen values as all zeros, set data.columns.region.unknown: ignore in the config "
        "and train again)"
    ) in " ".join(result.output.split())
    config = project(tmp_path, customers(), "  columns:\n    region: {unknown: ignore}\n")
    fit.fit(config, out=tmp_path / "lenient", overrides=["train.epochs=1"])
    run = dltrain.load(tmp_path / "lenient")
    features, _ = read_features(tmp_path / "new.csv", run.schema, with_target=False)
    assert features[1, 1:4].tolist() == [0.0, 0.0, 0.0] and features[0, 1:4].tolist() == [0.0, 1.0, 0.0]


def test_predict_never_drops_a_row_but_eval_does(tmp_path):
    config = project(tmp_path, customers(), "  columns:\n    income: {missing: drop}\n")
    fit.fit(config, out=tmp_path / "run", overrides=["train.epochs=1"])
    (tmp_path / "new.csv").write_text("income,region,member,spend\n50,north,yes,7\n,south,no,3\n")
    with pytest.raises(
        DataError,
        match=r"new.csv:3: column 'income' is empty \(a missing value\); the model was "
        r"trained without such rows \(missing: drop\)",
    ):
        predict.predict_rows(tmp_path / "run", tmp_path / "new.csv")
    schema = dltrain.load(tmp_path / "run").schema
    features, targets = read_features(tmp_path / "new.csv", schema, with_target=True)
    assert features.shape[0] == 1 and schema.unscale_targets(targets)[0, 0] == pytest.approx(7.0)


def test_a_row_of_empty_cells_is_a_row_at_predict_and_trailing_ones_are_residue(tmp_path):
    # ",,," used to be skipped like a blank line, so predictions stopped lining up with the rows.
    config = project(tmp_path, customers(income=4), "  missing: mode\n")
    fit.fit(config, out=tmp_path / "filled", overrides=["train.epochs=1"])
    strict_config = project(tmp_path, customers(), extra="")
    fit.fit(strict_config, out=tmp_path / "strict", overrides=["train.epochs=1"])
    rows = "income,region,member\n50,north,yes\n,,\n60,south,no\n,,\n,,\n"
    (tmp_path / "new.csv").write_text(rows)
    with pytest.raises(DataError, match=r"new.csv:3: column 'income' is empty \(a missing value\)"):
        predict.predict_rows(tmp_path / "strict", tmp_path / "new.csv")
    schema = dltrain.load(tmp_path / "filled").schema
    features, _ = read_features(tmp_path / "new.csv", schema, with_target=False)
    assert features.shape[0] == 3  # the empty row in the middle kept, the two at the end dropped
    fills = ",".join(str(column.fill) for column in schema.columns)  # the row as the fills make it
    (tmp_path / "filled.csv").write_text(f"income,region,member\n{fills}\n")
    filled, _ = read_features(tmp_path / "filled.csv", schema, with_target=False)
    np.testing.assert_array_equal(features[1], filled[0])
    # eval, like training, skips a row with nothing in it (not even its target)
    (tmp_path / "labelled.csv").write_text("income,region,member,spend\n50,north,yes,7\n,,,\n60,south,no,3\n")
    features, targets = read_features(tmp_path / "labelled.csv", schema, with_target=True)
    assert features.shape[0] == targets.shape[0] == 2


def test_a_mostly_numeric_column_with_a_stray_word_is_an_error_not_a_category(tmp_path):
    text = customers().replace("\nC0005,", "\nC0005,", 1).splitlines()
    parts = text[6].split(",")
    parts[1] = "n.a."
    text[6] = ",".join(parts)
    with pytest.raises(
        DataError,
        match=r"shop.csv:7: column 'income' has 'n.a.', which is not a number, though 119 "
        r"of its 120 values are; if 'n.a.' marks a missing value, add it to data.na_values; else "
        r"fix the cell, or set data.columns.income.type: categorical",
    ):
        check.check(project(tmp_path, "\n".join(text) + "\n"))


def test_given_types_are_enforced(tmp_path):
    with pytest.raises(
        DataError, match="column 'region' has 'north', which is not a number; data.columns.region.type is numeric"
    ):
        check.check(project(tmp_path, customers(), "  columns:\n    region: {type: numeric}\n"))
    with pytest.raises(DataError, match="column 'region' has 'north', which is not true/false"):
        check.check(project(tmp_path, customers(), "  columns:\n    region: {type: boolean}\n"))
    # Integer codes as categories: the text as written is the category.
    text = customers().replace(",north,", ",01,").replace(",south,", ",02,").replace(",east,", ",03,")
    schema = check.check(project(tmp_path, text, "  columns:\n    region: {type: categorical}\n")).data.schema
    assert schema.columns[1].categories == ["01", "02", "03"]


@pytest.mark.parametrize(
    "data_yaml, message",
    [
        (
            "  columns:\n    regoin: {missing: mode}\n",
            r"shop.yaml:8:5: data.columns.regoin: column 'regoin' is not in .*"
            r"shop.csv \(did you mean 'region'\?\)",
        ),
        (
            "  columns:\n    region: {missing: mean}\n",
            r"shop.yaml:8:23: data.columns.region.missing: mean needs a numeric "
            "column and 'region' is categorical; use mode or constant",
        ),
        ("  columns:\n    income: {unknown: ignore}\n", "data.columns.income.unknown: applies to categorical columns"),
        (
            "  columns:\n    income: {missing: constant, fill: lots}\n",
            "income' is numeric, so the fill must be a finite number",
        ),
        ("  columns:\n    spend: {missing: median}\n", "data.columns.spend.missing: a target cannot be filled in"),
        ("  columns:\n    customer_id: {type: categorical}\n", "'customer_id' is excluded by data.exclude"),
        ("  features: [income, customer_id]\n", "lists 'customer_id', which data.exclude excludes"),
    ],
)
def test_column_settings_are_checked_against_the_data(tmp_path, data_yaml, message):
    with pytest.raises(ConfigError, match=message):
        check.check(project(tmp_path, customers(), data_yaml))


def test_the_data_wide_mean_falls_back_to_mode_for_text_columns(tmp_path):
    schema = check.check(project(tmp_path, customers(region=6, income=5), "  missing: mean\n")).data.schema
    assert [column.missing for column in schema.columns] == ["mean", "mode", "mode"]


def test_a_binary_target_uses_one_sigmoid_output(tmp_path):
    text = customers(rows=200).replace(",member,", ",churn,", 1)
    (tmp_path / "churn.csv").write_text(text)
    (tmp_path / "churn.yaml").write_text(
        "name: churn\ndata: {train: churn.csv, target: churn, exclude: [customer_id]}\n"
        "model: {layers: [{units: 8}]}\noptimizer: {name: adam, lr: 0.02}\ntrain: {epochs: 40, batch_size: 16}\n"
    )
    result = fit.fit(tmp_path / "churn.yaml", out=tmp_path / "run")
    assert result.config.loss == "binary_cross_entropy"
    assert result.config.model.output.activation == "sigmoid"
    run = dltrain.load(tmp_path / "run")
    assert run.schema.class_labels == ["no", "yes"] and run.model.n_outputs == 1
    header, rows = predict.predict_rows(tmp_path / "run", tmp_path / "churn.csv")
    assert header == ["churn", "prob_no", "prob_yes"]
    assert np.mean([row[0] == ["yes", "no"][index % 2] for index, row in enumerate(rows)]) > 0.8


def test_multi_output_regression(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    y1, y2 = x @ [1.0, -2.0, 0.5], x @ [0.0, 1.0, 1.0] + 3
    lines = ["a,b,c,y1,y2"] + [f"{a:.4f},{b:.4f},{c:.4f},{p:.4f},{q:.4f}" for (a, b, c), p, q in zip(x, y1, y2)]
    (tmp_path / "multi.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "multi.yaml").write_text(
        "name: multi\ndata: {train: multi.csv, target: [y1, y2]}\nmodel: {layers: []}\n"
        "optimizer: {name: adam, lr: 0.05}\ntrain: {epochs: 60, batch_size: 16}\n"
    )
    result = fit.fit(tmp_path / "multi.yaml", out=tmp_path / "run")
    assert result.config.task == "regression" and result.config.loss == "mse"
    assert result.metrics["validation"]["r2"] > 0.98
    header, rows = predict.predict_rows(tmp_path / "run", tmp_path / "multi.csv")
    assert header == ["y1", "y2"] and len(rows[0]) == 2
    predicted = np.array(rows, dtype=float)
    np.testing.assert_allclose(predicted[:, 1], y2, atol=0.3)
    metrics, _ = evaluate.evaluate_run(tmp_path / "run", tmp_path / "multi.csv")
    assert metrics["r2"] > 0.98
    with pytest.raises(ConfigError, match="several targets mean multi-output regression"):
        check.check(tmp_path / "multi.yaml", ["task=classification"])


def test_an_unseen_class_at_eval_names_label_line_and_known_classes(tmp_path):
    text = customers().replace("customer_id,income,region,member,spend", "customer_id,income,label,member,spend")
    (tmp_path / "c.csv").write_text(text)
    (tmp_path / "c.yaml").write_text(
        "name: c\ndata: {train: c.csv, target: label, exclude: [customer_id]}\ntrain: {epochs: 1}\n"
    )
    fit.fit(tmp_path / "c.yaml", out=tmp_path / "run")
    (tmp_path / "odd.csv").write_text("income,label,member,spend\n50,north,yes,1\n\n50,west,no,2\n")
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), str(tmp_path / "odd.csv")])
    assert result.exit_code == 2
    assert (
        "odd.csv:4: target 'label' has class 'west', which training never saw; known classes: east, north, "
        "south" in result.output
    )


def test_numeric_class_labels_match_however_they_are_written(tmp_path):
    lines = ["x,label"] + [f"{index % 7},{index % 3}" for index in range(90)]
    (tmp_path / "n.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "n.yaml").write_text("name: n\ndata: {train: n.csv, target: label}\ntrain: {epochs: 1}\n")
    fit.fit(tmp_path / "n.yaml", out=tmp_path / "run")
    (tmp_path / "eval.csv").write_text("x,label\n1,1.0\n2, 2\n3,0\n")
    schema = dltrain.load(tmp_path / "run").schema
    assert schema.class_labels == ["0", "1", "2"]
    assert read_features(tmp_path / "eval.csv", schema, with_target=True)[1].tolist() == [1, 2, 0]


def test_old_run_schemas_without_column_encodings_still_load():
    old = {
        "target": "y",
        "task": "regression",
        "feature_names": ["a", "b"],
        "class_labels": [],
        "binary": False,
        "scaler": {"method": "standard", "offset": [0.0, 1.0], "divisor": [1.0, 2.0]},
    }
    schema = DataSchema.from_dict(old)
    assert schema.n_inputs == 2 and [column.type for column in schema.columns] == ["numeric", "numeric"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda data: data["scaler"].update(offset=[0.0]), "scaler.offset: has 1 values for 5 model inputs"),
        (lambda data: data["columns"][1].update(type="text"), "columns[1].type: must be one of numeric, categorical"),
        (lambda data: data["columns"][1].update(categories=[]), "columns[1].categories: a categorical column without"),
        (lambda data: data.update(target=7), "target: must be a column name or a list of them (got 7)"),
        (
            lambda data: data["scaler"].update(divisor=[1.0, 0.0, 1.0, 1.0, 1.0]),
            "scaler.divisor: holds NaN, infinite or zero",
        ),
    ],
)
def test_a_damaged_stored_schema_is_refused(tmp_path, change, message):
    fit.fit(project(tmp_path, customers()), out=tmp_path / "run", overrides=["train.epochs=1"])
    data = dltrain.load(tmp_path / "run").schema.to_dict()
    change(data)
    with pytest.raises(ArtifactError, match=re.escape(f"model.json: {message}")) as refused:
        DataSchema.read(Path("model.json"), data)
    assert refused.value.hint == "the file is damaged or was changed; train again"


@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_scaling_of_filled_columns_equals_the_statistics_of_the_filled_values(tmp_path, scale):
    """The fills' share is added to the present cells' statistics, not by filling a copy: the
    result equals NumPy's mean/std (or min/range) of the training values once filled, for
    columns with empty cells, with none, and with only one present value."""
    from dltrain.data.parsed import Columns
    from dltrain.data.statistics import present_values

    rng = np.random.default_rng(4)
    matrix = (rng.standard_normal((9_000, 4)) * [1, 1e4, 1e-3, 5] + [0, 7e5, 0, -3]).astype(np.float32)
    matrix[rng.random(9_000) < 0.2, 0] = np.nan
    matrix[rng.random(9_000) < 0.5, 1] = np.nan
    matrix[1:, 3] = np.nan  # one present value
    columns = Columns(Path("x.csv"), np.arange(9_000), ["a", "b", "c", "d"], matrix)
    rows = np.sort(rng.permutation(9_000)[:7_000])
    fills = np.array([0.5, 123.25, np.nan, -2.0])
    present = present_values(columns, ["a", "b", "c", "d"], rows, scale)
    offset, spread = present.filled(["a", "b", "c", "d"], fills, len(rows), scale)
    values = matrix[rows].astype(np.float64)
    values = np.where(np.isnan(values), fills, values)
    if scale == "standard":
        expected = values.mean(axis=0), values.std(axis=0)
    else:
        expected = values.min(axis=0), values.max(axis=0) - values.min(axis=0)
    np.testing.assert_allclose(offset, expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(spread, expected[1], rtol=1e-9, atol=1e-12)
    assert present.count.tolist() == np.count_nonzero(~np.isnan(matrix[rows]), axis=0).tolist()
