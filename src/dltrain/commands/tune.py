"""`dltrain tune`: the search lives in the ``tune`` package; this module hands it what only the
commands have (a whole fit for ``best/``, explain's permutation importance, fit's path rule)."""

from __future__ import annotations

from pathlib import Path

from ..api import fit as fit_run
from ..fit_session import relocate_paths
from ..tune.search import check_search as check_plan
from ..tune.search import tune as run_search
from ..tune.space import SearchPlan
from ..tune.study_folder import TuneResult
from .explain import permutation_importance


class CommandFitting:
    """The ``tune.fitting.Fitting`` of the commands: best/'s fit, the feature ranking, best.yaml's paths."""

    def relocate(self, config, base_dir: Path, folder: Path):
        return relocate_paths(config, base_dir, folder)

    def importance(self, model, loss, schema, features, targets, seed: int) -> list:
        return permutation_importance(model, loss, schema, features, targets, seed=seed)[1]

    def fit(self, config_path: Path, out: Path) -> None:
        fit_run(config_path, out)


def check_search(config_path, data, config) -> SearchPlan:
    """What ``dltrain check`` adds for a config with a tune: section: the search would start."""
    return check_plan(config_path, data, config)


def tune(
    config_path,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    out=None,
    on_trial=None,
    on_stage=None,
    device: str | None = None,
) -> TuneResult:
    """Search the config's ``tune.space`` until the study has N finished trials (see ``tune.search.tune``)."""
    return run_search(
        config_path,
        CommandFitting(),
        trials,
        timeout,
        workers,
        storage,
        study_name,
        out,
        on_trial=on_trial,
        on_stage=on_stage,
        device=device,
    )
