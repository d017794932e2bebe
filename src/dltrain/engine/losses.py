"""Losses on the output layer's logits, with the output activation fused where it pays.

Every loss is a mean over the batch. ``value_and_gradient`` returns the loss and writes
dL/dlogits into ``out``. The fused gradients (softmax + cross-entropy, sigmoid + binary
cross-entropy, identity + MSE) all reduce to ``(y_hat - y) * scale``; that is derived here
and nowhere else. Optional per-sample weights multiply each row's loss.
"""

from __future__ import annotations

from .activations import ACTIVATIONS
from .backend import xp


def _row_weights(sample_weight, n):
    if sample_weight is None:
        return None
    return sample_weight.reshape(n, 1)


class Loss:
    name = ""
    required_activation: str | None = None

    def __init__(self, output_activation: str):
        self.output_activation = ACTIVATIONS[output_activation]
        self._buffers = {}

    def predict(self, logits):
        """The network's output (probabilities or values) for these logits."""
        return self.output_activation.forward(logits, xp.empty_like(logits))

    def value(self, logits, targets, sample_weight=None) -> float:
        raise NotImplementedError

    def value_and_gradient(self, logits, targets, out, sample_weight=None) -> float:
        raise NotImplementedError


class CrossEntropy(Loss):
    """Softmax cross-entropy on integer class targets, via log-sum-exp."""

    name = "cross_entropy"
    required_activation = "softmax"

    @staticmethod
    def _work_arrays(n, k, dtype):
        """The row maxima, sums and losses, the flat index of each row's target, each row's
        start in the flattened logits, and the column of ones that sums rows with BLAS."""
        return (xp.empty(n, dtype), xp.empty(n, dtype), xp.empty(n, dtype), xp.empty(n, xp.intp),
                xp.arange(n, dtype=xp.intp) * k, xp.ones(k, dtype))

    @staticmethod
    def _rows(logits, targets, out, work):
        """Each row's loss, log(sum(exp(z - max))) - (z_target - max), via log-sum-exp; leaves
        exp(z - max) in ``out``. Returns (row losses, row sums, flat target indices)."""
        row_max, row_sum, row_loss, flat_index, row_starts, ones = work
        xp.maximum.reduce(logits, axis=1, out=row_max)
        xp.subtract(logits, row_max.reshape(-1, 1), out=out)
        xp.exp(out, out=out)
        xp.matmul(out, ones, out=row_sum)
        xp.add(row_starts, targets, out=flat_index)
        xp.take(logits.reshape(-1), flat_index, out=row_loss)
        row_loss -= row_max
        xp.log(row_sum, out=row_max)
        xp.subtract(row_max, row_loss, out=row_loss)
        return row_loss, row_sum, flat_index

    def value(self, logits, targets, sample_weight=None):
        n, k = logits.shape
        row_loss, _, _ = self._rows(logits, targets, xp.empty_like(logits), self._work_arrays(n, k, logits.dtype))
        if sample_weight is not None:
            row_loss *= sample_weight
        return float(row_loss.sum(dtype=xp.float64)) / n

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        # Once per training step: the work arrays are kept per batch shape, and the whole
        # step is a dozen calls without temporaries (axis-1 sums of short rows and
        # temporaries cost more than the arithmetic here).
        n, k = logits.shape
        work = self._buffers.get((n, k, logits.dtype))
        if work is None:
            work = self._buffers[(n, k, logits.dtype)] = self._work_arrays(n, k, logits.dtype)
        row_loss, row_sum, flat_index = self._rows(logits, targets, out, work)
        # Gradient: (softmax - onehot) * weight / n, with softmax = exp(z - max) / sum.
        xp.reciprocal(row_sum, out=row_sum)
        if sample_weight is not None:
            row_sum *= sample_weight
            out *= row_sum.reshape(-1, 1)
            out.reshape(-1)[flat_index] -= sample_weight
            row_loss *= sample_weight
        else:
            out *= row_sum.reshape(-1, 1)
            out.reshape(-1)[flat_index] -= 1.0
        out *= 1.0 / n
        return float(row_loss.sum(dtype=xp.float64)) / n


class BinaryCrossEntropy(Loss):
    """Sigmoid binary cross-entropy on 0/1 targets, computed from logits so it never hits log(0)."""

    name = "binary_cross_entropy"
    required_activation = "sigmoid"

    @staticmethod
    def _elementwise(logits, targets):
        return xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))

    def value(self, logits, targets, sample_weight=None):
        losses = self._elementwise(logits, targets)
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            losses = losses * weights
        return float(losses.mean(dtype=xp.float64))

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        loss = self.value(logits, targets, sample_weight)
        self.output_activation.forward(logits, out)
        out -= targets
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            out *= weights
        out *= 1.0 / logits.size
        return loss


class MeanSquaredError(Loss):
    """Mean of squared errors over all outputs; any output activation (fused when linear)."""

    name = "mse"

    def value(self, logits, targets, sample_weight=None):
        squared = (self.predict(logits) - targets) ** 2
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            squared = squared * weights
        return float(squared.mean(dtype=xp.float64))

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        predictions = self.output_activation.forward(logits, out)
        predictions -= targets  # out now holds y_hat - y
        squared = predictions * predictions
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            squared *= weights
            out *= weights
        loss = float(squared.mean(dtype=xp.float64))
        out *= 2.0 / logits.size
        if self.output_activation.name != "linear":
            activated = self.predict(logits)
            self.output_activation.backward(logits, activated, out, out=out)
        return loss


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (MeanSquaredError, CrossEntropy, BinaryCrossEntropy)}


def make_loss(name: str, output_activation: str) -> Loss:
    """Build a loss by name for a network whose output layer uses ``output_activation``."""
    loss_class = LOSSES[name]
    if loss_class.required_activation not in (None, output_activation):
        raise ValueError(
            f"loss {name!r} needs output activation {loss_class.required_activation!r}, "
            f"got {output_activation!r}"
        )
    return loss_class(output_activation)
