"""What every section of the config shares: the ``Spec`` base (unknown keys refused, no inf or
NaN) and the names the engine's registries allow (activations, losses, optimizers, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict

from ..engine.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from ..engine.layers import INITIALIZERS, Dense, Dropout
from ..engine.losses import LOSSES
from ..engine.optimizers import OPTIMIZERS
from ..engine.schedules import SCHEDULES
from ..metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

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
