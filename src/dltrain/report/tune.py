"""``dltrain tune``'s output: a line per finished trial, and what the search found."""

from __future__ import annotations

from ..metrics import format_value
from .console import Table
from .tables import importance_table


def _architecture(text: str) -> str | None:
    """A layer list drawn by tune (stored as JSON) as "16 relu, 8 tanh, dropout 0.2"."""
    import json

    from ..config import describe_layers

    try:
        return describe_layers(json.loads(text))
    except ValueError:
        return None


def _short(value, width=40) -> str:
    text = format_value(value) if isinstance(value, float) else str(value)
    if text.startswith("["):
        text = _architecture(text) or text
    return text if len(text) <= width else text[: width - 1] + "…"


def _shown_params(params: dict, network: str | None) -> dict:
    """A trial's parameters as shown: where the space changes the hidden layers, the network the
    trial trained (a whole architecture drawn and then its first layer's units drawn too is one
    network, not two values that contradict each other) in place of every model.layers value."""
    if network is None:
        return dict(params)
    return {"network": network, **{key: value for key, value in params.items() if not key.startswith("model.layers")}}


def _with_spread(value, spread) -> str:
    return format_value(value) + (f" ± {format_value(spread)}" if spread is not None else "")


def tune_trial_line(trial, counts: dict, n_trials: int, metric: str, best_value) -> str:
    """One line per finished trial: its number, state, value (± its spread over the folds under
    tune.cv) and parameters, and the best so far."""
    finished = counts["COMPLETE"] + counts["PRUNED"]
    state = trial.state.name.lower()
    spread = trial.user_attrs.get("cv_spread")
    value = f"{metric} {_with_spread(trial.value, spread)}" if trial.value is not None else ""
    if trial.user_attrs.get("diverged"):
        state = "pruned (diverged)"
    shown = _shown_params(trial.params, trial.user_attrs.get("network"))
    params = "  ".join(f"{key}={_short(value)}" for key, value in shown.items())
    best = f"best {format_value(best_value)}" if best_value is not None else ""
    seconds = trial.user_attrs.get("seconds")
    parts = [
        f"[{finished}/{n_trials}] trial {trial.number} {state}",
        value,
        best,
        f"{seconds:.2f}s" if seconds is not None else "",
        params,
    ]
    return "  ".join(part for part in parts if part)


def tune_summary(result) -> tuple[list, list, list]:
    """What a search found: lines, then tables of the best trials, parameter and feature
    importances, then the files written."""
    lines = _study_lines(result)
    items = []
    if result.best is not None:
        lines.append(_best_line(result))
        items.append(_best_trials_table(result))
    else:
        lines.append("no trial has finished yet: nothing to report")
    if result.param_importance:
        items.append(_parameter_importance_table(result.param_importance))
    if result.features:
        items.append(importance_table(result.features, title="feature importance (loss rise when shuffled)"))
    return lines, items, _files_written(result)


def _study_lines(result) -> list[str]:
    """Where the study stands: already finished, notes, a timeout, its trial counts, its storage."""
    counts = result.counts
    finished = counts["COMPLETE"] + counts["PRUNED"]
    lines = []
    if result.already_finished:
        done = (
            f"{finished} of {result.n_trials} trials done"
            if finished == result.n_trials
            else f"{finished} trials done, {result.n_trials} asked for"
        )
        lines.append(
            f"study {result.study_name!r} is finished: {done}; raise --trials above {finished} to search further"
        )
    for note in result.notes:
        lines.append(f"note: {note}")
    if result.stopped == "timeout":
        lines.append("stopped: the timeout was reached; run the same command again to continue")
    lines.append(
        f"study {result.study_name!r}: {finished} trials finished "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
        + (f", {counts['RUNNING']} still running elsewhere" if counts["RUNNING"] else "")
        + ")"
    )
    lines.append(f"storage: {result.storage}")
    return lines


def _best_line(result) -> str:
    best = result.best
    folds = f" over {result.cv} folds" if result.cv else ""
    return (
        f"best: trial {best['number']}, {result.metric} {_with_spread(best['value'], best.get('spread'))}{folds} "
        f"({'higher' if result.direction == 'maximize' else 'lower'} is better)"
    )


def _best_trials_table(result) -> Table:
    """The best trials, one a row: value (± spread under tune.cv), parameters, epochs."""
    title = f"best trials ({result.metric}{f', mean ± spread over {result.cv} folds' if result.cv else ''})"
    table = Table(title=title)
    shown = [_shown_params(row["params"], row.get("network")) for row in result.top]
    keys = list(shown[0]) if shown else []
    for column in ("trial", result.metric, *(["± spread"] if result.cv else []), *keys, "epochs"):
        table.add_column(column, justify="right")
    for row, params in zip(result.top, shown):
        spread = [format_value(row["spread"]) if row.get("spread") is not None else ""] if result.cv else []
        table.add_row(
            str(row["number"]),
            format_value(row["value"]),
            *spread,
            *(_short(params.get(key, ""), 30) for key in keys),
            str(row["epochs"] or ""),
        )
    return table


def _parameter_importance_table(importance: dict) -> Table:
    table = Table(title="parameter importance (Optuna, PED-ANOVA)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for name, value in importance.items():
        table.add_row(name, f"{value:.3f}")
    return table


def _files_written(result) -> list[str]:
    if result.best_run is not None:
        return [
            f"wrote {result.study_dir / 'trials.csv'}, {result.study_dir / 'best.yaml'} and "
            f"{result.best_run}/ (use it with dltrain eval / predict)"
        ]
    if result.best is None:
        return [f"wrote {result.study_dir / 'trials.csv'}"]
    return []
