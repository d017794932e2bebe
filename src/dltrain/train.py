"""The training loop: epochs, shuffled mini-batches, validation, stopping, callbacks to report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import TrainingDiverged
from .metrics import evaluate


@dataclass
class TrainOptions:
    epochs: int
    batch_size: int
    shuffle: bool = True
    tolerance: float | None = None
    full_batch: bool = False  # gradient descent: every step sees the whole training set


@dataclass
class TrainResult:
    history: list = field(default_factory=list)
    stop_reason: str = "epochs done"
    epochs_done: int = 0


class Callbacks:
    """Hooks the loop calls; the default does nothing. The CLI's reporter overrides them."""

    def on_train_begin(self, epochs: int, batches_per_epoch: int):
        pass

    def on_epoch_begin(self, epoch: int):
        pass

    def on_batch_end(self, epoch: int, batch: int, running_loss: float):
        pass

    def on_epoch_end(self, epoch: int, record: dict):
        pass


class BatchIterator:
    """Shuffled mini-batches gathered into buffers that are allocated once and reused."""

    def __init__(self, features, targets, batch_size, shuffle, rng):
        self.features, self.targets = features, targets
        self.batch_size = min(batch_size, len(features))
        self.shuffle, self.rng = shuffle, rng
        self._buffers = {}

    def __len__(self):
        return math.ceil(len(self.features) / self.batch_size)

    def _buffers_for(self, size):
        if size not in self._buffers:
            self._buffers[size] = (
                np.empty((size,) + self.features.shape[1:], dtype=self.features.dtype),
                np.empty((size,) + self.targets.shape[1:], dtype=self.targets.dtype),
            )
        return self._buffers[size]

    def __iter__(self):
        n = len(self.features)
        if not self.shuffle and self.batch_size == n:
            yield self.features, self.targets
            return
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            indices = order[start:start + self.batch_size]
            batch_features, batch_targets = self._buffers_for(len(indices))
            np.take(self.features, indices, axis=0, out=batch_features)
            np.take(self.targets, indices, axis=0, out=batch_targets)
            yield batch_features, batch_targets


def _running_correct(outputs_or_logits, targets):
    if outputs_or_logits.shape[1] == 1:
        return int(np.count_nonzero((outputs_or_logits[:, 0] >= 0) == (targets[:, 0] >= 0.5)))
    return int(np.count_nonzero(outputs_or_logits.argmax(axis=1) == targets))


def train(model, loss, optimizer, train_split, validation_split, options: TrainOptions, task: str,
          shuffle_rng, callbacks: Callbacks | None = None) -> TrainResult:
    """Train ``model`` in place and return the per-epoch history and why training stopped."""
    callbacks = callbacks or Callbacks()
    batch_size = len(train_split) if options.full_batch else options.batch_size
    batches = BatchIterator(train_split.features, train_split.targets, batch_size,
                            options.shuffle and not options.full_batch, shuffle_rng)
    report_every = max(1, len(batches) // 100)
    gradient = {}
    result = TrainResult()
    previous_loss = math.inf
    callbacks.on_train_begin(options.epochs, len(batches))
    for epoch in range(1, options.epochs + 1):
        callbacks.on_epoch_begin(epoch)
        started = time.perf_counter()
        loss_sum, seen, correct = 0.0, 0, 0
        for batch, (batch_features, batch_targets) in enumerate(batches, start=1):
            logits = model.forward(batch_features, training=True)
            grad = gradient.get(logits.shape)
            if grad is None:
                grad = gradient[logits.shape] = np.empty_like(logits)
            batch_loss = loss.value_and_gradient(logits, batch_targets, out=grad)
            if not math.isfinite(batch_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {batch_loss} at epoch {epoch}, batch {batch}; "
                    "lower optimizer.lr (or set optimizer.clip_norm) and train again")
            if task == "classification":
                correct += _running_correct(logits, batch_targets)
            model.backward(grad)
            optimizer.step()
            size = len(batch_features)
            loss_sum += batch_loss * size
            seen += size
            if batch % report_every == 0:
                callbacks.on_batch_end(epoch, batch, loss_sum / seen)
        record = {"epoch": epoch, "loss": loss_sum / seen}
        if task == "classification":
            record["accuracy"] = correct / seen
        else:
            record.update({key: value for key, value in evaluate(
                model, loss, train_split.features, train_split.targets, task).items() if key != "loss"})
        if validation_split is not None and len(validation_split):
            scores = evaluate(model, loss, validation_split.features, validation_split.targets, task)
            record.update({f"val_{key}": value for key, value in scores.items()})
        record["seconds"] = time.perf_counter() - started
        result.history.append(record)
        result.epochs_done = epoch
        callbacks.on_epoch_end(epoch, record)
        if options.tolerance is not None and previous_loss - record["loss"] < options.tolerance:
            result.stop_reason = "converged"
            break
        previous_loss = record["loss"]
    return result
