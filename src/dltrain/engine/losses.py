"""Losses on the output layer's logits, with the output activation fused where it pays.

Every loss is a mean over the batch. ``value_and_gradient`` returns the loss and writes
dL/dlogits into ``out``. The fused gradients (softmax + cross-entropy, sigmoid + binary
cross-entropy, identity + MSE) all reduce to ``(y_hat - y) * scale``; that is derived here
and nowhere else. Optional per-sample weights multiply each row's loss.
"""

from __future__ import annotations

from . import kernels
from .activations import ACTIVATIONS
from .backend import xp


def _row_weights(sample_weight, n):
    if sample_weight is None:
        return None
    return sample_weight.reshape(n, 1)


class Loss:
    """A loss and its rules: the task it learns, the output activation it fuses with."""

    name = ""
    task = ""  # "classification" or "regression"
    default_activation = "linear"  # the output activation when the config says auto
    required_activation: str | None = None
    refused_activations: dict = {}  # output activation -> why not, and what to use

    @classmethod
    def task_problem(cls, task: str, n_classes: int) -> str | None:
        """Why this loss cannot learn these targets, or None."""
        if task == "regression" and cls.task != "regression":
            return f"{cls.name} needs a classification target; use mse for regression"
        return None

    @classmethod
    def activation_problem(cls, activation: str) -> str | None:
        """Why this loss cannot train an output with this activation, or None."""
        if cls.required_activation not in (None, activation):
            return f"{cls.name} needs a {cls.required_activation} output (got {activation!r})"
        return cls.refused_activations.get(activation)

    def __init__(self, output_activation: str):
        self.output_activation = ACTIVATIONS[output_activation]
        self._buffers: dict = {}
        self.fused = False  # run the fused kernel where the loss has one (set by the trainer)

    def predict(self, logits):
        """The network's output (probabilities or values) for these logits."""
        return self.output_activation.forward(logits, xp.empty_like(logits))

    def value(self, logits, targets, sample_weight=None) -> float:
        raise NotImplementedError

    def value_and_gradient(self, logits, targets, out, sample_weight=None) -> float:
        raise NotImplementedError


class CrossEntropy(Loss):
    """Softmax cross-entropy on integer class targets: the gradient is softmax - onehot."""

    name = "cross_entropy"
    task = "classification"
    default_activation = required_activation = "softmax"

    @staticmethod
    def _log_softmax(logits):
        """log(softmax(z)) row by row, as z - max - log(sum(exp(z - max))): never exp of a large number."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))

    def _row_losses(self, logits, targets):
        """-log(softmax(z)[target]) for each row."""
        rows = xp.arange(logits.shape[0])
        return -self._log_softmax(logits)[rows, targets]

    def value(self, logits, targets, sample_weight=None):
        row_loss = self._row_losses(logits, targets)
        if sample_weight is not None:
            row_loss = row_loss * sample_weight
        return float(row_loss.sum(dtype=xp.float64)) / logits.shape[0]

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        n = logits.shape[0]
        if self.fused:
            return self._fused_value_and_gradient(logits, targets, out, sample_weight)
        log_probabilities = self._log_softmax(logits)
        rows = xp.arange(n)
        row_loss = -log_probabilities[rows, targets]
        # dL/dz = (softmax - onehot) * weight / n
        xp.exp(log_probabilities, out=out)  # softmax
        out[rows, targets] -= 1.0  # - onehot
        if sample_weight is not None:
            out *= sample_weight.reshape(n, 1)
            row_loss = row_loss * sample_weight
        out *= 1.0 / n
        return float(row_loss.sum(dtype=xp.float64)) / n

    def _fused_value_and_gradient(self, logits, targets, out, sample_weight):
        """The same in one pass over the logits (kernels.softmax_cross_entropy)."""
        n = logits.shape[0]
        key = (n, logits.dtype)
        if key not in self._buffers:
            # Per-row losses, and the weights of an unweighted batch (ones).
            self._buffers[key] = (xp.empty(n, dtype=logits.dtype), xp.ones(n, dtype=logits.dtype))
        row_loss, ones = self._buffers[key]
        weights = ones if sample_weight is None else sample_weight
        kernels.softmax_cross_entropy(logits, targets, weights, 1.0 / n, out, row_loss)
        return float(row_loss.sum(dtype=xp.float64)) / n


class BinaryCrossEntropy(Loss):
    """Sigmoid binary cross-entropy on 0/1 targets, computed from logits so it never hits log(0)."""

    name = "binary_cross_entropy"
    task = "classification"
    default_activation = required_activation = "sigmoid"

    @classmethod
    def task_problem(cls, task, n_classes):
        if task == "classification" and n_classes != 2:
            return f"binary_cross_entropy needs exactly 2 classes, the target has {n_classes}; use cross_entropy"
        return super().task_problem(task, n_classes)

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
    task = "regression"
    refused_activations = {"softmax": "softmax is for classes; use linear for regression"}

    @classmethod
    def task_problem(cls, task, n_classes):
        if task == "classification":
            return "mse is for regression; use cross_entropy or binary_cross_entropy for classes"
        return None

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


def default_loss(task: str, n_classes: int) -> str:
    """The loss for ``loss: auto``: mse for values, binary cross-entropy for two classes,
    cross-entropy for more."""
    if task == "regression":
        return MeanSquaredError.name
    return BinaryCrossEntropy.name if n_classes == 2 else CrossEntropy.name


def make_loss(name: str, output_activation: str) -> Loss:
    """Build a loss by name for a network whose output layer uses ``output_activation``."""
    loss_class = LOSSES[name]
    if loss_class.required_activation not in (None, output_activation):
        raise ValueError(
            f"loss {name!r} needs output activation {loss_class.required_activation!r}, got {output_activation!r}"
        )
    return loss_class(output_activation)
