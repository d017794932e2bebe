"""Permutation importance: how much worse a trained model does when one input column is shuffled.

Shuffling a column's values across rows keeps its distribution but breaks its link to the
target; the rise in loss is what the model owes that column. A categorical column's one-hot
inputs move together, so each CSV column gets one figure. Used by ``dltrain explain`` and by
``dltrain tune``'s feature selection, which ranks the columns this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..api import load
from ..data import DataSchema, read_features

DEFAULT_REPEATS = 5


@dataclass
class Importance:
    column: str
    importance: float  # mean rise of the loss over the repeats
    spread: float  # standard deviation of that rise over the repeats
    inputs: int  # model inputs the column became (one-hot categories count each)


def permutation_importance(
    model, loss, schema: DataSchema, features, targets, repeats: int = DEFAULT_REPEATS, seed: int = 0
) -> tuple[float, list[Importance]]:
    """The loss on (features, targets) and every column's importance, most important first."""
    rng = np.random.default_rng(seed)
    baseline = loss.value(model.logits(features), targets)
    shuffled = np.array(features, copy=True)
    results = []
    start = 0
    for column in schema.columns:
        block = slice(start, start + column.width)
        start += column.width
        rises = []
        for _ in range(repeats):
            shuffled[:, block] = features[rng.permutation(len(features)), block]
            rises.append(loss.value(model.logits(shuffled), targets) - baseline)
        shuffled[:, block] = features[:, block]
        results.append(Importance(column.name, float(np.mean(rises)), float(np.std(rises)), column.width))
    results.sort(key=lambda item: -item.importance)
    return float(baseline), results


def explain_run(run_dir, data_path, repeats: int = DEFAULT_REPEATS, seed: int = 0) -> tuple[float, list[Importance]]:
    """Permutation importance of each input column of a saved run on a labelled CSV."""
    run = load(run_dir)
    features, targets = read_features(data_path, run.schema, with_target=True)
    return permutation_importance(run.model, run.loss, run.schema, features, targets, repeats, seed)
