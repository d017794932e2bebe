"""Learning-rate schedules, one rate per epoch, with optional linear warm-up.

Epochs count from 1. During the first ``warmup_epochs`` the rate rises linearly to the base
rate; the schedule proper then counts its epochs from the end of the warm-up.
"""

from __future__ import annotations

import inspect
import math


class Schedule:
    name = ""
    internal_options: tuple = ()  # constructor arguments the caller sets, not the config

    @classmethod
    def options(cls) -> dict:
        """This schedule's own options and their defaults (beyond ``lr``, ``epochs``, ``warmup_epochs``)."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {
            p.name: p.default
            for p in parameters
            if p.default is not inspect.Parameter.empty and p.name not in ("warmup_epochs",) + cls.internal_options
        }

    def __init__(self, lr: float, epochs: int, warmup_epochs: int = 0):
        self.base_lr = lr
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs

    def lr(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (1-based)."""
        if epoch <= self.warmup_epochs:
            return self.base_lr * epoch / (self.warmup_epochs + 1)
        return self._after_warmup(epoch - self.warmup_epochs - 1)

    def _after_warmup(self, step: int) -> float:
        return self.base_lr

    def observe(self, epoch: int, record: dict):
        """See an epoch's logged values (only ``plateau`` uses them)."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict):
        pass


class Constant(Schedule):
    name = "constant"


class Step(Schedule):
    name = "step"

    def __init__(self, lr, epochs, warmup_epochs=0, every=10, factor=0.1):
        super().__init__(lr, epochs, warmup_epochs)
        self.every, self.factor = every, factor

    def _after_warmup(self, step):
        return self.base_lr * self.factor ** (step // self.every)


class Exponential(Schedule):
    name = "exponential"

    def __init__(self, lr, epochs, warmup_epochs=0, gamma=0.95):
        super().__init__(lr, epochs, warmup_epochs)
        self.gamma = gamma

    def _after_warmup(self, step):
        return self.base_lr * self.gamma**step


class Cosine(Schedule):
    """Cosine decay from the base rate towards ``min_lr`` over the epochs after warm-up.

    As PyTorch's CosineAnnealingLR with ``T_max`` = those epochs: the first uses the base
    rate and ``min_lr`` would come one epoch after the last, so no epoch trains at ``min_lr``."""

    name = "cosine"

    def __init__(self, lr, epochs, warmup_epochs=0, min_lr=0.0):
        super().__init__(lr, epochs, warmup_epochs)
        self.min_lr = min_lr

    def _after_warmup(self, step):
        span = max(1, self.epochs - self.warmup_epochs)
        progress = min(step, span) / span
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def improves(value: float, best: float | None, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    """Whether a monitored value beats the best so far by more than ``min_delta`` (the first always does).

    The one rule for the plateau schedule and for early stopping."""
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


class Plateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs."""

    name = "plateau"
    internal_options = ("higher_is_better",)  # follows from the monitored metric

    def __init__(self, lr, epochs, warmup_epochs=0, monitor="val_loss", factor=0.1, patience=5, higher_is_better=False):
        super().__init__(lr, epochs, warmup_epochs)
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.higher_is_better = higher_is_better
        self.current = lr
        self.best = None
        self.wait = 0

    def _after_warmup(self, step):
        return self.current

    def observe(self, epoch, record):
        value = record.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if improves(value, self.best, self.higher_is_better):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience and epoch >= self.warmup_epochs:
            self.current *= self.factor
            self.wait = 0

    def state(self):
        return {"current": self.current, "best": self.best, "wait": self.wait}

    def load_state(self, state):
        self.current, self.best, self.wait = state["current"], state["best"], state["wait"]


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (Constant, Step, Exponential, Cosine, Plateau)}


def make_schedule(name: str, lr: float, epochs: int, **options) -> Schedule:
    return SCHEDULES[name](lr, epochs, **options)
