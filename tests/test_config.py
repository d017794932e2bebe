"""Config loading: line-numbered messages, suggestions, duplicates, --set, round trips."""

import pytest
import yaml

from dltrain.config import Config, dump_config, load_config, parse_override
from dltrain.errors import ConfigError

BASE = """name: demo
seed: 0
data:
  train: data.csv
  target: y
"""


def _write(tmp_path, text, name="demo.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), overrides)
    return str(caught.value)


def test_minimal_config_fills_every_default(tmp_path):
    config, base_dir, _ = load_config(_write(tmp_path, BASE))
    assert base_dir == tmp_path
    assert config.optimizer.name == "adam" and config.optimizer.lr == 0.001
    assert config.train.epochs == 100 and config.train.batch_size == 32
    assert config.data.validation == 0.2 and config.data.scale == "standard"
    assert config.model.layers == [] and config.loss == "auto" and config.task == "auto"


def test_negative_units_names_file_line_column_key_and_value(tmp_path):
    message = _error(tmp_path, BASE + "model:\n  layers:\n    - {units: -3, activation: relu}\n")
    assert message == "demo.yaml:8:15: model.layers[0].units: must be > 0 (got -3)".replace(
        "demo.yaml", str(tmp_path / "demo.yaml")
    )


def test_typo_in_key_suggests_the_nearest_valid_key(tmp_path):
    message = _error(tmp_path, BASE + "model:\n  layers:\n    - units: 4\n      activaton: relu\n")
    assert ":9:7: model.layers[0].activaton: unknown key (did you mean 'activation'?)" in message
    assert "rate" not in message  # dropout's keys are not offered for a dense layer


def test_typo_in_value_suggests_the_nearest_choice(tmp_path):
    message = _error(tmp_path, BASE + "optimizer: {name: adma}\n")
    assert "optimizer.name: must be one of gd, sgd, adam, rmsprop (got 'adma') (did you mean 'adam'?)" in message


def test_every_problem_is_reported_once(tmp_path):
    message = _error(tmp_path, BASE + "train:\n  epochs: 0\n  batch_size: many\n  shufle: true\n")
    lines = message.splitlines()
    assert len(lines) == 3
    assert "train.epochs: must be > 0 (got 0)" in lines[0]
    assert "train.batch_size: must be a whole number (got 'many')" in lines[1]
    assert "train.shufle: unknown key (did you mean 'shuffle'?)" in lines[2]


def test_missing_required_key(tmp_path):
    message = _error(tmp_path, "name: demo\ndata:\n  train: data.csv\n")
    assert "data.target: required key 'target' is missing; add a line such as `target: label`" in message
    assert ":3:3:" in message  # points into the data mapping


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path):
    message = _error(tmp_path, BASE + "seed: 1\n")
    assert ":6:1: duplicate key 'seed' (first at line 2)" in message


def test_invalid_yaml_names_the_line(tmp_path):
    message = _error(tmp_path, BASE + "model: [\n")
    assert "invalid YAML" in message and "demo.yaml:" in message


def test_optimizer_options_must_belong_to_the_optimizer(tmp_path):
    assert "momentum not used by optimizer 'adam'" in _error(
        tmp_path, BASE + "optimizer: {name: adam, momentum: 0.9}\n"
    )
    assert "nesterov needs momentum > 0" in _error(tmp_path, BASE + "optimizer: {name: sgd, nesterov: true}\n")


def test_validation_fraction_bounds(tmp_path):
    message = _error(tmp_path, BASE.replace("target: y", "target: y\n  validation: 1.5"))
    assert "data.validation: must be a fraction >= 0 and < 1, or a CSV path (got 1.5)" in message


def test_bad_run_name(tmp_path):
    assert "name: must use only letters" in _error(tmp_path, BASE.replace("name: demo", "name: ../evil"))


def test_empty_and_non_mapping_configs(tmp_path):
    assert "the config is empty" in _error(tmp_path, "")
    assert "must be a mapping" in _error(tmp_path, "- 1\n- 2\n")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_set_overrides_any_key_with_the_same_validation(tmp_path):
    path = _write(tmp_path, BASE + "model:\n  layers:\n    - {units: 8}\n")
    config, _, _ = load_config(
        path,
        [
            "train.epochs=7",
            "model.layers[0].units=16",
            "optimizer.name=sgd",
            "model.layers.1={type: dropout, rate: 0.5}",
        ],
    )
    assert config.train.epochs == 7
    assert config.model.layers[0].units == 16
    assert config.model.layers[1].rate == 0.5
    assert config.optimizer.name == "sgd"
    with pytest.raises(ConfigError, match=r"^--set train.epochs=-1: train.epochs: must be > 0 \(got -1\)$"):
        load_config(path, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match="no value; write --set train.epochs=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["=3"])
    with pytest.raises(ConfigError, match=r"model.layers\[5\] does not exist"):
        load_config(path, ["model.layers[5].units=3"])


def test_parse_override_types():
    assert parse_override("a.b=1e-3") == (("a", "b"), 1e-3)
    assert parse_override("a=[1, 2]") == (("a",), [1, 2])
    assert parse_override("a.b[2].c=text") == (("a", "b", 2, "c"), "text")
    assert parse_override("a=null") == (("a",), None)


def test_dump_and_load_round_trip(tmp_path):
    path = _write(
        tmp_path,
        BASE + "model:\n  layers:\n    - {units: 8, activation: tanh}\n    - {type: dropout, rate: 0.1}\n"
        "optimizer: {name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}\n",
    )
    config, _, _ = load_config(path)
    again = Config.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=.inf", "optimizer.lr: must be a finite number"),
        ("optimizer={lr: 0.01, schedule: {name: cosine, min_lr: 1.0}}", "schedule.min_lr (1) must be below lr (0.01)"),
        ("optimizer.schedule={name: step, warmup_epochs: 5}", "warmup_epochs (5) must be below train.epochs (5)"),
    ],
)
def test_learning_rates_that_cannot_work_are_refused(tmp_path, override, message):
    (tmp_path / "c.yaml").write_text("name: m\ndata: {train: d.csv, target: y}\ntrain: {epochs: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml", [override])
    assert message in str(caught.value)
