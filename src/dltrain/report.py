"""Everything the user sees: rich progress and tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import math
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from .data.csv import reading_progress
from .files import human_bytes
from .metrics import REGRESSION_METRICS, epoch_line, format_value, higher_is_better
from .train import Callbacks


class Table(RichTable):
    """A rich table whose cells and headers are plain text: a class label such as "[b]" or
    "[/]" is shown as written, never read as markup."""

    def add_column(self, header="", *args, **kwargs):
        super().add_column(Text(str(header)), *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), **kwargs)


_UNWRAPPED_WIDTH = 10_000  # off a terminal: a log line or a table is never broken at 80 columns


def _console(stderr: bool = False) -> Console:
    """A console that wraps to the terminal's width on a terminal, and never wraps elsewhere."""
    stream = sys.stderr if stderr else sys.stdout
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        stderr=stderr, highlight=False, soft_wrap=not on_terminal, width=None if on_terminal else _UNWRAPPED_WIDTH
    )


console = _console()
error_console = _console(stderr=True)


class TrainingReporter(Callbacks):
    """Progress per epoch: a rich bar with batches, ETA and running loss on a terminal, else one line."""

    def __init__(self, quiet=False, out: Console | None = None):
        self.quiet = quiet
        self.console = out or console
        self.progress = None

    def on_train_begin(self, epochs, batches_per_epoch, start_epoch=0):
        self.epochs, self.batches = epochs, batches_per_epoch
        if start_epoch and not self.quiet:
            self.console.print(f"resuming after epoch {start_epoch} of {epochs}", markup=False)
        if self.quiet or not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()

    def on_epoch_begin(self, epoch):
        if self.progress is not None:
            self.task = self.progress.add_task("", total=self.batches, epoch=epoch, epochs=self.epochs, loss="…")

    def on_device(self, device, reason):
        if not self.quiet:
            self.console.print(f"device: {device} ({reason})", markup=False, soft_wrap=True)

    def on_batch_end(self, epoch, batch, running_loss):
        if self.progress is not None:
            loss = "…" if running_loss is None else f"{running_loss:.4f}"  # None: on a device, read once an epoch
            self.progress.update(self.task, completed=batch, loss=loss)

    def on_epoch_end(self, epoch, record):
        if self.progress is not None:
            self.progress.remove_task(self.task)
            self.progress.console.print(epoch_line(record, self.epochs))
        elif not self.quiet:
            self.console.print(epoch_line(record, self.epochs), soft_wrap=True)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextlib.contextmanager
def reading(quiet: bool = False):
    """Show how the reading of each CSV file goes while in this context, unless ``quiet``."""
    if quiet:
        yield
        return
    with reading_progress(ReadProgress):
        yield


class ReadProgress:
    """One CSV file being read. On a terminal, once the read has taken BAR_AFTER seconds, a bar
    with the bytes read, the speed and the time left (on stderr, gone when done); elsewhere, for
    a read that has taken LINES_AFTER seconds, a line at each quarter and one at the end."""

    BAR_AFTER = 0.5
    LINES_AFTER = 2.0

    def __init__(self, path, total: int, out: Console | None = None):
        self.path, self.total = path, max(int(total), 1)
        self.console = out or error_console
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.next_quarter = 1
        self.lines = False

    def __enter__(self):
        return self.update

    def __exit__(self, kind, error, trace):
        if self.bar is not None:
            self.bar.stop()
        if self.lines and kind is None:
            seconds = time.monotonic() - self.started
            self.console.print(
                f"read {self.path}: {human_bytes(self.total)} in {seconds:.1f} s "
                f"({human_bytes(self.total / max(seconds, 1e-9))}/s)",
                markup=False,
                soft_wrap=True,
            )

    def update(self, done: int) -> None:
        """``done`` bytes of ``total`` read so far."""
        elapsed = time.monotonic() - self.started
        if self.console.is_terminal:
            if self.bar is None:
                if elapsed < self.BAR_AFTER or done >= self.total:
                    return
                self.bar = Progress(
                    TextColumn("reading {task.description}", markup=False),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=self.console,
                    transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task(str(self.path), total=self.total)
            self.bar.update(self.task, completed=done)
            return
        quarter = 4 * done // self.total
        if quarter < self.next_quarter or done >= self.total or elapsed < self.LINES_AFTER:
            return
        self.next_quarter = quarter + 1
        rate = done / max(elapsed, 1e-9)
        self.lines = True
        self.console.print(
            f"reading {self.path}: {100 * done // self.total}% of {human_bytes(self.total)}, "
            f"{human_bytes(rate)}/s, about {math.ceil((self.total - done) / rate)} s left",
            markup=False,
            soft_wrap=True,
        )


def metrics_table(metrics_by_split: dict, title: str | None = None, columns=None) -> Table:
    """Rows: splits (train, validation, test); columns: metrics (all, or those named)."""
    names = list(columns or [])
    if not names:
        for values in metrics_by_split.values():
            names.extend(name for name in values if name not in names)
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, values in metrics_by_split.items():
        table.add_row(split, *(format_value(values.get(name, "")) for name in names))
    return table


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


def scalar_table(metrics: dict, title: str) -> Table:
    """One metric a row: stays readable however many metrics there are."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, format_value(value))
    return table


_ROW_COUNTS = ("rows_scored", "rows_skipped", "rows_skipped_empty_target", "skipped_lines")


def evaluation_json(metrics: dict, labels) -> dict:
    """``dltrain eval --json``: the metrics, the row counts, per target values, then per class
    scores keyed by label, the confusion matrix and the labels."""
    result = {name: value for name, value in metrics.items() if name not in ("per_class", "confusion_matrix")}
    per_class = metrics.get("per_class")
    if per_class is not None:
        for name, values in per_class.items():
            result[name] = {label: (int(v) if name == "support" else float(v)) for label, v in zip(labels, values)}
        result["confusion_matrix"] = metrics["confusion_matrix"].tolist()
        result["class_labels"] = list(labels)
    return result


def _skipped_text(metrics: dict) -> Text | None:
    skipped = metrics["rows_skipped"]
    if not skipped:
        return None
    empty_target = metrics["rows_skipped_empty_target"]
    why = (
        "an empty target"
        if empty_target == skipped
        else f"an empty cell under missing: drop ({empty_target} of them an empty target)"
        if empty_target
        else "an empty cell under missing: drop"
    )
    lines = metrics["skipped_lines"]
    shown = ", ".join(map(str, lines)) + (" …" if skipped > len(lines) else "")
    return Text(
        f"skipped {skipped} of {skipped + metrics['rows_scored']} rows with {why}, "
        f"as in training (missing: drop); line{'s' if skipped > 1 else ''} {shown}"
    )


def evaluation_report(metrics: dict, labels, title: str) -> list:
    """``dltrain eval``'s tables: the metrics with the rows scored and skipped, then per target
    (several regression targets) or per class with the confusion matrix."""
    scalars = {
        name: value
        for name, value in metrics.items()
        if name not in ("per_class", "confusion_matrix", "per_target", *_ROW_COUNTS)
    }
    per_target = metrics.get("per_target")
    caption = None
    if per_target:
        caption = f"{', '.join(REGRESSION_METRICS)}: the means over the {len(per_target)} targets (per target below)"
    table = scalar_table(scalars, title=title)
    table.caption = caption
    table.add_row("rows scored", str(metrics["rows_scored"]))
    table.add_row("rows skipped", str(metrics["rows_skipped"]))
    parts: list = [table]
    skipped = _skipped_text(metrics)
    if skipped is not None:
        parts.append(skipped)
    if per_target:
        parts.append(per_target_table(per_target))
    if metrics.get("per_class") is not None:
        parts.append(per_class_table(labels, metrics["per_class"]))
        parts.append(confusion_table(labels, metrics["confusion_matrix"]))
    return parts


def per_target_table(per_target: dict) -> Table:
    """Rows: regression targets, each in its own units; columns: mse, rmse, mae, r2."""
    table = Table(title="per target")
    table.add_column("target")
    for name in REGRESSION_METRICS:
        table.add_column(name, justify="right")
    for target, values in per_target.items():
        table.add_row(target, *(format_value(values[name]) for name in REGRESSION_METRICS))
    return table


def per_class_table(labels, per_class) -> Table:
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for index, label in enumerate(labels):
        table.add_row(
            label,
            *(format_value(float(per_class[name][index])) for name in ("precision", "recall", "f1")),
            str(int(per_class["support"][index])),
        )
    return table


def confusion_table(labels, matrix) -> Table:
    table = Table(title="confusion matrix")
    table.add_column("true \\ predicted")
    for label in labels:
        table.add_column(label, justify="right")
    for label, row in zip(labels, matrix):
        table.add_row(label, *(str(int(count)) for count in row))
    return table


def summary_table(rows) -> Table:
    table = Table(title="model")
    for column in ("layer", "output shape", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    total = 0
    for name, shape, count in rows:
        total += count
        table.add_row(name, shape, f"{count:,}")
    table.add_row("total", "", f"{total:,}", style="bold")
    return table


def _architecture(text: str) -> str | None:
    """A layer list drawn by tune (stored as JSON) as "16 relu, 8 tanh, dropout 0.2"."""
    import json

    from .config import describe_layers

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


def tune_summary(result) -> list:
    """What a search found: lines, then tables of the best trials, parameter and feature importances."""
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
    items = []
    if result.best is not None:
        best = result.best
        folds = f" over {result.cv} folds" if result.cv else ""
        lines.append(
            f"best: trial {best['number']}, {result.metric} {_with_spread(best['value'], best.get('spread'))}{folds} "
            f"({'higher' if result.direction == 'maximize' else 'lower'} is better)"
        )
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
        items.append(table)
    else:
        lines.append("no trial has finished yet: nothing to report")
    if result.param_importance:
        table = Table(title="parameter importance (Optuna, PED-ANOVA)")
        table.add_column("parameter")
        table.add_column("importance", justify="right")
        for name, value in result.param_importance.items():
            table.add_row(name, f"{value:.3f}")
        items.append(table)
    if result.features:
        items.append(importance_table(result.features, title="feature importance (loss rise when shuffled)"))
    footer = []
    if result.best_run is not None:
        footer.append(
            f"wrote {result.study_dir / 'trials.csv'}, {result.study_dir / 'best.yaml'} and "
            f"{result.best_run}/ (use it with dltrain eval / predict)"
        )
    elif result.best is None:
        footer.append(f"wrote {result.study_dir / 'trials.csv'}")
    return lines, items, footer


def importance_table(rows, title="permutation importance") -> Table:
    """Columns by importance: the mean rise of the loss when shuffled, ± its spread over repeats."""
    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("column")
    table.add_column("importance", justify="right")
    table.add_column("± spread", justify="right")
    for rank, row in enumerate(rows, start=1):
        table.add_row(str(rank), row["column"], f"{row['importance']:.4f}", f"{row['spread']:.4f}")
    return table


def show_error(message: str):
    error_console.print(f"error: {message}", soft_wrap=True, markup=False)


def show_warning(message: str):
    error_console.print(f"warning: {message}", soft_wrap=True, markup=False)


def show_note(message: str):
    """Something the user should know about a result that is still right (on stderr, beside the output)."""
    error_console.print(f"note: {message}", soft_wrap=True, markup=False)


def write_text(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()


def write_bytes(data: bytes):
    """Text already encoded in ``output_encoding()`` to stdout, at once (a block of predictions)."""
    sys.stdout.flush()
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:  # a stdout without bytes (replaced by a caller): as text
        sys.stdout.write(data.decode(output_encoding()))
        sys.stdout.flush()
        return
    stream.write(data)
    stream.flush()


def output_encoding() -> str:
    """The encoding ``write_text`` writes stdout in."""
    return getattr(sys.stdout, "encoding", None) or "utf-8"


def log_line(text: str):
    """One line on stderr, flushed at once (a server's access and lifecycle lines)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
