"""What a trial needs from the fit machinery, which lives above this package (in ``commands``).

``commands/tune.py`` hands the search one object with these methods; the worker processes
receive it too (it must pickle: a plain instance of a module-level class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..config import Config, ConfigSource
from ..train import Callbacks, Trainer


class Fitting(Protocol):
    def prepare(self, config: Config, source: ConfigSource, base_dir: Path, seed: int) -> Any:
        """The CSVs read, split and encoded for ``config`` (a PreparedData)."""

    def checked(self, config: Config, source: ConfigSource, data) -> Config:
        """``config`` with every ``auto`` resolved for ``data`` and its training options checked."""

    def trainer(self, config: Config, data, callbacks: Callbacks | None) -> Trainer:
        """The model and training loop of a checked config, in memory."""

    def relocate(self, config: Config, base_dir: Path, folder: Path) -> Config:
        """``config`` with its data paths relative to ``folder`` instead of ``base_dir``."""

    def importance(self, model, loss, schema, features, targets, seed: int) -> list:
        """Permutation importance of each column, most important first."""

    def fit(self, config_path: Path, out: Path) -> None:
        """``dltrain fit config_path --out out``, quietly."""
