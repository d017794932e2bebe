"""The search space: a config's ``tune:`` section as a plan, every entry checked before any trial."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pydantic import ValidationError

from ..config import (
    Config,
    ConfigSource,
    RangeSpec,
    TuneSpec,
    apply_override,
    build_config,
    closest_match,
    describe_layers,
    parse_override,
    read_config_data,
    validation_message,
)
from ..errors import ConfigError
from ..metrics import higher_is_better, logged_names

FEATURES_PARAM = "features.k"


def choice_label(choice):
    """Optuna stores choices as scalars: a list or mapping (a whole architecture) becomes its JSON."""
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


def readable_choice(choice) -> str:
    """A choice as people write it: an architecture as "128 relu, 64 relu", anything else as YAML would."""
    layers = describe_layers(choice)
    if layers is not None:
        return layers
    if choice is None or isinstance(choice, bool):
        return json.dumps(choice)
    return str(choice) if isinstance(choice, (int, float, str)) else json.dumps(choice)


@dataclass
class Dimension:
    """One entry of ``tune.space``: a key path and its range or choices."""

    key: str
    path: tuple
    spec: RangeSpec | list

    @property
    def labels(self) -> list:
        return [choice_label(choice) for choice in self.spec]

    def suggest(self, trial):
        spec = self.spec
        if isinstance(spec, list):
            labels = self.labels
            return spec[labels.index(trial.suggest_categorical(self.key, labels))]
        if spec.integer:
            return trial.suggest_int(self.key, spec.low, spec.high, step=spec.step or 1, log=spec.log)
        return trial.suggest_float(self.key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)

    def value_of(self, label):
        """A stored parameter as a config value (an architecture's JSON label back to its list)."""
        return self.spec[self.labels.index(label)] if isinstance(self.spec, list) else label

    def described(self) -> dict:
        """What ``dltrain plot`` needs to draw the parameter: a range's ends and scale, or the
        choices in the config's order, each as stored and as people read it."""
        spec = self.spec
        if isinstance(spec, list):
            return {"kind": "choice", "choices": self.labels, "labels": [readable_choice(choice) for choice in spec]}
        return {"kind": "range", "log": spec.log}


class EntrySource(ConfigSource):
    """Points errors about a value from ``tune.space`` at that entry of the config file."""

    def __init__(self, base: ConfigSource, paths: list, where: str):
        super().__init__(base.name, base.positions, {})
        self.base, self.paths, self.entry_where = base, paths, where

    def where(self, path, key=False) -> str:
        if any(tuple(path[: len(prefix)]) == prefix for prefix in self.paths):
            return self.entry_where
        return self.base.where(path, key)


@dataclass
class SearchPlan:
    """A validated search: the config as written, its ``tune:`` section and the space's dimensions."""

    config_path: Path
    base_dir: Path
    source: ConfigSource
    raw: dict
    config: Config
    tune: TuneSpec
    dimensions: list = field(default_factory=list)

    @property
    def direction(self) -> str:
        """Optuna's word for the metric's direction, from its name (val_accuracy up, val_loss down)."""
        return "maximize" if higher_is_better(self.tune.metric) else "minimize"

    @property
    def parameter_keys(self) -> list:
        """Every parameter a trial draws, in the order trials.csv shows them."""
        keys = [dimension.key for dimension in self.dimensions]
        return keys + [FEATURES_PARAM] if self.tune.features == "select" else keys

    def config_with(self, values: dict, features: list | None = None) -> Config:
        """The config with sampled values applied through the same validation as ``--set``."""
        data = copy.deepcopy(self.raw)
        for dimension in self.dimensions:
            if dimension.key in values:
                apply_override(
                    data,
                    dimension.path,
                    copy.deepcopy(values[dimension.key]),
                    f"{dimension.key}={values[dimension.key]!r}",
                )
        if features is not None:
            data.setdefault("data", {})["features"] = list(features)
        try:
            return Config.model_validate(data)
        except ValidationError as error:
            raise ConfigError(validation_message(error, data, self.source)) from None

    def network_of(self, config: Config) -> str | None:
        """The hidden layers a trial's config trains, as people write them, when the space changes them."""
        if not any(dimension.path[:2] == ("model", "layers") for dimension in self.dimensions):
            return None
        return describe_layers(config.model.layers)

    def parameters(self) -> dict:
        """Every parameter a trial draws, described for ``dltrain plot`` (study.json)."""
        described = {dimension.key: dimension.described() for dimension in self.dimensions}
        if self.tune.features == "select":
            described[FEATURES_PARAM] = {"kind": "range", "log": False}
        return described

    def values_of(self, params: dict) -> dict:
        """A trial's stored parameters as config values."""
        return {
            dimension.key: dimension.value_of(params[dimension.key])
            for dimension in self.dimensions
            if dimension.key in params
        }

    def space_signature(self) -> str:
        signature: dict = {
            "metric": self.tune.metric,
            "features": self.tune.features,
            "space": {
                key: (entry.model_dump() if isinstance(entry, RangeSpec) else entry)
                for key, entry in self.tune.space.items()
            },
        }
        # Means over K folds compare with no other values; a study without cv keeps its signature.
        if self.tune.cv:
            signature["cv"] = self.tune.cv
        return json.dumps(signature, sort_keys=True)

    def grid_space(self) -> dict:
        space = {dimension.key: dimension.labels for dimension in self.dimensions}
        if self.tune.features == "select":
            space[FEATURES_PARAM] = list(range(1, len(self.config.data.features or []) + 1)) or [1]
        return space

    def grid_size(self, n_columns: int) -> int:
        size = math.prod(len(dimension.spec) for dimension in self.dimensions)
        return size * (n_columns if self.tune.features == "select" else 1)


def load_plan(config_path, device: str | None = None) -> SearchPlan:
    """Read a config with a ``tune:`` section and check every entry of its space before any trial.
    ``device`` (--device: auto, cpu or cuda) replaces its ``train.device``, in every trial."""
    config_path = Path(config_path)
    data, positions = read_config_data(config_path)
    if device is not None and isinstance(data.get("train", {}), dict):
        data = {**data, "train": {**data.get("train", {}), "device": device}}
    source = ConfigSource(str(config_path), positions, {})
    config = build_config(data, source)
    if config.tune is None:
        raise ConfigError(
            f"{config_path}: no tune: section to search; add one, e.g.\n"
            "tune:\n  metric: val_loss\n  trials: 20\n  space:\n"
            "    optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n(see docs/tune.md)"
        )
    if not config.tune.space and config.tune.features != "select":
        raise source.fail(
            ("tune",),
            "nothing to search; give tune.space (e.g. optimizer.lr: "
            "{low: 1.0e-4, high: 1.0e-1, log: true}) or features: select",
            key=True,
        )
    raw = {key: value for key, value in data.items() if key != "tune"}
    plan = SearchPlan(config_path, config_path.parent, source, raw, config, config.tune)
    plan.dimensions = [_dimension(source, key, entry) for key, entry in config.tune.space.items()]
    for dimension in plan.dimensions:
        _check_dimension(plan, dimension)
    _check_warmup(plan)
    return plan


def _check_warmup(plan: SearchPlan):
    """A warm-up as long as the training would turn the pruner off without a word."""
    tune, epochs = plan.tune, plan.config.train.epochs
    searched = any(dimension.path == ("train", "epochs") for dimension in plan.dimensions)
    if tune.pruner != "none" and tune.pruner_warmup is not None and tune.pruner_warmup >= epochs and not searched:
        raise plan.source.fail(
            ("tune", "pruner_warmup"),
            f"{tune.pruner_warmup} epochs is not below train.epochs ({epochs}), so no trial could ever be "
            "pruned; lower it, or set pruner: none to turn pruning off",
        )


def _check_step(where: str, key: str, spec: RangeSpec):
    """Optuna would quietly shrink a range whose step does not divide it (a warning per trial)."""
    if spec.step is None:
        return
    low, high, step = (Decimal(str(value)) for value in (spec.low, spec.high, spec.step))
    steps = (high - low) / step
    if steps == steps.to_integral_value():
        return
    last = low + int(steps) * step
    raise ConfigError(
        f"{where}: tune.space.{key}: step {spec.step:g} does not divide the range {spec.low:g} to "
        f"{spec.high:g} (the largest value drawn would be {last}); set high to {last} or "
        f"{last + step}, or choose a step that divides high - low"
    )


def _dimension(source: ConfigSource, key: str, entry) -> Dimension:
    where = source.where(("tune", "space", key), key=True)
    try:
        path, _ = parse_override(f"{key}=0")
    except ConfigError:
        raise ConfigError(
            f"{where}: tune.space: {key!r} is not a key path; write it as --set takes it, "
            "e.g. optimizer.lr or model.layers[0].units"
        ) from None
    if path[0] in ("tune", "name") or path[:2] in (("data", "train"), ("data", "target")):
        raise ConfigError(
            f"{where}: tune.space.{key}: {'.'.join(map(str, path))} cannot be searched; "
            "search model, optimizer, train or data preprocessing settings"
        )
    if isinstance(entry, list):
        labels = [choice_label(choice) for choice in entry]
        repeated = next((choice for choice, label in zip(entry, labels) if labels.count(label) > 1), None)
        if repeated is not None:
            raise ConfigError(f"{where}: tune.space.{key}: lists {repeated!r} twice; give each choice once")
    else:
        _check_step(where, key, entry)
    return Dimension(key, path, entry)


def _check_dimension(plan: SearchPlan, dimension: Dimension):
    """Every choice and both ends of a range must give a valid config (with each choice of an entry
    that replaces a folder above this one, e.g. whole architectures under model.layers)."""
    where = plan.source.where(("tune", "space", dimension.key), key=True)
    spec = dimension.spec
    values = spec if isinstance(spec, list) else [spec.low, spec.high]
    parents = [
        other
        for other in plan.dimensions
        if isinstance(other.spec, list)
        and len(other.path) < len(dimension.path)
        and dimension.path[: len(other.path)] == other.path
    ]
    bases = [[]] if not parents else [[(parents[0], choice)] for choice in parents[0].spec]
    source = EntrySource(plan.source, [dimension.path] + [parent.path for parent in parents], where)
    for base in bases:
        for value in values:
            data = copy.deepcopy(plan.raw)
            try:
                for parent, choice in base:
                    apply_override(data, parent.path, copy.deepcopy(choice), parent.key)
                apply_override(data, dimension.path, copy.deepcopy(value), dimension.key)
            except ConfigError as error:
                detail = str(error).split(": ", 1)[-1]
                raise ConfigError(f"{where}: tune.space.{dimension.key}: {detail}") from None
            try:
                config = Config.model_validate(data)
            except ValidationError as error:
                message = validation_message(error, data, source)
                raise ConfigError(
                    f"{message}\n(the value {value!r} of tune.space.{dimension.key} does not "
                    "give a valid config; change that entry)"
                ) from None
            problem = _impossible_trial(plan, config)
            if problem and not _impossible_trial(plan, plan.config):  # else the config as written is to blame
                raise ConfigError(
                    f"{where}: tune.space.{dimension.key}: the value {value!r} {problem}; change that entry"
                )


def _impossible_trial(plan: SearchPlan, config: Config) -> str | None:
    """What makes a valid config unusable as a trial: no validation data (unless the folds of
    tune.cv supply it), a metric it does not log."""
    no_validation = not isinstance(config.data.validation, str) and not config.data.validation
    if no_validation and not plan.tune.cv:
        return "leaves no validation data, and tune scores every trial on validation data"
    metric = plan.tune.metric.removeprefix("val_")
    metrics = config.train.metrics
    if metrics is not None and metric != "loss" and metric not in metrics:
        return f"leaves {plan.tune.metric} unlogged (train.metrics is {metrics}), and tune.metric needs it"
    return None


def check_data(plan: SearchPlan, data, config: Config):
    """The search needs validation data (the folds of tune.cv bring their own), and a metric that fit
    logs (``data``: the prepared data)."""
    if data.validation is None and not plan.tune.cv:
        raise plan.source.fail(
            ("data", "validation"),
            "tune scores every trial "
            "on validation data and there is none; set data.validation to a fraction of the "
            "training rows (e.g. 0.2) or to a labelled CSV path, or score trials by cross-validation "
            "(tune.cv: 5)",
        )
    logged = logged_names(config.train.metrics, has_validation=True)
    metric = plan.tune.metric
    if metric not in logged:
        raise plan.source.fail(
            ("tune", "metric"),
            f"{metric!r} is not logged by "
            f"fit{closest_match(metric, logged)}; logged values: {', '.join(logged)} "
            "(add a metric to train.metrics to log it)",
        )
