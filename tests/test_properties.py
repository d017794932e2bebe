"""Properties over generated inputs: any YAML or CSV is a model or one of dltrain's own errors."""

import json
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import bounded
from dltrain.commands import check, fit, predict
from dltrain.config import Config, dump_config, load_config
from dltrain.data.csv import CsvFile
from dltrain.engine.activations import ACTIVATIONS
from dltrain.errors import DltrainError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- arbitrary YAML

KEYS = [
    "name",
    "seed",
    "data",
    "train",
    "target",
    "features",
    "exclude",
    "validation",
    "test",
    "scale",
    "delimiter",
    "missing",
    "fill",
    "columns",
    "type",
    "unknown",
    "cache",
    "task",
    "model",
    "layers",
    "units",
    "activation",
    "output",
    "loss",
    "optimizer",
    "lr",
    "epochs",
    "batch_size",
    "x",
    "y",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["relu", "adam", "csv", "auto", "\t", ";", "drop"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children, max_size=5),
    ),
    max_leaves=25,
)


@FAST
@given(document=documents)
def test_any_yaml_document_is_a_config_or_a_config_error(tmp_path, document):
    path = tmp_path / "any.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        load_config(path)
    except DltrainError as error:
        assert str(error)


@FAST
@given(text=st.text(alphabet=string.printable + "éü：\u00a0", max_size=200))
def test_any_text_as_a_config_is_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "any.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except DltrainError as error:
        assert str(error)


# ---------------------------------------------------------------- YAML structure and --set values

VALID_START = "name: any\ndata: {train: any.csv, target: y}\n"


@st.composite
def yaml_structures(draw, depth=0):
    """YAML text of odd structure: anchors and aliases (also undefined, recursive, or nested
    into a bomb), merge keys, non-scalar and non-text keys, deep nesting in both styles."""
    kind = draw(
        st.sampled_from(
            ["scalar", "flow_list", "flow_map", "alias", "anchor", "deep", "complex_key", "merge", "bomb"]
            if depth < 3
            else ["scalar", "alias", "deep"]
        )
    )
    if kind == "scalar":
        return draw(
            st.sampled_from(
                [
                    "1",
                    "-3",
                    ".inf",
                    ".nan",
                    "~",
                    "true",
                    "x",
                    "'a: b'",
                    '"\\x00"',
                    "1e400",
                    "0x10",
                    "!!binary aGk=",
                    "!!set {a, b}",
                    "!!omap [a: 1]",
                    "[]",
                    "{}",
                ]
            )
        )
    if kind == "flow_list":
        return "[" + ", ".join(draw(st.lists(yaml_structures(depth + 1), max_size=3))) + "]"
    if kind == "flow_map":
        keys = draw(st.lists(st.sampled_from(["a", "units", "1", "~", "true", "[x]", "{k: v}", "<<"]), max_size=3))
        return "{" + ", ".join(f"? {key} : {draw(yaml_structures(depth + 1))}" for key in keys) + "}"
    if kind == "alias":
        return "*" + draw(st.sampled_from(["a", "b", "undefined"]))
    if kind == "anchor":
        name = draw(st.sampled_from(["a", "b"]))
        return (
            f"&{name} [{draw(yaml_structures(depth + 1))}, *{name}]"
            if draw(st.booleans())
            else f"&{name} {draw(yaml_structures(depth + 1))}"
        )
    if kind == "deep":
        levels = draw(st.integers(1, 200))
        return "[" * levels + "1" + "]" * levels if draw(st.booleans()) else "{a: " * levels + "1" + "}" * levels
    if kind == "complex_key":
        return f"{{? [{draw(yaml_structures(depth + 1))}] : 1}}"
    if kind == "merge":
        return f"{{<<: {draw(st.sampled_from(['*a', '[*a, *b]', '{x: 1}', '1']))}, units: 2}}"
    width, levels = draw(st.integers(2, 50)), draw(st.integers(2, 9))
    parts = [f"&l0 [{', '.join(['x'] * width)}]"]
    parts += [f"&l{level} [{', '.join([f'*l{level - 1}'] * width)}]" for level in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@FAST
@given(
    key=st.sampled_from(["model", "train", "data", "extra", "model.layers", "data.columns", "optimizer"]),
    value=yaml_structures(),
)
@example(key="extra", value="&l0 [x, x, x, x, x, x, x, x, x, x]")
def test_any_yaml_structure_in_a_config_is_a_config_or_a_config_error(tmp_path, key, value):
    text = VALID_START.replace("data: {train: any.csv, target: y}\n", "") if key.startswith("data") else VALID_START
    if "." in key:
        parent, child = key.split(".")
        text += f"{parent}:\n  {child}: {value}\n"
    else:
        text += f"{key}: {value}\n"
    path = tmp_path / "any.yaml"
    path.write_text(text)
    with bounded(seconds=10, memory=1 << 30):
        try:
            load_config(path)
        except DltrainError as error:
            assert str(error) and "Traceback" not in str(error)


@FAST
@given(
    key=st.sampled_from(
        ["train", "train.epochs", "model.layers", "model.layers[0]", "data.columns.x", "optimizer.lr", "name", "data"]
    ),
    value=st.one_of(yaml_structures(), st.text(max_size=30)),
)
@example(key="train", value="{epochs: 1, epochs: 2}")
@example(key="model.layers[0]", value="{? [a] : 1}")
def test_any_set_value_is_a_config_or_a_config_error(tmp_path, key, value):
    path = tmp_path / "any.yaml"
    path.write_text(VALID_START + "model: {layers: [{units: 2}]}\n")
    with bounded(seconds=10, memory=1 << 30):
        try:
            load_config(path, [f"{key}={value}"])
        except DltrainError as error:
            assert str(error)


# ---------------------------------------------------------------- arbitrary CSV

CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "2.5",
            "-3",
            "nan",
            "NA",
            "inf",
            "yes",
            "no",
            "red",
            "blue",
            '"q,"',
            "1e300",
            "1e39",
            "2.5\x00",
            "0",
            " 7 ",
            '"',
            'a"b',
        ]
    ),
    st.text(alphabet='ab1,;\t|"\r\n .-', max_size=4),
)


@st.composite
def csv_texts(draw):
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    n_columns = draw(st.integers(1, 4))
    header = draw(st.lists(st.sampled_from(["a", "b", "y", "", "a "]), min_size=n_columns, max_size=n_columns))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=n_columns + 1), max_size=12))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    body = newline.join(delimiter.join(row) for row in [header] + rows)
    return draw(st.sampled_from(["", "\ufeff"])) + body + draw(st.sampled_from(["", newline, newline * 3]))


@FAST
@given(text=csv_texts())
def test_any_csv_text_is_read_or_refused_with_a_data_error(tmp_path, text):
    path = tmp_path / "any.csv"
    path.write_bytes(text.encode("utf-8"))
    try:
        table = CsvFile.open(path)
        columns = table.read(numeric=table.header)
    except DltrainError as error:
        assert str(error)
        return
    assert columns.matrix.shape[0] == columns.n_rows > 0
    assert np.all(np.diff(columns.lines) > 0)  # every row knows its line, in file order


def _read_or_error(path, request):
    try:
        columns = CsvFile.open(path).read(**request(CsvFile.open(path).header))
    except DltrainError as error:
        return str(error)
    return (
        columns.numeric_names,
        columns.matrix.tobytes(),
        sorted(columns.text),
        [values.tolist() for values in columns.text.values()],
        columns.lines.tolist(),
    )


@FAST
@given(text=csv_texts(), as_text=st.booleans())
@example(text="a\n;\r\t", as_text=False)  # a one-column file ending in a line of only a tab
def test_numpy_and_the_csv_module_read_any_csv_alike(tmp_path, text, as_text):
    path = tmp_path / "any.csv"
    path.write_bytes(text.encode("utf-8"))

    def request(header):
        names = list(dict.fromkeys(header))
        return {"numeric": names[1:], "text": names[:1]} if as_text else {"numeric": names}

    fast = _read_or_error(path, request)
    original = CsvFile._parse_fast
    CsvFile._parse_fast = lambda *args: None
    try:
        slow = _read_or_error(path, request)
    finally:
        CsvFile._parse_fast = original
    assert fast == slow


@FAST
@given(
    text=csv_texts(),
    task=st.sampled_from(["auto", "classification", "regression"]),
    missing=st.sampled_from(["error", "drop", "median", "mode"]),
)
def test_any_csv_through_check_trains_or_refuses_with_a_dltrain_error(tmp_path, text, task, missing):
    (tmp_path / "any.csv").write_bytes(text.encode("utf-8"))
    (tmp_path / "any.yaml").write_text(
        f"name: any\ndata: {{train: any.csv, target: y, validation: 0.25, missing: {missing}, cache: false}}\n"
        f"task: {task}\nmodel: {{layers: [{{units: 2}}]}}\ntrain: {{epochs: 1}}\n"
    )
    try:
        result = check.check(tmp_path / "any.yaml")
    except DltrainError as error:
        assert str(error)
        return
    assert np.all(np.isfinite(result.data.train.in_memory().features))


@FAST
@given(data=st.data())
def test_predict_on_any_csv_gives_rows_or_a_dltrain_error(trained_mixed_run, tmp_path, data):
    text = data.draw(csv_texts())
    header = data.draw(st.sampled_from(["size,colour,member", "colour;size", "size,colour,member,label"]))
    text = header + "\n" + text.split("\n", 1)[-1]
    (tmp_path / "new.csv").write_bytes(text.encode("utf-8"))
    try:
        header_out, rows = predict.predict_rows(trained_mixed_run, tmp_path / "new.csv")
    except DltrainError as error:
        assert str(error)
        return
    assert header_out[0] == "label" and all(len(row) == len(header_out) for row in rows)


# ---------------------------------------------------------------- configs round trip

names = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=6)
column_specs = st.one_of(
    st.builds(dict, type=st.sampled_from(["numeric", "categorical", "boolean"])),
    st.builds(dict, missing=st.sampled_from(["error", "drop", "mean", "median", "mode"])),
    st.builds(
        dict,
        missing=st.just("constant"),
        fill=st.one_of(st.integers(-9, 9), st.floats(-1, 1), st.sampled_from(["none", "n/a"]), st.booleans()),
    ),
    st.builds(dict, type=st.just("categorical"), unknown=st.sampled_from(["error", "ignore"])),
)
valid_configs = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True),
        "seed": st.integers(0, 2**31),
        "data": st.fixed_dictionaries(
            {
                "train": st.sampled_from(["a.csv", "../data/x y.csv"]),
                "target": st.one_of(names, st.lists(names, min_size=1, max_size=3, unique=True)),
                "exclude": st.lists(names, max_size=3, unique=True),
                "validation": st.one_of(st.floats(0, 0.9), st.just("val.csv")),
                "delimiter": st.sampled_from([None, ",", ";", "\t", "|"]),
                "missing": st.sampled_from(["error", "drop", "mean", "median", "mode"]),
                "columns": st.dictionaries(names, column_specs, max_size=3),
                "cache": st.booleans(),
            }
        ),
        "task": st.sampled_from(["auto", "classification", "regression"]),
        "model": st.fixed_dictionaries(
            {
                "layers": st.lists(
                    st.one_of(
                        st.builds(dict, units=st.integers(1, 64), activation=st.sampled_from(["relu", "tanh", "gelu"])),
                        st.builds(dict, type=st.just("dropout"), rate=st.floats(0, 0.9)),
                    ),
                    max_size=3,
                )
            }
        ),
        "optimizer": st.one_of(
            st.builds(dict, name=st.just("adam"), lr=st.floats(1e-5, 1)),
            st.builds(dict, name=st.just("sgd"), lr=st.floats(1e-5, 1), momentum=st.floats(0, 0.99)),
        ),
    }
)


@FAST
@given(document=valid_configs)
@example(
    document={
        "name": "0E0",
        "data": {"train": "a.csv", "target": "y"},
        "model": {"layers": []},
        "optimizer": {"name": "adam"},
    }
)  # text the loader could take for a number
def test_a_dumped_config_loads_back_unchanged(tmp_path, document):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML with every string quoted: the document as meant
    config, _, _ = load_config(path)
    path.write_text(dump_config(config))
    again, _, _ = load_config(path)
    assert again == config
    assert Config.model_validate(yaml.safe_load(dump_config(again))) == config


# ---------------------------------------------------------------- softmax


@FAST
@given(
    logits=st.integers(1, 6).flatmap(
        lambda width: st.lists(
            st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=width, max_size=width),
            min_size=1,
            max_size=5,
        )
    )
)
def test_softmax_rows_sum_to_one_for_any_finite_logits(logits):
    z = np.asarray(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        probabilities = ACTIVATIONS["softmax"].forward(z)
    assert np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def trained_mixed_run(tmp_path_factory):
    """A tiny classifier on a numeric, a categorical and a boolean column."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    lines = ["size,colour,member,label"]
    for index in range(60):
        colour = ["red", "green", "blue"][index % 3]
        member, label = ("yes" if index % 2 else "no"), ("big" if index % 4 < 2 else "small")
        lines.append(f"{rng.normal():.3f},{colour},{member},{label}")
    (folder / "mixed.csv").write_text("\n".join(lines) + "\n")
    (folder / "mixed.yaml").write_text(
        "name: mixed\ndata:\n  train: mixed.csv\n  target: label\n  columns:\n"
        "    colour: {unknown: ignore, missing: mode}\n    size: {missing: mean}\n"
        "model: {layers: [{units: 4}]}\ntrain: {epochs: 2}\n"
    )
    fit.fit(folder / "mixed.yaml", out=folder / "run")
    return folder / "run"
