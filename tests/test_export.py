"""`dltrain export`: the ONNX graph from raw CSV columns equals `dltrain predict`, and refuses what it must."""

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import dltrain  # noqa: E402
from dltrain.cli import app  # noqa: E402
from dltrain.commands import export, fit, predict  # noqa: E402
from dltrain.data import MISSING_TOKENS, read_features  # noqa: E402
from dltrain.data.csv import FLOAT32_MAX  # noqa: E402
from dltrain.engine.activations import ACTIVATIONS  # noqa: E402
from dltrain.engine.layers import LAYERS  # noqa: E402
from dltrain.errors import DltrainError  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["breast_cancer", "diabetes", "digits", "iris"]
BOOLEAN_WORDS = {"true": 1.0, "yes": 1.0, "t": 1.0, "y": 1.0, "false": 0.0, "no": 0.0, "f": 0.0, "n": 0.0}


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def cell_number(cell, missing=MISSING_TOKENS):
    """A numeric or boolean cell as the model's float input: NaN when empty or a missing-value token."""
    if cell in missing:
        return np.nan
    return BOOLEAN_WORDS[cell.lower()] if cell.lower() in BOOLEAN_WORDS else float(cell)


def raw_inputs(session, csv_path):
    """The feed a user builds from a CSV: each input column's stripped cells, the column's
    missing-value tokens (from the model's metadata) as NaN in float inputs."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    meta = session.get_modelmeta().custom_metadata_map
    tokens, own = json.loads(meta["missing_tokens"]), json.loads(meta["column_missing_tokens"])
    feed = {}
    for item in session.get_inputs():
        cells = [row[item.name].strip() for row in rows]
        if item.type == "tensor(string)":
            feed[item.name] = np.array(cells, dtype=object).reshape(-1, 1)
        else:
            numbers = [cell_number(cell, set(own.get(item.name, tokens))) for cell in cells]
            feed[item.name] = np.array(numbers, dtype=np.float32).reshape(-1, 1)
    return feed


def session_for(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def engine_outputs(run_dir, csv_path):
    """predict's probabilities (or values) at full precision, and its printed rows."""
    loaded = dltrain.load(run_dir)
    features, _ = read_features(csv_path, loaded.schema, with_target=False)
    outputs = loaded.model.predict(features)
    if loaded.schema.task == "regression":  # in the target's units, as predict writes them
        outputs = loaded.schema.unscale_targets(outputs.astype(np.float64))
    if loaded.schema.binary:
        outputs = np.column_stack([1.0 - outputs[:, 0], outputs[:, 0]])
    return outputs, predict.predict_rows(run_dir, csv_path)


def assert_matches_predict(run_dir, model_path, csv_path):
    session = session_for(model_path)
    outputs = dict(zip([item.name for item in session.get_outputs()], session.run(None, raw_inputs(session, csv_path))))
    expected, (header, rows) = engine_outputs(run_dir, csv_path)
    if "prediction" in outputs:
        np.testing.assert_allclose(outputs["prediction"], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["prediction"], [[float(v) for v in row] for row in rows], rtol=1e-5)
        return outputs
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=0, atol=1e-5)
    printed = np.array([[float(value) for value in row[1:]] for row in rows])
    np.testing.assert_allclose(outputs["probabilities"], printed, rtol=0, atol=1e-5)
    assert [str(label) for label in outputs["label"]] == [row[0] for row in rows]
    return outputs


@pytest.fixture(scope="module")
def shipped_runs(tmp_path_factory):
    """Each shipped config trained for a few epochs (exporting does not need a good model)."""
    folder = tmp_path_factory.mktemp("shipped")
    runs = {}
    for name in SHIPPED:
        fit.fit(ROOT / "configs" / f"{name}.yaml", ["train.epochs=3", "data.cache=false"], out=folder / name)
        runs[name] = folder / name
    return runs


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_dataset_exports_and_equals_predict_on_the_raw_csv(name, shipped_runs, root, tmp_path):
    model_path = tmp_path / f"{name}.onnx"
    result = run("export", shipped_runs[name], "--out", model_path)
    assert result.exit_code == 0, result.output
    assert re.search(r"equal to dltrain predict on \d+ verification rows", result.output)
    outputs = assert_matches_predict(shipped_runs[name], model_path, root / "data" / f"{name}.csv")
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    schema = dltrain.load(shipped_runs[name]).schema
    assert [item.name for item in model.graph.input] == schema.feature_names
    if schema.task == "classification":
        assert [item.name for item in model.graph.output] == ["label", "probabilities"]
        assert outputs["probabilities"].shape[1] == len(schema.class_labels)
        assert np.all(np.isfinite(outputs["probabilities"]))
    else:
        assert [item.name for item in model.graph.output] == ["prediction"]


def test_every_shipped_config_is_covered(root):
    assert {path.stem for path in (root / "configs").glob("*.yaml")} - {"fashion_mnist"} == set(SHIPPED)


def test_integer_and_text_labels_keep_their_type(shipped_runs, tmp_path):
    for name, label_type in (("digits", np.integer), ("iris", str), ("breast_cancer", str)):
        model_path = tmp_path / f"{name}.onnx"
        export.export_run(shipped_runs[name], model_path)
        session = session_for(model_path)
        feed = {item.name: np.zeros((2, 1), dtype=np.float32) for item in session.get_inputs()}
        labels = session.run(["label"], feed)[0]
        assert isinstance(labels[0], label_type), (name, type(labels[0]))


# ---------------------------------------------------------------- categorical columns and missing cells


def shop_csv(rows, seed, blanks=True, unseen=False):
    """Numeric, categorical and boolean columns with empty cells; a three-class text target."""
    rng = np.random.default_rng(seed)
    lines = ["income,age,region,plan,member,segment"]
    for index in range(rows):
        region = ["north", "south", "east", "west"][index % 4]
        plan = ["basic", "plus", "pro"][index % 3]
        member = ["yes", "no"][index % 2]
        income = 30 + rng.random() * 40
        age = 20 + rng.random() * 50
        score = income / 10 + {"north": 2, "south": -2, "east": 0, "west": 1}[region] + (1.5 if member == "yes" else 0)
        segment = "low" if score < 5 else "mid" if score < 7 else "high"
        cells = [f"{income:.2f}", f"{age:.1f}", region, plan, member, segment]
        if blanks:
            for column, every in ((0, 7), (1, 5), (2, 6), (3, 4), (4, 9)):
                if index % every == 3:
                    cells[column] = ""
        if unseen and index % 10 == 2:
            cells[2] = "central"
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


SHOP_COLUMNS = (
    "  columns:\n    income: {missing: mean}\n    age: {missing: median}\n"
    "    region: {missing: mode, unknown: ignore}\n    plan: {missing: constant, fill: basic}\n"
    "    member: {missing: mode}\n"
)


def shop_project(tmp_path, columns=SHOP_COLUMNS, layers="[{units: 8}]", target="segment", text=None):
    (tmp_path / "shop.csv").write_text(text or shop_csv(200, 0))
    (tmp_path / "shop.yaml").write_text(
        f"name: shop\nseed: 0\ndata:\n  train: shop.csv\n  target: {target}\n  cache: false\n{columns}"
        f"model: {{layers: {layers}}}\noptimizer: {{name: adam, lr: 0.02}}\ntrain: {{epochs: 5, batch_size: 16}}\n"
    )
    return tmp_path / "shop.yaml"


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    fit.fit(shop_project(folder), out=folder / "run")
    return folder


def test_categorical_columns_and_missing_cells_equal_predict(shop_run, tmp_path):
    schema = dltrain.load(shop_run / "run").schema
    assert [column.type for column in schema.columns] == ["numeric", "numeric", "categorical", "categorical", "boolean"]
    model_path = tmp_path / "shop.onnx"
    result = run("export", shop_run / "run", "--out", model_path)
    assert result.exit_code == 0, result.output
    new = tmp_path / "new.csv"
    new.write_text(shop_csv(60, 1, unseen=True))  # empty cells everywhere, and a region training never saw
    outputs = assert_matches_predict(shop_run / "run", model_path, new)
    assert np.all(np.isfinite(outputs["probabilities"]))
    session = session_for(model_path)
    assert [item.name for item in session.get_inputs()] == schema.feature_names
    types = {item.name: item.type for item in session.get_inputs()}
    assert types == {
        "income": "tensor(float)",
        "age": "tensor(float)",
        "region": "tensor(string)",
        "plan": "tensor(string)",
        "member": "tensor(float)",
    }


def test_regression_with_categorical_columns_equals_predict(tmp_path):
    text = shop_csv(150, 2).replace(",segment\n", ",spend\n", 1)
    text = (
        "\n".join(
            line if index == 0 else f"{line.rsplit(',', 1)[0]},{index % 17 * 1.5 + 3}"
            for index, line in enumerate(text.splitlines())
        )
        + "\n"
    )
    config = shop_project(tmp_path, target="spend", text=text)
    fit.fit(config, out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(shop_csv(40, 3, unseen=True))
    assert_matches_predict(tmp_path / "run", tmp_path / "run" / "model.onnx", new)


def test_multi_output_regression_gives_one_prediction_column_per_target(tmp_path):
    text = shop_csv(120, 6, blanks=False)
    fit.fit(shop_project(tmp_path, columns="", target="[income, age]", text=text), out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(shop_csv(30, 7, blanks=False))
    outputs = assert_matches_predict(tmp_path / "run", tmp_path / "run" / "model.onnx", new)
    assert outputs["prediction"].shape == (30, 2)
    meta = {prop.key: prop.value for prop in onnx.load(str(tmp_path / "run" / "model.onnx")).metadata_props}
    assert json.loads(meta["target_names"]) == ["income", "age"] and meta["task"] == "regression"


def test_unknown_error_and_unfilled_cells_give_nan_rows_where_predict_refuses(tmp_path):
    config = shop_project(tmp_path, columns="", text=shop_csv(120, 0, blanks=False))
    fit.fit(config, out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0
    session = session_for(tmp_path / "run" / "model.onnx")
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "income,age,region,plan,member\n50,30,north,basic,yes\n50,30,central,basic,yes\n"
        ",30,north,basic,yes\n50,30,,basic,yes\n50,30,north,basic,\n50,30,north,basic,maybe\n"
        "50,inf,north,basic,yes\n"
    )
    cells = list(csv.DictReader(rows.open()))
    feed = {}
    for item in session.get_inputs():
        values = [row[item.name] for row in cells]
        if item.type == "tensor(string)":
            feed[item.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            # "maybe" stands for a boolean cell that is neither 0 nor 1.
            numbers = [2.0 if value == "maybe" else cell_number(value) for value in values]
            feed[item.name] = np.array(numbers, dtype=np.float32).reshape(-1, 1)
    labels, probabilities = session.run(["label", "probabilities"], feed)
    assert np.all(np.isfinite(probabilities[0])) and labels[0] != ""
    assert np.all(np.isnan(probabilities[1:])), probabilities
    assert list(labels[1:]) == [""] * 6
    meta = {prop.key: prop.value for prop in onnx.load(str(tmp_path / "run" / "model.onnx")).metadata_props}
    assert json.loads(meta["invalid_label"]) == ""
    (tmp_path / "one.csv").write_text("income,age,region,plan,member\n50,30,central,basic,yes\n")
    refused = run("predict", tmp_path / "run", tmp_path / "one.csv")
    assert refused.exit_code == 2 and "training never saw" in refused.output


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.scale=none"],
        ["data.scale=minmax"],
        ["data.features=[region, plan]"],
        ["data.features=[member]"],
        ["data.features=[age, member]"],
    ],
)
def test_other_scalings_and_column_mixes_export_and_equal_predict(overrides, tmp_path):
    features = re.findall(r"\w+", overrides[0].split("=")[1]) if "features" in overrides[0] else None
    lines = [
        line for line in SHOP_COLUMNS.splitlines()[1:] if features is None or line.split(":")[0].strip() in features
    ]
    fit.fit(shop_project(tmp_path, columns="  columns:\n" + "\n".join(lines) + "\n"), overrides, out=tmp_path / "run")
    result = run("export", tmp_path / "run")
    assert result.exit_code == 0, result.output
    new = tmp_path / "new.csv"
    new.write_text(shop_csv(40, 5, unseen=True))
    outputs = assert_matches_predict(tmp_path / "run", tmp_path / "run" / "model.onnx", new)
    assert_lowest_opset(onnx.load(str(tmp_path / "run" / "model.onnx")))
    schema = dltrain.load(tmp_path / "run").schema
    if all(column.type != "categorical" for column in schema.columns):  # booleans go in the features tensor too
        assert run("export", tmp_path / "run", "--inputs", "features", "--out", tmp_path / "f.onnx").exit_code == 0
        columns = raw_inputs(session_for(tmp_path / "run" / "model.onnx"), new)
        features = np.column_stack([columns[name] for name in schema.feature_names])
        probabilities = session_for(tmp_path / "f.onnx").run(["probabilities"], {"features": features})[0]
        np.testing.assert_array_equal(probabilities, outputs["probabilities"])


def test_unknown_ignore_encodes_an_unseen_category_as_all_zeros(shop_run):
    loaded = dltrain.load(shop_run / "run")
    model = export.build_model(loaded)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cells = {"income": ["50"], "age": ["30"], "region": ["central"], "plan": ["pro"], "member": ["yes"]}
    feed = export.onnx_inputs(loaded.schema, cells, "columns")
    probabilities = session.run(["probabilities"], feed)[0]
    # The same row with region's one-hot block left at zeros, through the engine.
    schema = loaded.schema
    features = np.zeros((1, schema.n_inputs), dtype=np.float32)
    names = schema.input_names
    features[0, names.index("income")] = 50.0
    features[0, names.index("age")] = 30.0
    features[0, names.index("plan=pro")] = 1.0
    features[0, names.index("member")] = 1.0
    expected = loaded.model.predict(schema.transform(features))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


# ---------------------------------------------------------------- hostile rows: huge numbers, NA tokens, overflow

NA_TOKENS = sorted(MISSING_TOKENS)


@pytest.fixture(scope="module")
def shop_model(shop_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("shop_onnx") / "shop.onnx"
    export.export_run(shop_run / "run", path)
    return path


def test_huge_numbers_beside_a_boolean_column_equal_predict(shop_run, shop_model, tmp_path):
    # The boolean check x (x - 1) once overflowed on a numeric 1e20 (inf, times the mask's 0: NaN).
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "income,age,region,plan,member\n1e20,30,north,basic,yes\n-1e20,30,south,pro,no\n"
        "50,1e20,east,plus,yes\n1e20,-1e20,west,basic,no\n3.3e38,1e30,north,pro,yes\n"
    )
    outputs = assert_matches_predict(shop_run / "run", shop_model, rows)
    assert np.all(np.isfinite(outputs["probabilities"]))


def test_every_na_token_is_a_missing_cell_in_the_graph_as_in_predict(shop_run, shop_model, tmp_path):
    # predict fills NA, N/A, null, None... in every column kind; the graph took them for categories.
    lines = ["income,age,region,plan,member"]
    for index, token in enumerate(NA_TOKENS):
        cells = ["55", "40", ["north", "south"][index % 2], ["pro", "plus"][index % 2], "yes"]
        for column in (2, 3, 4, index % 2):  # both categoricals, the boolean, and a numeric column
            cells[column] = token
        lines.append(",".join(cells))
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    outputs = assert_matches_predict(shop_run / "run", shop_model, rows)
    assert np.all(np.isfinite(outputs["probabilities"]))
    meta = {prop.key: prop.value for prop in onnx.load(str(shop_model)).metadata_props}
    assert json.loads(meta["missing_tokens"]) == NA_TOKENS and meta["decimal"] == "."


def test_a_row_that_overflows_is_refused_by_the_graph_as_by_predict(shipped_runs, tmp_path):
    model_path = tmp_path / "iris.onnx"
    export.export_run(shipped_runs["iris"], model_path)
    schema = dltrain.load(shipped_runs["iris"]).schema
    inside = [0.9 * FLOAT32_MAX * min(float(divisor), 1.0) for divisor in schema.divisor]  # finite once scaled
    rows = [[5.1, 3.5, 1.4, 0.2], [3.0e38, 3.0, 1.0, 0.2], inside]
    session = session_for(model_path)
    feed = {name: np.array([[row[index]] for row in rows], dtype=np.float32) for index, name in enumerate(HEADER)}
    labels, probabilities = session.run(["label", "probabilities"], feed)
    assert np.all(np.isfinite(probabilities[0])) and labels[0] != ""
    assert np.all(np.isnan(probabilities[1:])) and list(labels[1:]) == ["", ""]
    for row in rows[1:]:
        (tmp_path / "one.csv").write_text(",".join(HEADER) + "\n" + ",".join(repr(value) for value in row) + "\n")
        refused = run("predict", shipped_runs["iris"], tmp_path / "one.csv")
        assert refused.exit_code == 2 and "one.csv:2:" in refused.output


HEADER = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_the_self_check_holds_huge_numbers_and_every_na_token(shop_run):
    schema = dltrain.load(shop_run / "run").schema
    cells = export.verification_rows(schema)
    for column in schema.columns:  # every column of the shop model has a fill
        assert set(NA_TOKENS) <= set(cells[column.name]), column.name
    holds = [what for what, _ in export.hostile_rows(schema)]
    assert holds[:3] == ["every number 1e+20", "every number -1e+20", "every number 3e+38"]


def _old_boolean_check(graph, block, is_boolean):
    off_one = graph.node("Mul", [block, graph.node("Sub", [block, graph.constant("one", np.float32(1.0))])])
    return graph.node("Mul", [graph.node("Abs", [off_one]), graph.constant("boolean_mask", is_boolean)])


@pytest.mark.parametrize(
    "patch", [("_boolean_check", _old_boolean_check), ("_missing_cells", lambda schema, name, categories: [""])]
)
def test_the_self_check_refuses_a_graph_that_mishandles_hostile_rows(patch, shop_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export.inputs, *patch)
    result = run("export", shop_run / "run", "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1, result.output
    assert "disagrees with dltrain predict on verification row" in result.output
    if patch[0] == "_boolean_check":  # the numeric 1e20 beside the boolean column
        assert "(every number 1e+20)" in result.output
    else:  # a categorical cell holding an NA token
        assert any(f"={token!r}" in result.output for token in NA_TOKENS if token)
    assert not (tmp_path / "x.onnx").exists()


def test_the_self_check_refuses_a_graph_that_answers_an_overflowing_row(shipped_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(
        export.outputs, "_overflowed", lambda graph, outputs, width: graph.constant("no", np.zeros((1, 1), bool))
    )
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1, result.output
    assert "(every number 3e+38)" in result.output and "where dltrain predict refuses the row" in result.output


def test_declared_markers_are_missing_in_the_graph_as_in_predict(tmp_path):
    # data.na_values ("?", "-999") and a column's own marker: as text in every column kind, and
    # a number marker whatever its spelling (-999.0) in a numeric one.
    columns = SHOP_COLUMNS.replace("age: {missing: median}", "age: {missing: median, na_values: ['--']}")
    config = shop_project(tmp_path, columns="  na_values: ['?', '-999']\n" + columns)
    fit.fit(config, out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0, "the self-check meets every marker"
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "income,age,region,plan,member\n?,30,north,basic,yes\n-999,?,?,pro,no\n-999.0,--,south,?,?\n"
        "-999.00,40,east,plus,yes\n55,-999,west,basic,no\n"
    )
    model = tmp_path / "run" / "model.onnx"
    outputs = assert_matches_predict(tmp_path / "run", model, rows)
    assert np.all(np.isfinite(outputs["probabilities"]))
    meta = {prop.key: prop.value for prop in onnx.load(str(model)).metadata_props}
    assert {"?", "-999"} <= set(json.loads(meta["missing_tokens"])) and "--" not in json.loads(meta["missing_tokens"])
    assert "--" in json.loads(meta["column_missing_tokens"])["age"]


# ---------------------------------------------------------------- the features input, every activation


def test_numeric_only_model_takes_one_features_tensor(shipped_runs, root, tmp_path):
    model_path = tmp_path / "iris.onnx"
    result = run("export", shipped_runs["iris"], "--out", model_path, "--inputs", "features")
    assert result.exit_code == 0, result.output
    model = onnx.load(str(model_path))
    assert [item.name for item in model.graph.input] == ["features"]
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert meta["input_form"] == "features"
    session = session_for(model_path)
    columns_model = tmp_path / "columns.onnx"
    export.export_run(shipped_runs["iris"], columns_model)
    columns = raw_inputs(session_for(columns_model), root / "data" / "iris.csv")
    names = json.loads(meta["feature_names"])
    features = np.column_stack([columns[name] for name in names])
    labels, probabilities = session.run(["label", "probabilities"], {"features": features})
    expected, (_, rows) = engine_outputs(shipped_runs["iris"], root / "data" / "iris.csv")
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert list(labels) == [row[0] for row in rows]


def test_features_input_is_refused_for_categorical_columns(shop_run, tmp_path):
    result = run("export", shop_run / "run", "--out", tmp_path / "x.onnx", "--inputs", "features")
    assert result.exit_code == 2
    assert "categorical columns (region, plan)" in result.output and "--inputs columns" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_every_engine_activation_has_an_export_equal_to_its_forward():
    assert set(ACTIVATIONS) <= set(export.ACTIVATION_EXPORTS)
    z = np.concatenate([np.linspace(-30, 30, 241), [-1e-3, 0.0, 1e-3]]).astype(np.float32).reshape(-1, 4)
    for name, activation in ACTIVATIONS.items():
        graph = export.GraphBuilder(onnx)
        result = export.ACTIVATION_EXPORTS[name](graph, "z")
        if result == "z":
            result = graph.node("Identity", ["z"])
        graph.nodes[-1].output[0] = "a"
        model = onnx.helper.make_model(
            onnx.helper.make_graph(
                graph.nodes,
                name,
                [onnx.helper.make_tensor_value_info("z", 1, [None, 4])],
                [onnx.helper.make_tensor_value_info("a", 1, [None, 4])],
                graph.initializers,
            ),
            opset_imports=[onnx.helper.make_opsetid("", 17)],
        )
        model.ir_version = 8
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
        expected = activation.forward(z.copy())
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


# An example spec for each engine layer type; a new type needs one here, and an export entry.
LAYER_EXAMPLES = {
    "dense": {"type": "dense", "units": 3, "activation": "tanh"},
    "dropout": {"type": "dropout", "rate": 0.5},
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_engine_layer_type_has_an_export_equal_to_its_inference_forward(kind):
    assert set(LAYERS) == set(export.LAYER_EXPORTS) == set(LAYER_EXAMPLES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    layer = LAYERS[kind].from_spec(LAYER_EXAMPLES[kind], 4, {"init": rng, "dropout": rng}, np.float32)
    expected = layer.forward(x, training=False)
    graph = export.GraphBuilder(onnx)
    if export.LAYER_EXPORTS[kind](graph, layer, "x", 0, None) == "x":
        graph.node("Identity", ["x"])
    graph.nodes[-1].output[0] = "y"
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes,
            kind,
            [onnx.helper.make_tensor_value_info("x", 1, [None, 4])],
            [onnx.helper.make_tensor_value_info("y", 1, [None, expected.shape[1]])],
            graph.initializers,
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_layer_type_the_exporter_lacks_is_refused_by_name(shipped_runs, tmp_path, monkeypatch):
    monkeypatch.delitem(export.LAYER_EXPORTS, "dense")
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert "the layer 'dense' (layer 0) cannot be expressed in ONNX" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_the_exact_gelu_entry_is_ready_for_an_erf_gelu():
    import math

    graph = export.GraphBuilder(onnx)
    export.network._gelu_erf(graph, "z")
    graph.nodes[-1].output[0] = "a"
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes,
            "gelu",
            [onnx.helper.make_tensor_value_info("z", 1, [None])],
            [onnx.helper.make_tensor_value_info("a", 1, [None])],
            graph.initializers,
        ),
        opset_imports=[onnx.helper.make_opsetid("", 9)],
    )
    model.ir_version = 4
    z = np.linspace(-8, 8, 161).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    expected = [0.5 * value * (1 + math.erf(value / math.sqrt(2))) for value in z.astype(np.float64)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_network_with_every_hidden_activation_and_dropout_exports(tmp_path, root):
    hidden = ", ".join(f"{{units: 6, activation: {name}}}" for name in sorted(ACTIVATIONS) if name != "softmax")
    config = shop_project(tmp_path, layers=f"[{hidden}, {{type: dropout, rate: 0.3}}, {{units: 5}}]")
    fit.fit(config, out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(shop_csv(30, 4, unseen=True))
    assert_matches_predict(tmp_path / "run", tmp_path / "run" / "model.onnx", new)


def test_target_scaling_statistics_are_inverted_in_the_graph(shipped_runs):
    loaded = dltrain.load(shipped_runs["diabetes"])
    loaded.manifest["data"]["target_scaler"] = {"method": "standard", "offset": [150.0], "divisor": [75.0]}
    session = ort.InferenceSession(export.build_model(loaded).SerializeToString(), providers=["CPUExecutionProvider"])
    cells = export.verification_rows(loaded.schema)
    got = session.run(["prediction"], export.onnx_inputs(loaded.schema, cells, "columns"))[0]
    features = export.onnx_inputs(loaded.schema, cells, "features")["features"]
    expected = loaded.model.predict(loaded.schema.transform(features)) * 75.0 + 150.0
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for method in ("log", "minmax"):  # minmax scales features only, never targets
        loaded.manifest["data"]["target_scaler"] = {"method": method}
        with pytest.raises(DltrainError, match=f"the target scaling '{method}' cannot be expressed in ONNX"):
            export.build_model(loaded)


# ---------------------------------------------------------------- opset and metadata


def assert_lowest_opset(model):
    """The model passes the full check at its opset and fails it one opset lower."""
    onnx.checker.check_model(model, full_check=True)
    opset = model.opset_import[0].version
    assert opset == max(export.OPERATOR_SINCE[("", node.op_type)] for node in model.graph.node if node.domain == "")
    lower = onnx.ModelProto()
    lower.CopyFrom(model)
    lower.opset_import[0].version = opset - 1
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(lower, full_check=True)


def test_opset_is_the_lowest_holding_every_operator_and_metadata_is_complete(shipped_runs, shop_run, tmp_path):
    for run_dir in (shipped_runs["breast_cancer"], shop_run / "run"):
        loaded = dltrain.load(run_dir)
        model = export.build_model(loaded)
        assert_lowest_opset(model)
        meta = {prop.key: prop.value for prop in model.metadata_props}
        assert meta["model_sha256"] == loaded.manifest["model_sha256"]
        assert meta["dltrain_version"] == dltrain.__version__
        assert json.loads(meta["feature_names"]) == loaded.schema.feature_names
        assert json.loads(meta["feature_kinds"]) == [column.type for column in loaded.schema.columns]
        assert json.loads(meta["class_labels"]) == loaded.schema.class_labels
        assert json.loads(meta["target_names"]) == loaded.schema.targets
        assert meta["input_form"] == "columns" and meta["task"] == "classification"
    ml = {item.domain: item.version for item in export.build_model(dltrain.load(shop_run / "run")).opset_import}
    assert ml["ai.onnx.ml"] == 2


def test_operator_table_matches_the_onnx_schemas():
    for (domain, op), since in export.OPERATOR_SINCE.items():
        assert onnx.defs.get_schema(op, since, domain).since_version <= since, op


def test_a_chosen_opset_is_used_and_a_too_low_or_unknown_one_is_refused(shipped_runs, tmp_path):
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "a.onnx", "--opset", "17")
    assert result.exit_code == 0, result.output
    assert onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 17
    low = run("export", shipped_runs["iris"], "--out", tmp_path / "b.onnx", "--opset", "8")
    assert low.exit_code == 2 and re.search(r"--opset 8: this model needs opset \d+ or later \(for .*Where", low.output)
    high = run("export", shipped_runs["iris"], "--out", tmp_path / "b.onnx", "--opset", "99")
    assert high.exit_code == 2 and "knows opsets up to" in high.output
    assert not (tmp_path / "b.onnx").exists()


# ---------------------------------------------------------------- refusals


def test_an_existing_out_is_refused_unless_forced(shipped_runs, tmp_path):
    target = tmp_path / "iris.onnx"
    target.write_bytes(b"keep me")
    refused = run("export", shipped_runs["iris"], "--out", target)
    assert refused.exit_code == 2 and "already exists; pass --force" in refused.output
    assert target.read_bytes() == b"keep me"
    forced = run("export", shipped_runs["iris"], "--out", target, "--force")
    assert forced.exit_code == 0, forced.output
    onnx.checker.check_model(onnx.load(str(target)))
    weights = shipped_runs["iris"] / "model.npz"
    before = weights.read_bytes()
    own = run("export", shipped_runs["iris"], "--out", weights, "--force")
    assert own.exit_code == 2 and "is a file of the run folder" in own.output
    assert weights.read_bytes() == before


def test_a_missing_onnx_extra_is_one_message_with_the_pip_command(shipped_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert "pip install '.[onnx]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_format_input_form_and_missing_run_folder_are_refused(shipped_runs, tmp_path):
    fmt = run("export", shipped_runs["iris"], "--format", "tflite", "--out", tmp_path / "x")
    assert fmt.exit_code == 2 and "'--format'" in fmt.output and "'tflite' is not one of 'onnx'" in fmt.output
    form = run("export", shipped_runs["iris"], "--inputs", "matrix", "--out", tmp_path / "x")
    assert form.exit_code == 2 and "'matrix' is not one of 'columns', 'features'" in form.output
    missing = run("export", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "run folder not found" in missing.output


def test_a_graph_that_disagrees_with_predict_is_not_written(shipped_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(export.ACTIVATION_EXPORTS, "relu", export.ACTIVATION_EXPORTS["linear"])
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1, result.output
    assert re.search(r"disagrees with dltrain predict on verification row \d+ \(sepal_length=", result.output)
    assert not (tmp_path / "x.onnx").exists()


def test_an_activation_the_exporter_lacks_is_refused_by_name(shipped_runs, tmp_path, monkeypatch):
    monkeypatch.delitem(export.ACTIVATION_EXPORTS, "relu")
    result = run("export", shipped_runs["iris"], "--out", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert "the activation 'relu' cannot be expressed in ONNX" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_a_feature_named_like_an_output_is_refused(tmp_path):
    text = shop_csv(80, 0, blanks=False).replace("plan,", "label,", 1)
    fit.fit(shop_project(tmp_path, columns="", text=text), out=tmp_path / "run")
    result = run("export", tmp_path / "run")
    assert result.exit_code == 2 and "feature column 'label'" in result.output


# ---------------------------------------------------------------- the README's snippet


def readme_snippet(root):
    section = (root / "README.md").read_text().split("## Export to ONNX", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_onnxruntime_snippet_runs(root, tmp_path, monkeypatch):
    snippet = readme_snippet(root)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "iris.csv").write_text((root / "data" / "iris.csv").read_text())
    fit.fit(root / "configs" / "iris.yaml", ["train.epochs=3"], out=tmp_path / "runs" / "iris")
    assert run("export", tmp_path / "runs" / "iris").exit_code == 0
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    _, rows = predict.predict_rows(tmp_path / "runs" / "iris", tmp_path / "data" / "iris.csv")
    assert [str(label) for label in namespace["labels"]] == [row[0] for row in rows]
    np.testing.assert_allclose(namespace["probabilities"], [[float(v) for v in row[1:]] for row in rows], atol=1e-5)


def semicolons(text, tokens=()):
    """A shop CSV as a European spreadsheet writes it: ';' between cells, decimal commas; with
    ``tokens``, row i has cell i % 5 replaced by tokens[i % len(tokens)]."""
    lines = []
    for index, line in enumerate(text.splitlines()):
        cells = [cell.replace(".", ",") for cell in line.split(",")]
        if tokens and index:
            cells[index % 5] = tokens[index % len(tokens)]
        lines.append(";".join(cells))
    return "\n".join(lines) + "\n"


def test_the_readme_snippet_reads_a_semicolon_file_with_na_cells_as_predict_does(root, tmp_path, monkeypatch):
    # It crashed on both: csv.DictReader split at commas, and float("NA").
    dialect = "  delimiter: ';'\n  decimal: ','\n"
    config = shop_project(tmp_path, columns=dialect + SHOP_COLUMNS, text=semicolons(shop_csv(150, 0)))
    fit.fit(config, out=tmp_path / "run")
    assert run("export", tmp_path / "run").exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(semicolons(shop_csv(40, 1), tokens=[token for token in NA_TOKENS if token]))
    assert "NA" in new.read_text() and "N/A" in new.read_text()
    snippet = readme_snippet(root).replace("runs/iris/model.onnx", str(tmp_path / "run" / "model.onnx"))
    namespace = {}
    exec(compile(snippet.replace("data/iris.csv", str(new)), "README.md", "exec"), namespace)
    _, rows = predict.predict_rows(tmp_path / "run", new)
    assert [str(label) for label in namespace["labels"]] == [row[0] for row in rows]
    np.testing.assert_allclose(namespace["probabilities"], [[float(v) for v in row[1:]] for row in rows], atol=1e-5)
    assert np.all(np.isfinite(namespace["probabilities"]))
