"""What one training epoch reads and keeps: shuffled mini-batches (on the model's device) and the
predictions made on them, for the epoch's metrics without a second pass (``train.Trainer``)."""

from __future__ import annotations

import math

import numpy as np

from .engine.backend import CPU
from .metrics import SplitScores, class_indices

# The share of a device's free memory the training data may take when it is uploaded once;
# the rest is for the model, its gradients, optimizer state and the batches' activations.
DEVICE_DATA_SHARE = 0.5
SCORED_ROWS = 1 << 14  # the epoch's predictions scored this many rows at a time
STORE_CHUNK_ROWS = 1 << 16  # rows encoded at a time from the store
SHUFFLE_BLOCK_ROWS = 1 << 14  # rows per block of the block shuffle (rounded to whole batches)
BLOCKS_MIXED = 8  # blocks read and shuffled together


class BatchIterator:
    """Shuffled mini-batches gathered into buffers that are allocated once and reused.

    Yields ``(rows, features, targets, weights)``; ``rows`` index the training set. The order
    comes from the run's generator on the host, so the batches are the same on every device.
    On a device, the data moves once: uploaded whole when it fits in the device's memory (the
    batches are then gathered there), else each batch is gathered on the host into pinned
    memory and copied while the previous step runs (``Backend.batches``)."""

    def __init__(self, features, targets, weights, batch_size, shuffle, rng, backend=CPU):
        self.arrays = [array for array in (features, targets, weights) if array is not None]
        self.has_weights = weights is not None
        self.n = len(features)
        self.batch_size = min(batch_size, self.n)
        self.shuffle, self.rng = shuffle, rng
        self.backend = backend
        self.from_host = None  # batches copied from the host (data too large for the device)
        if backend.device:
            free = backend.free_memory()
            if free is None or sum(array.nbytes for array in self.arrays) <= free * DEVICE_DATA_SHARE:
                self.arrays = [backend.to_device(array) for array in self.arrays]
            else:
                self.from_host = backend.batches(self.arrays, self.batch_size)
        self._buffers = {}

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def upload_once(self, array):
        """``array`` (validation rows) on the device where it fits beside the training data;
        else left on the host, to be sent in batches."""
        if not self.backend.device or self.from_host is not None:
            return array
        free = self.backend.free_memory()
        return self.backend.to_device(array) if free is None or array.nbytes <= free * DEVICE_DATA_SHARE else array

    def _buffers_for(self, size):
        if size not in self._buffers:
            xp = self.backend.xp
            self._buffers[size] = [xp.empty((size,) + array.shape[1:], dtype=array.dtype) for array in self.arrays]
        return self._buffers[size]

    def _batch(self, rows, gathered):
        features, targets = gathered[0], gathered[1]
        return rows, features, targets, gathered[2] if self.has_weights else None

    def __iter__(self):
        if not self.shuffle and self.batch_size == self.n and self.from_host is None:
            yield self._batch(slice(None), self.arrays)
            return
        order = epoch_order(self.rng, self.n) if self.shuffle else np.arange(self.n)
        # On a device, the rows that index its arrays (and the epoch's predictions) go there once an epoch.
        device_order = self.backend.to_device(order) if self.backend.device else order
        for start in range(0, self.n, self.batch_size):
            rows = order[start : start + self.batch_size]
            if self.from_host is not None:
                yield self._batch(device_order[start : start + self.batch_size], self.from_host.load(rows))
                continue
            buffers = self._buffers_for(len(rows))
            device_rows = device_order[start : start + self.batch_size]
            for array, buffer in zip(self.arrays, buffers):
                self.backend.take_rows(array, device_rows, out=buffer)
            yield self._batch(device_rows, buffers)


def epoch_order(rng, n: int) -> np.ndarray:
    """An epoch's shuffled order of ``n`` rows: ``rng.permutation(n)`` (the same draws, so the
    same order), in 4-byte integers where they fit."""
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    rng.shuffle(order)
    return order


class StoredBatches:
    """Mini-batches of a split left on disk (the store: see data.store), its rows encoded as
    model inputs a chunk of batches at a time. Yields what BatchIterator does.

    ``order`` "rows": the shuffled order BatchIterator draws, so the batches and the model are
    those of training from memory; the rows are read where they lie, which is fast while the
    store fits in the page cache. "blocks": for a store larger than memory, each epoch visits
    blocks of consecutive rows (about 16,384, a whole number of batches) in a random order,
    BLOCKS_MIXED at a time, reads those rows in one sweep and shuffles them together."""

    def __init__(self, split, class_weights, batch_size, shuffle, rng, backend=CPU, order="rows"):
        self.split, self.class_weights = split, class_weights
        self.n = len(split)
        self.batch_size = min(batch_size, self.n)
        self.shuffle, self.rng, self.backend, self.order = shuffle, rng, backend, order
        self.from_host = None
        self.chunk = self.batch_size * max(1, STORE_CHUNK_ROWS // self.batch_size)
        self.block = self.batch_size * max(1, SHUFFLE_BLOCK_ROWS // self.batch_size)

    def __len__(self):
        return math.ceil(self.n / self.batch_size)

    def upload_once(self, array):
        return array  # beside data read from disk, other rows stay on the host too

    def __iter__(self):
        if self.shuffle and self.order == "blocks":
            yield from self._blocks()
            return
        order = epoch_order(self.rng, self.n) if self.shuffle else None
        for begin in range(0, self.n, self.chunk):
            positions = (
                order[begin : begin + self.chunk]
                if order is not None
                else np.arange(begin, min(begin + self.chunk, self.n))
            )
            yield from self._batches(self.split.columns, self.split.rows[positions], positions)

    def _blocks(self):
        n_blocks = math.ceil(self.n / self.block)
        visits = self.rng.permutation(n_blocks)
        for first in range(0, n_blocks, BLOCKS_MIXED):
            group = np.sort(visits[first : first + BLOCKS_MIXED])
            positions = np.concatenate(
                [np.arange(block * self.block, min((block + 1) * self.block, self.n)) for block in group]
            )
            local = self.split.columns.take(self.split.rows[positions])  # one sweep over the store
            mixed = self.rng.permutation(len(positions))
            for begin in range(0, len(mixed), self.chunk):
                chosen = mixed[begin : begin + self.chunk]
                yield from self._batches(local, chosen, positions[chosen])

    def _batches(self, columns, rows, positions):
        schema = self.split.schema
        features = schema.encode_features(columns, rows)
        targets = schema.encode_target(columns, rows)
        weights = None
        if self.class_weights is not None:
            weights = self.class_weights[class_indices(targets)].astype(np.float32)
        device = self.backend.to_device if self.backend.device else (lambda array: array)
        for start in range(0, len(rows), self.batch_size):
            stop = start + self.batch_size
            yield (
                positions[start:stop],
                device(features[start:stop]),
                device(targets[start:stop]),
                None if weights is None else device(weights[start:stop]),
            )


class EpochScores:
    """The epoch's metrics, scored as the predictions are made (metrics.SplitScores: a confusion
    matrix, sums of errors), so that they take no second pass and no memory per row. Each batch's
    predictions are copied into a buffer of SCORED_ROWS rows, scored when it fills (a few calls
    per buffer, not per batch); on the model's device, read back once an epoch. ROC AUC, where
    logged, keeps each row's score."""

    def __init__(self, task, n_classes, target_divisor=None, backend=CPU, ranked=False, total_squares=None):
        self.task, self.n_classes, self.target_divisor = task, n_classes, target_divisor
        self.backend, self.ranked, self.total_squares = backend, ranked, total_squares
        self.buffers: list | None = None
        self.start()

    def start(self):
        """A new epoch."""
        self.scores = SplitScores(
            self.task, None, self.target_divisor, self.ranked, self.backend.xp, keep_targets=self.total_squares is None
        )
        self.pending = 0

    def record(self, logits, loss, targets):
        """A batch's logits, the loss that reads them, and its encoded targets."""
        if self.task != "classification":
            self._buffer(loss.predict(logits), targets, None)
        elif logits.shape[1] == 1:
            # sigmoid(z) >= 0.5 exactly when z >= 0; ROC AUC needs only the order of the scores
            self._buffer(logits[:, 0] >= 0, targets, logits[:, 0] if self.ranked else None)
        else:
            positive = logits[:, 1] - logits[:, 0] if self.ranked and self.n_classes == 2 else None
            self._buffer(logits.argmax(axis=1), targets, positive)

    def _buffer(self, predicted, targets, positive):
        parts = (predicted, targets) if positive is None else (predicted, targets, positive)
        rows = predicted.shape[0]
        if self.buffers is None or len(self.buffers) != len(parts) or rows > SCORED_ROWS:
            if rows > SCORED_ROWS:  # a batch larger than the buffer is scored as it is
                self._flush()
                self._score(*parts)
                return
            xp = self.backend.xp
            self.buffers = [xp.empty((SCORED_ROWS, *part.shape[1:]), dtype=part.dtype) for part in parts]
        if self.pending + rows > SCORED_ROWS:
            self._flush()
        for buffer, part in zip(self.buffers, parts):
            buffer[self.pending : self.pending + rows] = part
        self.pending += rows

    def _flush(self):
        if self.pending and self.buffers is not None:
            self._score(*(buffer[: self.pending] for buffer in self.buffers))
        self.pending = 0

    def _score(self, predicted, targets, positive=None):
        if self.task != "classification":
            self.scores.add_outputs(predicted, targets)
        else:
            self.scores.add_classes(predicted.astype(np.int64), positive, targets, max(2, self.n_classes))

    def metrics(self):
        self._flush()
        return self.scores.result(total_squares=self.total_squares)
