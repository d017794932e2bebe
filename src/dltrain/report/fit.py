"""After a fit: the summary lines (epochs, the best one, the loss trend) and ``fit --cv``'s folds."""

from __future__ import annotations

import math

from ..metrics import format_value, higher_is_better
from .console import Table

_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width=40) -> str:
    """A one-line trend: values resampled to at most ``width`` characters."""
    values = [value for value in values if value is not None and math.isfinite(value)]
    if not values:
        return ""
    if len(values) > width:
        values = [values[int(index * len(values) / width)] for index in range(width - 1)] + [values[-1]]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARKS[min(7, int((value - low) / span * 7 + 0.5))] for value in values)


def fit_summary(result) -> list[str]:
    """Lines after training: epochs, why it stopped, the best epoch and the loss trend."""
    lines = [f"{result.config.name}: trained {len(result.history)} epochs (stopped: {result.stop_reason})"]
    if result.best_epoch:
        best = result.history[result.best_epoch - 1].get(result.monitor)
        lines.append(f"best epoch {result.best_epoch} ({result.monitor} {format_value(best)})")
        lines += _saved_epoch_warning(result, best)
    trend_key = "val_loss" if any("val_loss" in record for record in result.history) else "loss"
    trend = sparkline([record.get(trend_key) for record in result.history])
    if len(result.history) > 1 and trend:
        first, last = result.history[0][trend_key], result.history[-1][trend_key]
        lines.append(f"{trend_key} {format_value(first)} {trend} {format_value(last)}")
    return lines


def _saved_epoch_warning(result, best) -> list[str]:
    """A line when the saved (last) epoch is far worse than the best one: restore_best is off."""
    stopping = result.config.train.early_stopping
    last_epoch = len(result.history)
    if (stopping is not None and stopping.restore_best) or result.best_epoch == last_epoch:
        return []
    last = result.history[-1].get(result.monitor)
    if last is None or best is None or not math.isfinite(best):
        return []
    gap = (best - last) if higher_is_better(result.monitor) else (last - best)
    if not math.isfinite(last) or gap > 0.1 * max(abs(best), 1e-12):
        setting = (
            "train.early_stopping.restore_best: true"
            if stopping is not None
            else f"train.early_stopping: {{monitor: {result.monitor}, restore_best: true}}"
        )
        return [
            f"warning: the saved model is epoch {last_epoch}'s ({result.monitor} {format_value(last)}), far "
            f"worse than epoch {result.best_epoch}'s; set {setting} to keep the best epoch"
        ]
    return []


def cross_validation_heading(folds) -> str:
    """What ``fit --cv`` is about to print."""
    stratified = ", stratified by class" if folds.stratified else ""
    return (
        f"cross-validation: {folds.k} folds of the {folds.n_rows} training rows{stratified}; each fold's model "
        "trains as fit trains on the others and is scored on the fold"
    )


def cross_validation_line(index: int, folds) -> str:
    """One fold's held-out scores."""
    scores = "  ".join(
        f"{name.removeprefix('val_')} {format_value(value)}" for name, value in folds.scores[index].items()
    )
    return f"fold {index + 1}/{folds.k}: held-out {scores}  ({folds.epochs[index]} epochs)"


def cross_validation_table(folds) -> Table:
    """Each metric's mean ± spread (standard deviation) over the folds' held-out rows."""
    table = Table(title=f"cross-validated metrics ({folds.k} folds, held-out rows)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("± spread", justify="right")
    for name, (mean, spread) in folds.summary().items():
        table.add_row(name.removeprefix("val_"), format_value(mean), format_value(spread))
    return table
