"""What the search needs from the commands above this package: a whole fit (for ``best/``), the
permutation importance ``dltrain explain`` computes, and fit's rule for relocating data paths.

``commands/tune.py`` hands the search one object with these methods; the worker processes
receive it too (it must pickle: a plain instance of a module-level class). Everything a trial
itself needs (preparing the data, building the trainer) comes from ``data.prepare`` and
``build``, below this package."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..config import Config


class Fitting(Protocol):
    def relocate(self, config: Config, base_dir: Path, folder: Path) -> Config:
        """``config`` with its data paths relative to ``folder`` instead of ``base_dir``."""

    def importance(self, model, loss, schema, features, targets, seed: int) -> list:
        """Permutation importance of each column, most important first."""

    def fit(self, config_path: Path, out: Path) -> None:
        """``dltrain fit config_path --out out``, quietly."""
