"""K-fold cross-validation of a config: what ``dltrain fit --cv K`` prints before it trains, and
how ``dltrain tune`` scores each trial under ``tune.cv: K``.

The usable rows of the training CSV are dealt into K folds (stratified by class, from the
config's seed, so every run and every trial of a study sees the same folds); each fold's model
is the config's own fit made on the other K - 1 (``data.validation``'s share of them watched
for early stopping, the preprocessing fitted on the rest) and is scored on the fold's rows,
which its training never saw: the estimate is of the whole fit, early stopping included.
Nothing here prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .build import Seeds, build_trainer
from .config import Config, ConfigSource
from .data.prepare import PreparedData, prepare_folds
from .data.split import EncodedSplit, Split, StoredSplit
from .metrics import evaluate_chunks
from .train import Callbacks


def mean_and_spread(values) -> tuple[float, float]:
    """The mean over the folds and the spread: their standard deviation (as scikit-learn's
    ``std_test_score``); NaN when a fold's value is not a number."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        return math.nan, math.nan
    return float(array.mean()), float(array.std())


def scores_of(trainer, data: PreparedData, rows: Split | StoredSplit | EncodedSplit, prefix: str = "") -> dict:
    """The loss and the config's metrics of the model as trained (the best epoch's weights when
    early stopping restores them) on ``rows``, each name after ``prefix`` (``val_``)."""
    scores = evaluate_chunks(
        trainer.model, trainer.loss, rows.chunks(), data.config.task, target_divisor=data.schema.target_divisor
    )
    logged = ["loss", *(data.config.train.metrics or [name for name in scores if name != "loss"])]
    return {f"{prefix}{name}": float(scores[name]) for name in logged}


def metric_of(trainer, data: PreparedData, metric: str, fold: bool = False) -> float:
    """One value fit logs (``val_loss``, ``val_accuracy``, ``loss`` …) of the model as trained.
    A ``fold``'s ``val_`` values are its held-out rows' (its test split), which training never saw."""
    if not metric.startswith("val_"):
        return scores_of(trainer, data, data.train)[metric]
    rows = data.test if fold else data.validation
    assert rows is not None, "a fold holds its held-out rows; a trial scored on validation has them (check_data)"
    return scores_of(trainer, data, rows, "val_")[metric]


@dataclass
class CrossValidation:
    """Each fold's held-out scores and epochs, and the summary over the folds."""

    k: int
    n_rows: int  # the rows dealt into folds
    stratified: bool
    scores: list = field(default_factory=list)  # per fold: {"val_loss": …, "val_accuracy": …}
    epochs: list = field(default_factory=list)  # per fold: epochs trained

    def summary(self) -> dict:
        """{name: (mean, spread)} of every held-out value, in the order fit logs them."""
        return {name: mean_and_spread([fold[name] for fold in self.scores]) for name in self.scores[0]}


def cross_validate(
    config: Config,
    source: ConfigSource,
    base_dir: Path,
    k: int,
    setting: str,
    callbacks: Callbacks | None = None,
    on_fold=None,
) -> CrossValidation:
    """Train a checked config (``build.prepare_fit``'s) once per fold and score each fold's model
    on its held-out rows. ``setting`` names what asked for the folds in messages (``--cv 5``);
    ``on_fold(index, result)`` is called after each fold."""
    folds = prepare_folds(config, source, base_dir, k, Seeds.from_seed(config.seed).split, setting)
    held_out = [fold.test for fold in folds if fold.test is not None]  # every fold holds its own rows
    result = CrossValidation(k, sum(len(rows) for rows in held_out), config.task == "classification")
    for index, (fold, rows) in enumerate(zip(folds, held_out)):
        data = replace(fold, config=config)
        trainer = build_trainer(config, data, Seeds.from_seed(config.seed), callbacks)
        trained = trainer.run()
        result.scores.append(scores_of(trainer, data, rows, "val_"))
        result.epochs.append(len(trained.history))
        if on_fold is not None:
            on_fold(index, result)
    return result
