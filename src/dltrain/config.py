"""The YAML config: pydantic specs, loading with line numbers, and ``--set`` overrides.

Every mistake becomes one ConfigError of the form
``iris.yaml:7:5: model.layers[0].units: must be > 0 (got -3)``.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, TypeAlias, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .engine.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from .engine.layers import INITIALIZERS, LAYERS, Dense, Dropout
from .engine.losses import LOSSES
from .engine.optimizers import COMMON_DEFAULTS, COMMON_OPTIONS, OPTIMIZERS
from .engine.schedules import SCHEDULES
from .errors import ConfigError, did_you_mean
from .files import CONFIG_LIMIT, read_regular, text_codec
from .labels import canonical_label
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

if TYPE_CHECKING:  # the choices come from the engine's registries at run time; a type checker sees text
    HiddenActivation: TypeAlias = str
    OutputActivation: TypeAlias = str
    InitName: TypeAlias = str
    LossName: TypeAlias = str
    MetricName: TypeAlias = str
    DenseKind: TypeAlias = str
    DropoutKind: TypeAlias = str
    ScheduleName: TypeAlias = str
    OptimizerName: TypeAlias = str
else:
    HiddenActivation = Literal[tuple(HIDDEN_ACTIVATIONS)]
    OutputActivation = Literal[("auto", *sorted(ACTIVATIONS))]
    InitName = Literal[tuple(sorted(INITIALIZERS))]
    LossName = Literal[("auto", *sorted(LOSSES))]
    MetricName = Literal[tuple(CLASSIFICATION_METRICS) + tuple(REGRESSION_METRICS)]
    DenseKind, DropoutKind = Literal[Dense.kind], Literal[Dropout.kind]
    ScheduleName, OptimizerName = Literal[tuple(SCHEDULES)], Literal[tuple(OPTIMIZERS)]


class Spec(BaseModel):
    # inf and NaN are never a sensible setting (weight_decay: .inf would only "diverge" later).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


MissingPolicy = Literal["error", "drop", "mean", "median", "mode", "constant"]
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _check_fill(missing, fill):
    """``fill`` belongs with ``missing: constant``, and that policy needs it."""
    if missing == "constant" and fill is None:
        raise ValueError("missing: constant needs fill, e.g. fill: 0")
    if fill is not None and missing != "constant":
        raise ValueError("fill is used only with missing: constant")


def _fill_value(value):
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()  # a date fill
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError("must be a number, text, or true/false")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number, text, or true/false")
    return value


def _na_values(value):
    """Markers of a missing value: text (numbers are taken as written, e.g. -999)."""
    if value is None:
        return value
    if not isinstance(value, list):
        raise ValueError('must be a list of cell texts that mean "missing", e.g. ["?", "-"]')
    markers = []
    for item in value:
        if isinstance(item, dict):
            raise ValueError('lists a mapping (YAML reads an unquoted ? that way); quote each marker: ["?"]')
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(
                f"lists {item!r}; give each marker as quoted text, as it is written in the CSV "
                '(e.g. "?", "-", "n.a.", "-999")'
            )
        marker = (canonical_label(item) if isinstance(item, (int, float)) else item).strip()
        if not marker:
            raise ValueError("lists an empty marker; empty cells are always missing, leave it out")
        markers.append(marker)
    return list(dict.fromkeys(markers))


def _column_names(value, what):
    if not isinstance(value, list):
        return value
    duplicates = sorted({name for name in value if value.count(name) > 1}, key=str)
    if duplicates:
        raise ValueError(f"lists {duplicates[0]!r} twice; {what}")
    return value


class ColumnSpec(Spec):
    """One column's settings under ``data.columns``."""

    type: Optional[Literal["numeric", "categorical", "boolean", "date"]] = None  # None: inferred from the cells
    missing: Optional[MissingPolicy] = None  # None: data.missing
    fill: Optional[Union[bool, float, str]] = None  # the value for missing: constant
    unknown: Literal["error", "ignore"] = "error"  # categorical: an unseen value
    format: Optional[str] = None  # dates: e.g. "%d/%m/%Y" (None: detected for year-first dates)
    na_values: Optional[list[str]] = None  # cells that mean "missing" here, beside data.na_values

    @field_validator("fill", mode="before")
    @classmethod
    def _scalar_fill(cls, value):
        return _fill_value(value)

    @field_validator("na_values", mode="before")
    @classmethod
    def _markers(cls, value):
        return _na_values(value)

    @model_validator(mode="after")
    def _fill_goes_with_constant(self):
        _check_fill(self.missing, self.fill)
        if self.format is not None and self.type not in (None, "date"):
            raise ValueError(f"format is for date columns (type: date), and this column is {self.type}")
        return self

    @model_serializer(mode="wrap")
    def _only_settings_given(self, handler):
        # A dumped column lists what it sets, e.g. {missing: median}, and still loads back equal.
        data = handler(self)
        return {
            key: value
            for key, value in data.items()
            if value is not None and not (key == "unknown" and value == "error")
        }


class DataSpec(Spec):
    train: str
    target: Union[str, list[str]]
    features: Optional[list[str]] = None
    exclude: list[str] = []
    validation: Union[float, str] = 0.2
    test: Optional[str] = None
    scale: Literal["standard", "minmax", "none"] = "standard"
    target_scale: Literal["standard", "none"] = "standard"  # regression targets only
    delimiter: Optional[Literal[",", ";", "\t", "|"]] = None  # None: detected in each file
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    missing: MissingPolicy = "error"
    fill: Optional[Union[bool, float, str]] = None
    na_values: list[str] = []  # cells that mean "missing" in every column, beside empty, NA, null, ...
    columns: dict[str, ColumnSpec] = {}
    cache: bool = True

    @field_validator("train", "test", "validation", mode="after")
    @classmethod
    def _usable_path(cls, value):
        if isinstance(value, str) and ("\x00" in value or not value.strip()):
            raise ValueError("must be a file path (not empty, no NUL character)")
        return value

    @field_validator("validation", mode="before")
    @classmethod
    def _fraction_or_path(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("must be a fraction between 0 and 1, or a CSV path")
        if isinstance(value, (int, float)) and not 0 <= value < 1:
            raise ValueError("must be a fraction >= 0 and < 1, or a CSV path")
        return value

    @field_validator("target", mode="before")
    @classmethod
    def _column_or_columns(cls, value):
        if isinstance(value, list):
            if not value or not all(isinstance(name, str) and name for name in value):
                raise ValueError("must be a column name, or a non-empty list of numeric column names")
            return _column_names(value, "name each target once")
        if not isinstance(value, str) or not value:
            raise ValueError("must be a column name, or a list of numeric column names")
        return value

    @field_validator("features", "exclude", mode="after")
    @classmethod
    def _distinct(cls, value):
        return _column_names(value, "name each column once")

    @field_validator("delimiter", mode="before")
    @classmethod
    def _delimiter_alias(cls, value):
        value = DELIMITER_ALIASES.get(value, value) if isinstance(value, str) else value
        if value not in (None, ",", ";", "\t", "|"):
            raise ValueError("must be ',', ';', tab (\"\\t\") or '|', or null to detect it")
        return value

    @field_validator("encoding", mode="after")
    @classmethod
    def _known_encoding(cls, value):
        text_codec(value)  # ValueError, reported at the key, for a name that is not a text encoding
        return value

    @field_validator("fill", mode="before")
    @classmethod
    def _scalar_fill(cls, value):
        return _fill_value(value)

    @field_validator("na_values", mode="before")
    @classmethod
    def _markers(cls, value):
        return [] if value is None else _na_values(value)

    @model_validator(mode="after")
    def _consistent(self):
        _check_fill(self.missing, self.fill)
        if self.delimiter is not None and self.delimiter == self.decimal:
            raise ValueError("delimiter and decimal are both ','; a decimal comma needs delimiter ';'")
        return self


class DenseSpec(Spec):
    type: DenseKind = Dense.kind
    units: int = Field(gt=0)
    activation: HiddenActivation = "relu"
    init: Optional[InitName] = None


class DropoutSpec(Spec):
    type: DropoutKind
    rate: float = Field(ge=0, lt=1)


def _layer_kind(value):
    if isinstance(value, dict):
        return value.get("type", Dense.kind)
    return getattr(value, "type", Dense.kind)


_LAYER_TYPES = " or ".join(repr(kind) for kind in LAYERS)  # "'dense' or 'dropout'"
LayerSpec = Annotated[
    Union[Annotated[DenseSpec, Tag(Dense.kind)], Annotated[DropoutSpec, Tag(Dropout.kind)]],
    Discriminator(_layer_kind, custom_error_type="layer_type", custom_error_message=f"type must be {_LAYER_TYPES}"),
]


class OutputSpec(Spec):
    activation: OutputActivation = "auto"
    init: Optional[InitName] = None


class ModelSpec(Spec):
    layers: list[LayerSpec] = []
    output: OutputSpec = OutputSpec()


def describe_layers(layers) -> str | None:
    """Hidden layers (specs or their dicts) as people write them: "306 relu, 64 relu, dropout 0.2";
    None when ``layers`` is not a list of layers."""
    if not isinstance(layers, list):
        return None
    parts = []
    for layer in layers:
        layer = layer.model_dump() if isinstance(layer, BaseModel) else layer
        if not isinstance(layer, dict):
            return None
        if layer.get("type") == Dropout.kind:
            parts.append(f"dropout {layer.get('rate')}")
        else:
            parts.append(f"{layer.get('units')} {layer.get('activation', 'relu')}")
    return ", ".join(parts) or "no hidden layer"


def _engine_defaults(classes) -> dict:
    """Each option of these engine classes with its default (one default per option name)."""
    defaults: dict = {}
    for cls in classes:
        for name, value in cls.options().items():
            if defaults.setdefault(name, value) != value:
                raise AssertionError(f"{cls.__name__}: option {name} has a second default ({value!r})")
    return defaults


# The engine classes are the single source of the options each optimizer and schedule takes
# and of their defaults; the specs below add only the bounds a config value must respect.
_OPTIMIZER_OPTIONS = {name: set(cls.options()) for name, cls in OPTIMIZERS.items()}
_OPTIMIZER_DEFAULTS = _engine_defaults(OPTIMIZERS.values())


def _refuse_unused_options(spec, options_by_name: dict, kind: str):
    """Options given that belong to another ``name`` (momentum for adam, say) are an error."""
    unused = sorted((spec.model_fields_set & set().union(*options_by_name.values())) - options_by_name[spec.name])
    if unused:
        raise ValueError(f"{', '.join(unused)} not used by {kind} {spec.name!r}; remove it")


def _drop_unused_options(data: dict, options_by_name: dict, name: str) -> dict:
    unused = set().union(*options_by_name.values()) - options_by_name[name]
    return {key: value for key, value in data.items() if key not in unused}


_SCHEDULE_OPTIONS = {name: set(cls.options()) for name, cls in SCHEDULES.items()}
_SCHEDULE_DEFAULTS = _engine_defaults(SCHEDULES.values())


class ScheduleSpec(Spec):
    name: ScheduleName = "constant"
    warmup_epochs: int = Field(0, ge=0)
    every: int = Field(_SCHEDULE_DEFAULTS["every"], gt=0)
    factor: float = Field(_SCHEDULE_DEFAULTS["factor"], gt=0, lt=1)
    gamma: float = Field(_SCHEDULE_DEFAULTS["gamma"], gt=0, le=1)
    min_lr: float = Field(_SCHEDULE_DEFAULTS["min_lr"], ge=0)
    monitor: str = _SCHEDULE_DEFAULTS["monitor"]
    patience: int = Field(_SCHEDULE_DEFAULTS["patience"], gt=0)

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _options_fit_schedule(self):
        _refuse_unused_options(self, _SCHEDULE_OPTIONS, "schedule")
        return self

    @model_serializer(mode="wrap")
    def _only_used_options(self, handler):
        return _drop_unused_options(handler(self), _SCHEDULE_OPTIONS, self.name)

    def engine_options(self) -> dict:
        names = {"warmup_epochs"} | _SCHEDULE_OPTIONS[self.name]
        return {name: getattr(self, name) for name in sorted(names)}


class OptimizerSpec(Spec):
    name: OptimizerName = "adam"
    lr: float = Field(COMMON_DEFAULTS["lr"], gt=0, allow_inf_nan=False)
    weight_decay: float = Field(COMMON_DEFAULTS["weight_decay"], ge=0)
    clip_norm: Optional[float] = Field(COMMON_DEFAULTS["clip_norm"], gt=0)
    schedule: ScheduleSpec = ScheduleSpec()
    momentum: float = Field(_OPTIMIZER_DEFAULTS["momentum"], ge=0, lt=1)
    nesterov: bool = _OPTIMIZER_DEFAULTS["nesterov"]
    beta1: float = Field(_OPTIMIZER_DEFAULTS["beta1"], ge=0, lt=1)
    beta2: float = Field(_OPTIMIZER_DEFAULTS["beta2"], ge=0, lt=1)
    eps: float = Field(_OPTIMIZER_DEFAULTS["eps"], gt=0)
    rho: float = Field(_OPTIMIZER_DEFAULTS["rho"], ge=0, lt=1)

    @model_validator(mode="after")
    def _options_fit_optimizer(self):
        _refuse_unused_options(self, _OPTIMIZER_OPTIONS, "optimizer")
        if self.schedule.name == "cosine" and self.schedule.min_lr >= self.lr:
            raise ValueError(f"schedule.min_lr ({self.schedule.min_lr:g}) must be below lr ({self.lr:g})")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov needs momentum > 0")
        return self

    @model_serializer(mode="wrap")
    def _only_used_options(self, handler):
        # Options of other optimizers are left out, so a dumped config validates again.
        return _drop_unused_options(handler(self), _OPTIMIZER_OPTIONS, self.name)

    def engine_options(self) -> dict:
        """Keyword arguments for the engine's optimizer constructor."""
        names = set(COMMON_OPTIONS) | _OPTIMIZER_OPTIONS[self.name]
        return {name: getattr(self, name) for name in sorted(names)}


class EarlyStoppingSpec(Spec):
    monitor: str = "val_loss"
    patience: int = Field(10, gt=0)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class TrainSpec(Spec):
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    shuffle: bool = True
    tolerance: Optional[float] = Field(None, gt=0)
    early_stopping: Optional[EarlyStoppingSpec] = None
    metrics: Optional[list[MetricName]] = None  # default: accuracy, or mse/rmse/mae/r2
    class_weight: Union[Literal["balanced"], dict[Union[str, int, float], float], None] = None
    # auto: the GPU (CuPy) where one is found and the network is large enough to gain, else the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("class_weight")
    @classmethod
    def _weights_positive(cls, value):
        if isinstance(value, dict):
            for label, weight in value.items():
                if not weight > 0:
                    raise ValueError(f"the weight of class {label!r} must be > 0 (got {weight!r})")
            return {canonical_label(str(label)): weight for label, weight in value.items()}
        return value


def _space_kind(value):
    if isinstance(value, dict) or isinstance(value, BaseModel):
        return "range"
    return "choice" if isinstance(value, list) else None


class RangeSpec(Spec):
    """A range in ``tune.space``: numbers from ``low`` to ``high``; whole numbers when both ends are."""

    low: Union[int, float] = Field(allow_inf_nan=False)
    high: Union[int, float] = Field(allow_inf_nan=False)
    log: bool = False
    step: Optional[Union[int, float]] = Field(None, gt=0)

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
            raise ValueError("must be a number")
        return value

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g}); use log: false or a positive low")
        if self.log and self.step is not None:
            raise ValueError("log: true cannot take a step; remove step or set log: false")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(value, int) for value in (self.low, self.high, self.step or 1))


SpaceEntry = Annotated[
    Union[Annotated[RangeSpec, Tag("range")], Annotated[list[Any], Field(min_length=1), Tag("choice")]],
    Discriminator(
        _space_kind,
        custom_error_type="space_entry",
        custom_error_message="must be a list of choices or a range {low: …, high: …}",
    ),
]

# The metric's direction comes from its name (metrics.higher_is_better); names fit logs are
# checked against the data later, when the task is known.


class TuneSpec(Spec):
    """The ``tune:`` section: what ``dltrain tune`` searches and how."""

    metric: str = "val_loss"
    trials: int = Field(40, gt=0)
    timeout: Optional[float] = Field(None, gt=0)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    space: dict[str, SpaceEntry] = {}
    features: Optional[Literal["select", "off"]] = None
    # K-fold cross-validation over the training rows scores each trial (None: the validation split does).
    cv: Optional[int] = Field(None, ge=2)
    # Epochs a trial trains before the pruner may stop it (None: max(2, epochs // 10) of its own epochs).
    pruner_warmup: Optional[int] = Field(None, ge=0)

    @model_validator(mode="after")
    def _grid_takes_choices(self):
        if self.sampler == "grid":
            ranges = [key for key, entry in self.space.items() if isinstance(entry, RangeSpec)]
            if ranges:
                raise ValueError(
                    f"sampler: grid takes only choices (lists); {ranges[0]} is a range: "
                    "list its values, or use sampler: tpe or random"
                )
        return self


class Config(Spec):
    # load_config fills in the config file's stem; "run" only for configs built in code.
    # At most 200 characters: it names a folder, and a file name has at most 255 bytes.
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)
    seed: int = Field(0, ge=0)
    data: DataSpec
    task: Literal["auto", "classification", "regression"] = "auto"
    model: ModelSpec = ModelSpec()
    loss: LossName = "auto"
    optimizer: OptimizerSpec = OptimizerSpec()
    train: TrainSpec = TrainSpec()
    tune: Optional[TuneSpec] = None  # read by `dltrain tune` only

    @model_serializer(mode="wrap")
    def _without_empty_tune(self, handler):
        data = handler(self)
        if data.get("tune", 0) is None:
            del data["tune"]
        return data

    @model_validator(mode="after")
    def _warmup_fits(self):
        warmup = self.optimizer.schedule.warmup_epochs
        if warmup >= self.train.epochs:
            raise ValueError(
                f"optimizer.schedule.warmup_epochs ({warmup}) must be below train.epochs "
                f"({self.train.epochs}), or the learning rate never reaches optimizer.lr"
            )
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- YAML with positions


MAX_DEPTH = 50  # nesting levels; a config needs about 5
MAX_EXPANDED = 1_000_000  # values after expanding aliases; an "alias bomb" asks for billions


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, non-scalar keys, deep nesting and alias bombs."""

    def __init__(self, stream, source_name="<config>"):
        super().__init__(stream)
        self.source_name = source_name
        self.depth = 0
        self.aliases = []  # (mark, node) of every alias, to point at the one that expands most

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self.aliases.append((event.start_mark, node))
            return node
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(
                    f"{_at(self.source_name, event.start_mark)}: invalid YAML: nested more than "
                    f"{MAX_DEPTH} levels deep; a config needs only a few"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _at(source_name: str, mark) -> str:
    return f"{source_name}:{mark.line + 1}:{mark.column + 1}"


def _check_expansion(loader: _StrictLoader, root):
    """Refuse aliases that refer to themselves, or expand past MAX_EXPANDED values or MAX_DEPTH levels.

    Sizes are computed once per node (aliases share nodes), so even a billion-value bomb
    is measured in a few steps."""
    if not loader.aliases:
        return
    size: dict = {}
    height: dict = {}
    state = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = (
            [item for pair in node.value for item in pair]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if done:
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            state[key] = "done"
            continue
        if state.get(key) == "done":
            continue
        state[key] = "open"
        stack.append((node, True))
        for child in children:
            if state.get(id(child)) == "open":
                mark = next((mark for mark, target in loader.aliases if target is child), child.start_mark)
                raise ConfigError(
                    f"{_at(loader.source_name, mark)}: invalid YAML: the alias refers to a value "
                    "that contains it; write the value out instead"
                )
            if state.get(id(child)) != "done":
                stack.append((child, False))
    if size[id(root)] > MAX_EXPANDED or height[id(root)] > MAX_DEPTH:
        mark, _ = max(loader.aliases, key=lambda alias: (size[id(alias[1])], height[id(alias[1])]))
        what = (
            f"more than {MAX_EXPANDED:,} values"
            if size[id(root)] > MAX_EXPANDED
            else f"more than {MAX_DEPTH} levels deep"
        )
        raise ConfigError(
            f"{_at(loader.source_name, mark)}: invalid YAML: the aliases expand to {what}; "
            "write the values out, or use fewer aliases"
        )


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            raise ConfigError(
                f"{_at(loader.source_name, key_node.start_mark)}: invalid YAML: a key is {kind}; "
                "keys must be plain names such as epochs"
            )
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"{loader.source_name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} "
                f"(first at line {seen[key] + 1}); keep only one"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string the loader would read as a number."""


# YAML 1.1 reads 1e-3 (no dot) as text; users mean a number, as in YAML 1.2. The dumper
# knows the same rule, so a name like "0E0" is written quoted and reads back as text.
for _yaml_class in (_StrictLoader, _Dumper):
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _positions(node, path=(), table=None):
    """Map every key path (tuple of keys and list indices) to its (line, column), 1-based."""
    table = {} if table is None else table
    table[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = getattr(key_node, "value", None)
            _positions(value_node, path + (key,), table)
            table[path + (key, "__key__")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, path + (index,), table)
    return table


class _YamlSyntaxError(ConfigError):
    """Text that is not YAML at all (as opposed to YAML the loader refuses)."""


def _unreadable(error, text: str, source_name: str) -> ConfigError:
    """A character YAML does not allow (a control character, say), with its line and column."""
    before = text[: error.position]
    line, column = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
    character = f"U+{error.character:04X}" if isinstance(error.character, int) else repr(error.character)
    return _YamlSyntaxError(
        f"{source_name}:{line}:{column}: invalid YAML: character {character} is not allowed in a YAML file; remove it"
    )


def parse_yaml(text: str, source_name: str):
    """Parse YAML text into (data, positions); syntax errors and duplicates become ConfigError."""
    try:
        loader = _StrictLoader(text, source_name)
    except yaml.reader.ReaderError as error:
        raise _unreadable(error, text, source_name) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_expansion(loader, node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source_name}:{mark.line + 1}:{mark.column + 1}" if mark else source_name
        raise _YamlSyntaxError(f"{where}: invalid YAML: {error.problem or error.context}") from None
    except yaml.reader.ReaderError as error:
        raise _unreadable(error, text, source_name) from None
    except yaml.YAMLError as error:
        raise _YamlSyntaxError(f"{source_name}: invalid YAML: {error}") from None
    finally:
        loader.dispose()
    return data, _positions(node)


# ---------------------------------------------------------------- overrides


_SET_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:(?:\.[A-Za-z0-9_]+)|\[\d+\])*)\s*=(.*)$", re.S)


def parse_override(text: str):
    """``"model.layers[0].units=64"`` -> (('model', 'layers', 0, 'units'), 64)."""
    match = _SET_PATTERN.match(text)
    if not match and "=" not in text and re.fullmatch(r"\s*[A-Za-z_][\w.\[\]]*\s*", text):
        raise ConfigError(
            f"--set {text}: no value; write --set {text.strip()}=VALUE (with '=', no space), e.g. --set train.epochs=50"
        )
    if not match:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=20")
    path = []
    for part in re.findall(r"[A-Za-z0-9_]+|\[\d+\]", match.group(1)):
        path.append(int(part[1:-1]) if part.startswith("[") else int(part) if part.isdigit() else part)
    raw_value = match.group(2).strip()
    value = None
    if raw_value:
        try:
            value, _ = parse_yaml(raw_value, f"--set {text}")
        except _YamlSyntaxError:
            value = raw_value  # not YAML: taken as text, e.g. --set data.train=a:b.csv
    return tuple(path), value


def apply_override(data: dict, path: tuple, value, text: str):
    """Set ``value`` at ``path`` inside ``data``, creating mappings on the way."""
    node = data
    for depth, key in enumerate(path[:-1]):
        following = path[depth + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise ConfigError(
                    f"--set {text}: {dotted(path[: depth + 1])} does not exist (the list has {len(node)} items)"
                )
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {dotted(path[:depth])} is not a mapping")
        if node.get(key) is None:
            node[key] = [] if isinstance(following, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise ConfigError(f"--set {text}: {dotted(path)} does not exist (the list has {len(node)} items)")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {text}: {dotted(path[:-1])} is not a mapping")


# ---------------------------------------------------------------- error messages


def dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unwrap(annotation):
    """The spec class or list item type inside Optional/Annotated/list annotations."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union:
        return [_unwrap(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
    return annotation


def _spec_at(path, data):
    """The spec class that validates the mapping at ``path`` (a layer's by its ``type``)."""
    current = [Config]
    node = data
    for part in path:
        following = []
        for spec in current:
            if isinstance(part, int):
                item_type = typing.get_args(spec)[0] if typing.get_origin(spec) is list else None
                if item_type is not None:
                    inner = _unwrap(item_type)
                    following.extend(inner if isinstance(inner, list) else [inner])
            elif isinstance(spec, type) and issubclass(spec, BaseModel) and part in spec.model_fields:
                inner = _unwrap(spec.model_fields[part].annotation)
                following.extend(inner if isinstance(inner, list) else [inner])
            elif typing.get_origin(spec) is dict:  # a name-keyed mapping such as data.columns
                inner = _unwrap(typing.get_args(spec)[1])
                following.extend(inner if isinstance(inner, list) else [inner])
        node = node[part] if isinstance(node, (dict, list)) else None
        if len(following) > 1 and isinstance(node, dict):
            kind = _layer_kind(node)
            following = [
                spec
                for spec in following
                if isinstance(spec, type)
                and issubclass(spec, BaseModel)
                and "type" in spec.model_fields
                and kind in typing.get_args(spec.model_fields["type"].annotation)
            ] or following
        current = following
    return [spec for spec in current if isinstance(spec, type) and issubclass(spec, BaseModel)]


closest_match = did_you_mean  # one rule for keys, values and columns (errors.did_you_mean)


def _clean_location(location, data):
    """Drop pydantic's union tags and validator names, keeping the keys a user wrote."""
    path = []
    node = data
    for part in location:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif not path or isinstance(node, (dict, list)) and not isinstance(part, str) or part == "[key]":
            continue
        elif isinstance(node, dict) and not any(isinstance(p, str) and p in node for p in location[len(path) :]):
            # A key pydantic expected that the user left out.
            if part in ("range", "choice"):  # tune.space's union tags: the key comes next
                continue
            if part not in LAYERS and not part.startswith(("function-", "float", "str")):
                path.append(part)
            break
    return tuple(path)


def _describe(error, path, data) -> str:
    kind = error["type"]
    context = error.get("ctx", {}) or {}
    value = error.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    if kind == "extra_forbidden":
        specs = _spec_at(path[:-1], data)
        fields = sorted({name for spec in specs for name in spec.model_fields})
        return f"unknown key{closest_match(path[-1], fields)}; allowed keys: {', '.join(fields)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        return (
            f"must be one of {', '.join(options)}{got}{closest_match(value, options) if isinstance(value, str) else ''}"
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        symbol = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(context.values()))
        return f"must be {symbol} {bound}{got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if kind in ("string_type",):
        return f"must be text{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys to values{got}"
    if kind in ("list_type",):
        return f"must be a list{got}"
    if kind == "string_too_long":
        return f"must be at most {context.get('max_length')} characters (got {len(value)})"
    if kind == "string_pattern_mismatch":
        return f"must use only letters, digits, '.', '_' and '-'{got}"
    if kind == "value_error":
        return f"{error['msg'].removeprefix('Value error, ')}{got if 'got' not in error['msg'] else ''}"
    if kind == "space_entry":
        return f"must be a list of choices or a range {{low: …, high: …}}{got}"
    if kind == "too_short":
        return f"must not be empty{got}"
    if kind == "layer_type":
        given = value.get("type") if isinstance(value, dict) else value
        return f"type must be {_LAYER_TYPES} (got {given!r}){closest_match(given, list(LAYERS))}"
    return f"{error['msg']}{got}"


class ConfigSource:
    """Where a config came from, to point error messages at a file, line and column."""

    def __init__(self, name: str, positions: dict, overrides: dict):
        self.name = name
        self.positions = positions
        self.overrides = overrides  # path tuple -> original --set text

    def fail(self, path, message: str, *, key: bool = False, error=ConfigError):
        """The one way to report a config value: ``file:line:col: dotted.key: message``
        (or ``--set …: dotted.key: message`` when a --set wrote it). Returns the error to raise."""
        return error(f"{self.where(path, key)}: {dotted(path) or '(top level)'}: {message}")

    def where(self, path, key=False) -> str:
        for override_path, text in self.overrides.items():
            # At or below the key a --set wrote, or a key it created on the way (--set trian.epochs=5).
            if tuple(path[: len(override_path)]) == override_path or (
                path and tuple(override_path[: len(path)]) == tuple(path) and tuple(path) not in self.positions
            ):
                return f"--set {text}"
        probe = tuple(path)
        while True:
            position = self.positions.get(probe + ("__key__",)) if key and probe == tuple(path) else None
            position = position or self.positions.get(probe)
            if position:
                return f"{self.name}:{position[0]}:{position[1]}"
            if not probe:
                return self.name
            probe = probe[:-1]


# One example line per required key, shown when it is missing (list indices left out).
_EXAMPLE_LINES = {
    ("name",): ("name: my-model", ""),
    ("data",): ("data: {train: data.csv, target: label}", ""),
    ("data", "train"): ("train: data.csv", " under data: (relative to the config's folder)"),
    ("data", "target"): ("target: label", " under data: (the column to predict)"),
    ("model", "layers", "units"): ("- {units: 16, activation: relu}", ""),
    ("model", "layers", "rate"): ("- {type: dropout, rate: 0.2}", ""),
}


def _missing_key(item, data):
    """The path of a missing key (pydantic's location ends with it) and an example line."""
    path = _clean_location(item["loc"][:-1], data) + (item["loc"][-1],)
    example, note = _EXAMPLE_LINES.get(
        tuple(part for part in path if not isinstance(part, int)), (f"{path[-1]}: ...", "")
    )
    return path, f"required key {path[-1]!r} is missing; add a line such as `{example}`{note}"


def validation_message(error: ValidationError, data, source: ConfigSource) -> str:
    """One line per problem, most specific first, each naming file:line:col and the key."""
    lines = []
    seen = set()
    for item in error.errors():
        if item["type"] == "missing" and item["loc"] and isinstance(item["loc"][-1], str):
            path, message = _missing_key(item, data)
            if path not in seen:
                seen.add(path)
                lines.append(f"{source.where(path)}: {dotted(path)}: {message}")
            continue
        path = _clean_location(item["loc"], data)
        if path in seen:
            continue
        seen.add(path)
        where = source.where(path, key=item["type"] == "extra_forbidden")
        lines.append(f"{where}: {dotted(path) or '(top level)'}: {_describe(item, path, data)}")
    return "\n".join(lines)


def build_config(data, source: ConfigSource) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.name}: the config must be a mapping of keys to values, "
            f"got {type(data).__name__}; see configs/iris.yaml for an example"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_message(error, data, source)) from None


def read_config_data(path: Path) -> tuple[Any, dict]:
    """The YAML of a config file as plain data (the name filled in), with the position of every key path."""
    if path.suffix.lower() in (".csv", ".tsv"):
        raise ConfigError(
            f"{path}: this is a CSV file, not a config; `dltrain init {path} --target COL` writes a config for it"
        )
    if not os.path.lexists(path):  # never raises, unlike Path.exists on a name too long
        siblings = []
        if path.parent.is_dir():
            siblings = [item.name for item in path.parent.iterdir() if item.suffix.lower() in (".yaml", ".yml")]
        raise ConfigError(f"{path}: config file not found{did_you_mean(path.name, siblings)}")
    payload = read_regular(path, ConfigError, kind="config file", limit=CONFIG_LIMIT)
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = payload[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {payload[error.start]:#04x}); save the config as UTF-8"
        ) from None
    data, positions = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the config is empty; see configs/iris.yaml for an example")
    if isinstance(data, dict) and "name" not in data:
        # The run's name defaults to the config file's, in the characters a name allows.
        data["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-") or "run"
    return data, positions


def load_config(path, overrides=()) -> tuple[Config, Path, ConfigSource]:
    """Read, override and validate a YAML config.

    Returns the config, the folder its data paths are relative to, and its source (for
    pointing later errors at a line)."""
    path = Path(path)
    data, positions = read_config_data(path)
    override_paths = {}
    for text_item in overrides:
        key_path, value = parse_override(text_item)
        if isinstance(data, dict):
            apply_override(data, key_path, value, text_item)
        override_paths[key_path] = text_item
    source = ConfigSource(str(path), positions, override_paths)
    return build_config(data, source), path.parent, source


def json_schema() -> dict:
    """The config's JSON Schema, from the pydantic models (for editors: yaml-language-server)."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dltrain config"
    return schema


def dump_config(config: Config) -> str:
    """The config as YAML, in field order, loadable again by ``load_config``."""
    return yaml.dump(config.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
