"""The config as pydantic specs: the whole file (``Config``) and its ``model:``, ``optimizer:`` and
``train:`` sections; ``data:`` and ``tune:`` have their own modules (data_spec.py, tune_spec.py)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_serializer, model_validator

from ..engine.layers import LAYERS, Dense, Dropout
from ..engine.optimizers import COMMON_DEFAULTS, COMMON_OPTIONS, OPTIMIZERS
from ..engine.schedules import SCHEDULES
from ..labels import canonical_label
from .base import (
    DenseKind,
    DropoutKind,
    HiddenActivation,
    InitName,
    LossName,
    MetricName,
    OptimizerName,
    OutputActivation,
    ScheduleName,
    Spec,
)
from .data_spec import DataSpec
from .tune_spec import TuneSpec


class DenseSpec(Spec):
    type: DenseKind = Dense.kind
    units: int = Field(gt=0)
    activation: HiddenActivation = "relu"
    init: Optional[InitName] = None


class DropoutSpec(Spec):
    type: DropoutKind
    rate: float = Field(ge=0, lt=1)


def layer_kind(value):
    """The ``type`` of a layer, given as a mapping or a spec (dense when it says none)."""
    if isinstance(value, dict):
        return value.get("type", Dense.kind)
    return getattr(value, "type", Dense.kind)


LAYER_TYPE_CHOICES = " or ".join(repr(kind) for kind in LAYERS)  # "'dense' or 'dropout'"
LayerSpec = Annotated[
    Union[Annotated[DenseSpec, Tag(Dense.kind)], Annotated[DropoutSpec, Tag(Dropout.kind)]],
    Discriminator(
        layer_kind, custom_error_type="layer_type", custom_error_message=f"type must be {LAYER_TYPE_CHOICES}"
    ),
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


def json_schema() -> dict:
    """The config's JSON Schema, from the pydantic models (for editors: yaml-language-server)."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dltrain config"
    return schema
