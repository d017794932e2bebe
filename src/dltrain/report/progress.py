"""What goes on while it goes on: a fit's epochs (a bar on a terminal, a line each elsewhere) and
the reading of a large CSV file."""

from __future__ import annotations

import contextlib
import math
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

from ..data.read_progress import reading_progress
from ..files import human_bytes
from ..metrics import epoch_line
from ..train import Callbacks
from .console import console, error_console


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
