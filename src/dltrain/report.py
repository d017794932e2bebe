"""Everything the user sees: rich progress and tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .train import Callbacks

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def format_value(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def epoch_line(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{key} {format_value(value)}" for key, value in record.items() if key not in ("epoch", "seconds", "lr")]
    parts.append(f"{record['seconds']:.2f}s")
    return "  ".join(parts)


class TrainingReporter(Callbacks):
    """Progress per epoch: a rich bar with batches, ETA and running loss on a terminal, else one line."""

    def __init__(self, quiet=False, out: Console | None = None):
        self.quiet = quiet
        self.console = out or console
        self.progress = None

    def on_train_begin(self, epochs, batches_per_epoch):
        self.epochs, self.batches = epochs, batches_per_epoch
        if self.quiet or not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"),
            console=self.console, transient=True)
        self.progress.start()

    def on_epoch_begin(self, epoch):
        if self.progress is not None:
            self.task = self.progress.add_task("", total=self.batches, epoch=epoch, epochs=self.epochs, loss="…")

    def on_batch_end(self, epoch, batch, running_loss):
        if self.progress is not None:
            self.progress.update(self.task, completed=batch, loss=f"{running_loss:.4f}")

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


def metrics_table(metrics_by_split: dict, title: str | None = None) -> Table:
    """Rows: splits (train, validation, test); columns: metrics."""
    names = []
    for values in metrics_by_split.values():
        names.extend(name for name in values if name not in names)
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, values in metrics_by_split.items():
        table.add_row(split, *(format_value(values.get(name, "")) for name in names))
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


def show_error(message: str):
    error_console.print(f"error: {message}", soft_wrap=True, markup=False)


def write_text(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()
