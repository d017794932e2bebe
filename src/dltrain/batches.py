"""What one training epoch reads and keeps: shuffled mini-batches (on the model's device) and the
predictions made on them, for the epoch's metrics without a second pass (``train.Trainer``)."""

from __future__ import annotations

import math

import numpy as np

from .engine.backend import CPU
from .metrics import class_indices, classification_scalars, confusion_matrix, regression_metrics

# The share of a device's free memory the training data may take when it is uploaded once;
# the rest is for the model, its gradients, optimizer state and the batches' activations.
DEVICE_DATA_SHARE = 0.5


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
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
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


class EpochPredictions:
    """The predictions made while training, kept per row, for metrics without a second pass
    (on the model's device, read back once an epoch)."""

    def __init__(self, targets, task, n_outputs, n_classes, target_divisor=None, backend=CPU):
        self.task, self.targets, self.n_classes = task, targets, n_classes
        self.target_divisor = target_divisor
        self.backend = backend
        xp = backend.xp
        n = len(targets)
        if task == "classification":
            self.classes = xp.zeros(n, dtype=np.int64)
            self.scores = xp.zeros(n, dtype=np.float32) if n_classes == 2 else None
            self.true_classes = class_indices(targets)
        else:
            self.outputs = xp.zeros((n, n_outputs), dtype=np.float32)

    def record(self, rows, logits, loss):
        if self.task != "classification":
            self.outputs[rows] = loss.predict(logits)
        elif logits.shape[1] == 1:
            self.classes[rows] = logits[:, 0] >= 0  # sigmoid(z) >= 0.5 exactly when z >= 0
            self.scores[rows] = logits[:, 0]  # ROC AUC needs only the order of the scores
        else:
            self.classes[rows] = logits.argmax(axis=1)
            if self.scores is not None:
                self.scores[rows] = logits[:, 1] - logits[:, 0]

    def metrics(self):
        to_host = self.backend.to_host
        if self.task != "classification":
            return regression_metrics(self.targets, to_host(self.outputs), self.target_divisor)
        matrix = confusion_matrix(self.true_classes, to_host(self.classes), self.n_classes)
        return classification_scalars(matrix, self.true_classes, None if self.scores is None else to_host(self.scores))
