"""The training loop: epochs, shuffled mini-batches, schedules, validation, early stopping.

All state the loop needs to continue exactly where it stopped (weights, optimizer moments,
random generators, history, schedule and early-stopping state) is exposed by
``Trainer.state`` and restored by ``Trainer.load_state``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import numpy as np

from .batches import BatchIterator, EpochScores, StoredBatches
from .config import TrainSpec
from .engine import kernels
from .engine.backend import blas_threads, compute_threads
from .engine.schedules import improves
from .engine.threads import MachineLoad, fused_pays, threads_beside, threads_for
from .errors import TrainingDiverged
from .metrics import array_chunks, evaluate_chunks, higher_is_better, squares_about_mean


class TrainOptions(TrainSpec):
    """The config's ``train:`` section as the loop reads it (its metrics resolved), and whether
    every step sees the whole training set (``full_batch``: optimizer gd). Early stopping is its
    ``early_stopping`` (an ``EarlyStoppingSpec``), as validated."""

    full_batch: bool = False


@dataclass
class TrainingData:
    """What the loop trains on: splits (``data.split``'s: arrays in memory, or rows of the on-disk
    store, encoded a chunk at a time) and their meaning."""

    train: Any
    validation: Any = None
    task: str = "classification"
    n_classes: int = 0
    sample_weight: Any = None  # per-row weights of the training loss (class weights), for a split in memory
    target_divisor: Any = None  # regression: metrics are reported in the target's own units
    class_weights: Any = None  # the weight of each class (what sample_weight holds per row)
    shuffle: str = "rows"  # a split on disk: rows or blocks (see batches.StoredBatches)


@dataclass
class TrainSettings:
    """How the loop runs: options (stopping rules too), random streams, hooks and threads."""

    options: TrainOptions
    shuffle_rng: Any
    dropout_rng: Any = None
    schedule: Any = None
    callbacks: Callbacks | None = None
    on_epoch_saved: Callable | None = None
    # A context that holds interrupts (fit: signals.deferred) while an epoch is
    # saved and reported: the epoch a stopped fit names is then the last one printed.
    epoch_end_guard: Callable[[], ContextManager] | None = None
    blas_threads: int | None = None  # None: chosen by problem size and the cores others leave free
    kernel_threads: int | None = None
    fused: bool | None = None  # None: the fused kernels where they pay and are available


@dataclass
class TrainResult:
    history: list = field(default_factory=list)
    stop_reason: str = "epochs done"
    best_epoch: int = 0
    monitor: str = "loss"


class Callbacks:
    """Hooks the loop calls; the default does nothing. The CLI's reporter overrides them.

    ``on_batch_end``'s running loss is None on a device, where reading it would make the step
    wait for the device."""

    def on_device(self, device: str, reason: str):
        """Before training (fit): the device chosen (cpu or cuda) and why."""

    def on_train_begin(self, epochs: int, batches_per_epoch: int, start_epoch: int = 0):
        pass

    def on_epoch_begin(self, epoch: int):
        pass

    def on_batch_end(self, epoch: int, batch: int, running_loss: float):
        pass

    def on_epoch_end(self, epoch: int, record: dict):
        pass


def history_from_checkpoint(meta, arrays) -> list[dict]:
    """The per-epoch records stored in a checkpoint as a matrix, as dicts again."""
    columns = meta["history_columns"]
    return [
        {name: (int(value) if name == "epoch" else float(value)) for name, value in zip(columns, row)}
        for row in arrays["history"].tolist()
    ]


def _finite(value):
    return value is not None and math.isfinite(value)


class Trainer:
    """Trains a model in place, one epoch at a time, from any saved state."""

    def __init__(self, model, loss, optimizer, data: TrainingData, settings: TrainSettings):
        train_split, validation_split, task = data.train, data.validation, data.task
        options, blas_threads = settings.options, settings.blas_threads
        shuffle_rng, early_stopping = settings.shuffle_rng, options.early_stopping
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.options, self.task = options, task
        self.shuffle_rng, self.dropout_rng = shuffle_rng, settings.dropout_rng
        self.schedule, self.early_stopping = settings.schedule, early_stopping
        self.callbacks = settings.callbacks or Callbacks()
        self.on_epoch_saved = settings.on_epoch_saved
        self.epoch_end_guard = settings.epoch_end_guard or contextlib.nullcontext
        self.backend = backend = model.backend
        batch_size = len(train_split) if options.full_batch else options.batch_size
        shuffle = options.shuffle and not options.full_batch
        self.batches: BatchIterator | StoredBatches
        if getattr(train_split, "stored", False):
            self.batches = StoredBatches(
                train_split, data.class_weights, batch_size, shuffle, shuffle_rng, backend, data.shuffle
            )
        else:
            self.batches = BatchIterator(
                train_split.features, train_split.targets, data.sample_weight, batch_size, shuffle, shuffle_rng, backend
            )
        # Regression metrics are reported in the target's units, whatever scale training uses.
        self.target_divisor = data.target_divisor
        self.predictions = EpochScores(
            task,
            data.n_classes,
            data.target_divisor,
            backend,
            ranked="roc_auc" in (options.metrics or ()),
            total_squares=squares_about_mean(train_split.target_chunks()) if task != "classification" else None,
        )
        self._choose_threads_and_kernels(settings)
        has_validation = validation_split is not None and len(validation_split) > 0
        self.validation = validation_split if has_validation else None
        self.validation_features = None
        if has_validation and not getattr(validation_split, "stored", False):  # on a device, uploaded once
            self.validation_features = self.batches.upload_once(validation_split.features)
        self.validation_threads = None
        if has_validation:
            self.validation_threads = blas_threads or threads_for(
                model.largest_product(min(len(validation_split), 4096))
            )
        self.monitor = early_stopping.monitor if early_stopping else ("val_loss" if has_validation else "loss")
        self.epoch = 0
        self.history: list[dict] = []
        self.best_value = None
        self.best_epoch = 0
        self.wait = 0
        self.best_params = None
        self.stop_reason = "epochs done"
        self._gradients: dict[tuple, Any] = {}  # the logits gradient buffer per batch shape
        self._history_values, self._history_rows = None, 0  # see _history_matrix

    def _choose_threads_and_kernels(self, settings: TrainSettings):
        """None in ``settings``: as many threads as the step's largest product can use (see
        threads.threads_for), and the fused kernels where they are available and the problem is
        large enough to pay. Unless told, the thread count follows the cores others leave free,
        epoch by epoch. On a device, its kernels wherever they are available."""
        model, backend, blas_threads = self.model, self.backend, settings.blas_threads
        largest = model.largest_product(self.batches.batch_size)
        self.wanted_threads = threads_for(largest)
        on_host = not backend.device
        self.machine_load = MachineLoad() if on_host and blas_threads is None and self.wanted_threads > 1 else None
        self.blas_threads = blas_threads or self.wanted_threads
        fused = settings.fused
        if fused is None:
            fused = (fused_pays(largest) and kernels.ready()) if on_host else backend.kernels.ready()
        self.fused = fused
        self.requested_kernel_threads = settings.kernel_threads
        self.kernel_threads = (settings.kernel_threads or self.blas_threads) if self.fused and on_host else None
        model.use_kernels(self.fused)
        self.loss.fused = self.optimizer.fused = self.fused

    def kernel_needs(self) -> list:
        """The numba kernels this loop's steps call, with the sizes of their arrays (for
        ``kernels.warm_up``); none on the reference path or a device."""
        if not self.fused or self.backend.device:
            return []
        rows, batch_size = self.batches.n, self.batches.batch_size
        # On one thread the kernels run their serial versions, which need no sizes.
        one_thread = (self.requested_kernel_threads or self.wanted_threads) == 1
        batch_sizes = [0] if one_thread else sorted({batch_size, rows % batch_size} - {0})
        dense = [
            (layer.params["W"].shape[0], layer.units, layer.activation.name)
            for layer in self.model.layers
            if layer.kind == "dense"
        ]
        needs = kernels.needs_of(dense, batch_sizes, self.loss.name, self.optimizer.name)
        return [(name, 0) for name, _ in needs] if one_thread else needs

    # ------------------------------------------------------------------ one epoch

    def _gradient_buffer(self, logits):
        buffer = self._gradients.get(logits.shape)
        if buffer is None:
            buffer = self._gradients[logits.shape] = self.backend.xp.empty_like(logits)
        return buffer

    def train_epoch(self, epoch, lr, max_batches=None):
        """One pass over the training set (or its first ``max_batches`` batches); the mean loss."""
        if self.machine_load is not None:
            self.blas_threads = threads_beside(self.wanted_threads, self.machine_load.other_busy_cores())
            self.kernel_threads = (self.requested_kernel_threads or self.blas_threads) if self.fused else None
        self.model.start_epoch(self.dropout_rng)
        # Overflow is caught as a non-finite loss or gradient norm and reported once, as
        # divergence; NumPy's own warnings would only bury that message.
        with (
            compute_threads(self.blas_threads, self.kernel_threads),
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        ):
            return self._train_batches(epoch, lr, max_batches)

    def _train_batches(self, epoch, lr, max_batches):
        report_every = max(1, len(self.batches) // 100)
        loss_sum, seen = 0.0, 0
        # On a device nothing is read back during the epoch: each step's loss and gradient norm
        # are kept there and checked at its end (a read would make every step wait for the
        # device), and the progress shows no running loss.
        device = self.backend.device
        watched = self.backend.xp.zeros((len(self.batches), 2)) if device else None
        self.predictions.start()
        for batch, (_, features, targets, weights) in enumerate(self.batches, start=1):
            logits = self.model.forward(features, training=True)
            grad = self._gradient_buffer(logits)
            batch_loss = self.loss.value_and_gradient(logits, targets, out=grad, sample_weight=weights)
            if device:
                watched[batch - 1, 0] = batch_loss
            elif not math.isfinite(batch_loss):
                self._diverged("loss", batch_loss, epoch, batch)
            self.model.backward(grad)
            self.predictions.record(logits, self.loss, targets)
            # The norm is measured during the update, while each piece is in cache. A
            # non-finite one has already spoiled the weights in memory; the run is then
            # saved from the last epoch's checkpoint, never from these weights.
            norm = self.optimizer.step(lr)
            if device:
                watched[batch - 1, 1] = norm
            elif not math.isfinite(norm):
                self._diverged("gradient norm", norm, epoch, batch)
            size = len(features)
            loss_sum += batch_loss * size
            seen += size
            if batch % report_every == 0:
                self.callbacks.on_batch_end(epoch, batch, None if device else loss_sum / seen)
            if batch == max_batches:
                break
        if device:
            self._check_watched(self.backend.to_host(watched[:batch]), epoch)
        return float(loss_sum / seen)

    def _check_watched(self, values, epoch):
        """The first non-finite loss or gradient norm among the epoch's steps, reported as the
        host reports it at once (the weights after it were spoiled, and are never saved)."""
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if len(bad):
            batch = int(bad[0])
            loss, norm = values[batch].tolist()
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            self._diverged(what, value, epoch, batch + 1)

    @staticmethod
    def _diverged(what, value, epoch, batch):
        raise TrainingDiverged(
            f"training diverged: the {what} became {value} at epoch {epoch}, batch {batch}; "
            "lower optimizer.lr or set optimizer.clip_norm (e.g. 1.0), then train again"
        )

    def _record(self, epoch, lr, train_loss, started):
        record = {"epoch": epoch, "lr": lr, "loss": train_loss}
        logged = self.options.metrics
        train_scores = self.predictions.metrics()
        record.update({name: train_scores[name] for name in logged if name in train_scores})
        if self.validation is not None:
            # Sized like the training step's: an unlimited pool on a small validation product
            # spins idle threads that halved a 2-core machine's speed when it was busy.
            # ...and never more than the step's threads, which leave other processes' cores alone.
            with blas_threads(min(self.validation_threads, self.blas_threads) if self.validation_threads else None):
                scores = evaluate_chunks(
                    self.model,
                    self.loss,
                    self.validation_chunks(),
                    self.task,
                    target_divisor=self.target_divisor,
                    ranked="roc_auc" in logged,
                )
            record["val_loss"] = scores["loss"]
            record.update({f"val_{name}": scores[name] for name in logged if name in scores})
        record["seconds"] = time.perf_counter() - started
        return record

    def validation_chunks(self):
        """The validation rows as (features, targets) chunks (``metrics.evaluate_chunks``)."""
        if self.validation_features is None:
            return self.validation.chunks()  # rows of the store, encoded a chunk at a time
        return array_chunks(self.validation_features, self.validation.targets)

    def _track_best(self, epoch, record):
        value = record.get(self.monitor)
        if not _finite(value):
            return
        min_delta = self.early_stopping.min_delta if self.early_stopping else 0.0
        if improves(value, self.best_value, higher_is_better(self.monitor), min_delta):
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            if self.early_stopping and self.early_stopping.restore_best:
                self.best_params = self.model.state()
        else:
            self.wait += 1

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        """Train from the current epoch up to ``options.epochs``, or until a stopping rule fires."""
        options = self.options
        self.callbacks.on_train_begin(options.epochs, len(self.batches), self.epoch)
        for epoch in range(self.epoch + 1, options.epochs + 1):
            self.callbacks.on_epoch_begin(epoch)
            started = time.perf_counter()
            lr = self.schedule.lr(epoch) if self.schedule else self.optimizer.lr
            train_loss = self.train_epoch(epoch, lr)
            record = self._record(epoch, lr, train_loss, started)
            self.history.append(record)
            self.epoch = epoch
            self._track_best(epoch, record)
            if self.schedule:
                self.schedule.observe(epoch, record)
            self.stop_reason = self.stopping_reason()
            with self.epoch_end_guard():
                if self.on_epoch_saved:
                    self.on_epoch_saved(self)
                self.callbacks.on_epoch_end(epoch, record)
            if self.stop_reason != "running":
                break
        if self.stop_reason == "running":
            self.stop_reason = "epochs done"
        return self.finish()

    def stopping_reason(self) -> str:
        """Why training stops after the current epoch under the current options, or "running".

        One rule for the loop and for a resume: a run that stopped on its own stays stopped
        unless the options that stopped it changed."""
        options = self.options
        if not self.history:
            return "running" if options.epochs > 0 else "epochs done"
        if self.early_stopping and self.wait >= self.early_stopping.patience:
            return f"early stop: no {self.monitor} improvement for {self.early_stopping.patience} epochs"
        previous_loss = self.history[-2]["loss"] if len(self.history) > 1 else math.inf
        if options.tolerance is not None and previous_loss - self.history[-1]["loss"] < options.tolerance:
            return f"converged: loss improved by less than {options.tolerance:g}"
        if self.epoch >= options.epochs:
            return "epochs done"
        return "running"

    def finish(self) -> TrainResult:
        """Restore the best weights when asked, and summarise."""
        if self.early_stopping and self.early_stopping.restore_best and self.best_params is not None:
            self.model.load_state(self.best_params)
        return TrainResult(self.history, self.stop_reason, self.best_epoch, self.monitor)

    # ------------------------------------------------------------------ exact resume

    def state(self):
        """(metadata, arrays): everything needed to continue this run bit for bit."""
        optimizer_state = self.optimizer.state()
        to_host = self.backend.to_host  # a checkpoint holds NumPy arrays: it resumes on either device
        arrays = {f"param/{key}": value for key, value in self.model.host_params().items()}
        arrays.update({f"optimizer/{key}": to_host(value) for key, value in optimizer_state["arrays"].items()})
        if self.best_params is not None:
            arrays.update({f"best/{key}": to_host(value) for key, value in self.best_params.items()})
        columns = list(self.history[0]) if self.history else []
        arrays["history"] = self._history_matrix(columns)
        meta = {
            "epoch": self.epoch,
            "history_columns": columns,
            "stop_reason": self.stop_reason,
            "optimizer_steps": optimizer_state["step_count"],
            "shuffle_rng": self.shuffle_rng.bit_generator.state,
            "dropout_rng": self.dropout_rng.bit_generator.state if self.dropout_rng is not None else None,
            "schedule": self.schedule.state() if self.schedule else None,
            "best": {"value": self.best_value, "epoch": self.best_epoch, "wait": self.wait},
        }
        return meta, arrays

    def _history_matrix(self, columns):
        """History as a float64 matrix, grown in place: a checkpoint per epoch stays cheap
        even after thousands of epochs (serialising a list of dicts each time would not)."""
        rows = len(self.history)
        if self._history_values is None or len(self._history_values) < rows:
            grown = np.empty((max(64, 2 * rows), len(columns)))
            if self._history_values is not None:
                grown[: self._history_rows] = self._history_values[: self._history_rows]
            self._history_values = grown
        for index in range(self._history_rows, rows):
            self._history_values[index] = [self.history[index][name] for name in columns]
        self._history_rows = rows
        return self._history_values[:rows]

    def load_state(self, meta, arrays):
        def group(prefix):
            return {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}

        self.model.load_state(group("param/"))
        self.optimizer.load_state({"step_count": meta["optimizer_steps"], "arrays": group("optimizer/")})
        best = group("best/")
        self.best_params = best or None
        self.epoch = meta["epoch"]
        self.history = history_from_checkpoint(meta, arrays)
        self._history_values, self._history_rows = None, 0
        self.stop_reason = meta["stop_reason"]
        self.shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        if self.dropout_rng is not None and meta["dropout_rng"] is not None:
            self.dropout_rng.bit_generator.state = meta["dropout_rng"]
        if self.schedule and meta["schedule"] is not None:
            self.schedule.load_state(meta["schedule"])
        self.best_value, self.best_epoch, self.wait = (
            meta["best"]["value"],
            meta["best"]["epoch"],
            meta["best"]["wait"],
        )
