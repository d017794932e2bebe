"""The engine's registries are the single source of truth: the config reads options and
defaults from the engine classes, and a loss carries its own rules."""

from __future__ import annotations

import inspect
import typing

import pytest

from dltrain.config import DenseSpec, DropoutSpec, OptimizerSpec, ScheduleSpec
from dltrain.config import specs as config_specs
from dltrain.engine.layers import LAYERS
from dltrain.engine.losses import LOSSES, default_loss
from dltrain.engine.optimizers import COMMON_DEFAULTS, OPTIMIZERS
from dltrain.engine.schedules import SCHEDULES


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_option_and_default_comes_from_the_engine_class(name):
    engine = OPTIMIZERS[name].options()
    spec = OptimizerSpec(name=name)
    assert set(spec.engine_options()) == set(engine) | set(COMMON_DEFAULTS)
    for option, default in {**engine, **COMMON_DEFAULTS}.items():
        assert getattr(spec, option) == default, option


def test_one_default_learning_rate_for_engine_and_config():
    defaults = {inspect.signature(cls).parameters["lr"].default for cls in OPTIMIZERS.values()}
    assert defaults == {COMMON_DEFAULTS["lr"]}
    assert OptimizerSpec().lr == COMMON_DEFAULTS["lr"]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_schedule_option_and_default_comes_from_the_engine_class(name):
    engine = SCHEDULES[name].options()
    spec = ScheduleSpec(name=name)
    assert set(spec.engine_options()) == set(engine) | {"warmup_epochs"}
    for option, default in engine.items():
        assert getattr(spec, option) == default, option


def test_an_engine_option_with_two_defaults_is_caught():
    class Odd:
        @staticmethod
        def options():
            return {"eps": 1e-3}

    with pytest.raises(AssertionError, match="eps"):
        config_specs._engine_defaults(list(OPTIMIZERS.values()) + [Odd])


def test_the_config_names_exactly_the_registered_layers():
    layer_types = {typing.get_args(spec.model_fields["type"].annotation)[0] for spec in (DenseSpec, DropoutSpec)}
    assert layer_types == set(LAYERS)


@pytest.mark.parametrize(
    "task,n_classes,expected",
    [("regression", 0, "mse"), ("classification", 2, "binary_cross_entropy"), ("classification", 7, "cross_entropy")],
)
def test_each_loss_carries_its_rules(task, n_classes, expected):
    loss = LOSSES[default_loss(task, n_classes)]
    assert loss.name == expected
    assert loss.task_problem(task, n_classes) is None
    assert loss.activation_problem(loss.default_activation) is None


def test_a_loss_names_the_problem_in_words():
    assert (
        LOSSES["cross_entropy"].activation_problem("sigmoid") == "cross_entropy needs a softmax output (got 'sigmoid')"
    )
    assert LOSSES["mse"].activation_problem("softmax") == "softmax is for classes; use linear for regression"
    assert "use cross_entropy" in LOSSES["binary_cross_entropy"].task_problem("classification", 3)
    assert "use mse for regression" in LOSSES["binary_cross_entropy"].task_problem("regression", 0)


def test_parameters_are_named_by_layer_and_old_numbered_files_still_load():
    import numpy as np

    from dltrain.engine.model import Sequential

    hidden = [
        {"type": "dense", "units": 5, "activation": "relu"},
        {"type": "dropout", "rate": 0.5},
        {"type": "dense", "units": 4, "activation": "tanh"},
    ]
    model = Sequential.build(
        3, hidden, 2, "softmax", init_rng=np.random.default_rng(0), dropout_rng=np.random.default_rng(1)
    )
    assert list(model.params) == ["dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b", "dense_2.W", "dense_2.b"]
    assert [row[0] for row in model.summary()[1:4]] == ["dense_0 (relu)", "dropout_0 (rate 0.5)", "dense_1 (tanh)"]
    # Before names, keys were layer positions with the activations as layers of their own:
    # dense 0, relu 1, dropout 2, dense 3, tanh 4, output dense 5.
    saved = {key: np.full(value.shape, index, value.dtype) for index, (key, value) in enumerate(model.params.items())}
    old_numbers = {"dense_0": "0", "dense_1": "3", "dense_2": "5"}
    model.load_state({f"{old_numbers[key.split('.')[0]]}.{key.split('.')[1]}": value for key, value in saved.items()})
    for key, value in saved.items():
        assert np.array_equal(model.params[key], value), key
    with pytest.raises(KeyError, match="missing"):
        model.load_state({"0.W": saved["dense_0.W"]})


# A spec of every registered layer type, as the config writes it.
_LAYER_SPECS = {
    "dense": {"type": "dense", "units": 6, "activation": "relu"},
    "dropout": {"type": "dropout", "rate": 0.5},
}


def test_there_is_a_sample_spec_of_every_registered_layer():
    assert set(_LAYER_SPECS) == set(LAYERS)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_knows_its_parameter_shapes_and_width_before_it_is_built(kind):
    """The memory estimate reads them from the spec alone (nothing allocated), for any layer type."""
    import numpy as np

    spec = _LAYER_SPECS[kind]
    layer = LAYERS[kind].from_spec(spec, 5, {"init": np.random.default_rng(0), "dropout": None}, np.float32)
    assert LAYERS[kind].param_shapes(spec, 5) == {name: value.shape for name, value in layer.params.items()}
    assert LAYERS[kind].spec_units(spec, 5) == layer.output_units(5)


def test_the_model_lists_the_parameter_shapes_of_every_layer_that_has_some():
    from dltrain.engine.model import Sequential

    hidden = [_LAYER_SPECS["dense"], _LAYER_SPECS["dropout"], {"type": "dense", "units": 4, "activation": "tanh"}]
    assert Sequential.param_shapes(3, hidden, 2) == [
        (0, "dense", 3, 6, {"W": (3, 6), "b": (6,)}),
        (2, "dense", 6, 4, {"W": (6, 4), "b": (4,)}),
        (None, "dense", 4, 2, {"W": (4, 2), "b": (2,)}),
    ]
