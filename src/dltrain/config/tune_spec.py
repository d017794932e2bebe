"""The config's ``tune:`` section: what ``dltrain tune`` searches (``space``: ranges and lists of
choices) and how (sampler, pruner, trials, cross-validation)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from .base import Spec


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
