"""Losses on the output layer's logits, with the output activation fused where it pays.

Every loss is a mean over the batch. ``value_and_gradient`` returns the loss and writes
dL/dlogits into ``out``; on a device the loss stays there (a 0-d array, read once per epoch by
the training loop), ``value`` returns a float. Optional per-sample weights multiply each row's
loss.

Each loss takes the logits z, not the activations, because paired with its output activation
the gradient at z is short (``output_gradient``): for softmax + cross-entropy,
L = -sum(y log softmax(z)) with one-hot y gives dL/dz = softmax(z) - y; for sigmoid + binary
cross-entropy, L = -y log s - (1 - y) log(1 - s) with s = sigmoid(z) gives s - y; for the
identity + squared error, L = (z - y)^2 gives 2 (z - y). The chain rule through the
activation's own backward is needed only for mse on a non-linear output.
"""

from __future__ import annotations

from .activations import ACTIVATIONS
from .backend import array_module, backend_of


def _row_weights(sample_weight, n):
    if sample_weight is None:
        return None
    return sample_weight.reshape(n, 1)


def output_gradient(predictions, targets, sample_weight, scale):
    """dL/dz = (y_hat - y) * weight * scale, the gradient at the logits of a loss paired with
    its output activation (see the module docstring): scale is 1/n for the cross-entropies
    and 2/n for the squared error, n the number of terms averaged."""
    gradient = predictions - targets
    if sample_weight is not None:
        gradient *= _row_weights(sample_weight, len(gradient))
    return gradient * scale


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
        return self.output_activation.forward(logits)

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
        xp = array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))

    def _row_losses(self, logits, targets):
        """-log(softmax(z)[target]) for each row."""
        rows = array_module(logits).arange(logits.shape[0])
        return -self._log_softmax(logits)[rows, targets]

    def value(self, logits, targets, sample_weight=None):
        return float(self._mean(logits, targets, sample_weight))

    def _mean(self, logits, targets, sample_weight=None):
        xp = array_module(logits)
        row_loss = self._row_losses(logits, targets)
        if sample_weight is not None:
            row_loss = row_loss * sample_weight
        return backend_of(logits).scalar(row_loss.sum(dtype=xp.float64)) / logits.shape[0]

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        if self.fused:
            return self._fused_value_and_gradient(logits, targets, out, sample_weight)
        xp = array_module(logits)
        n, classes = logits.shape
        log_probabilities = self._log_softmax(logits)
        row_loss = -log_probabilities[xp.arange(n), targets]
        if sample_weight is not None:
            row_loss = row_loss * sample_weight
        onehot = xp.eye(classes, dtype=logits.dtype)[targets]
        out[...] = output_gradient(xp.exp(log_probabilities), onehot, sample_weight, 1.0 / n)  # softmax - onehot
        return backend_of(logits).scalar(row_loss.sum(dtype=xp.float64)) / n

    def _fused_value_and_gradient(self, logits, targets, out, sample_weight):
        """The same in one pass over the logits (the backend's softmax_cross_entropy kernel)."""
        backend = backend_of(logits)
        n = logits.shape[0]
        key = (n, logits.dtype)
        if key not in self._buffers:
            # Per-row losses, and the weights of an unweighted batch (ones).
            self._buffers[key] = (backend.xp.empty(n, dtype=logits.dtype), backend.xp.ones(n, dtype=logits.dtype))
        row_loss, ones = self._buffers[key]
        weights = ones if sample_weight is None else sample_weight
        backend.kernels.softmax_cross_entropy(logits, targets, weights, 1.0 / n, out, row_loss)
        return backend.scalar(row_loss.sum(dtype=backend.xp.float64)) / n


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
        xp = array_module(logits)
        return xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))

    def value(self, logits, targets, sample_weight=None):
        return float(self._mean(logits, targets, sample_weight))

    def _mean(self, logits, targets, sample_weight=None):
        losses = self._elementwise(logits, targets)
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            losses = losses * weights
        return backend_of(logits).scalar(losses.mean(dtype=array_module(logits).float64))

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        out[...] = output_gradient(self.predict(logits), targets, sample_weight, 1.0 / logits.size)  # sigmoid - y
        return self._mean(logits, targets, sample_weight)


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
        return float(self._mean(logits, targets, sample_weight))

    def _mean(self, logits, targets, sample_weight=None):
        squared = (self.predict(logits) - targets) ** 2
        weights = _row_weights(sample_weight, logits.shape[0])
        if weights is not None:
            squared = squared * weights
        return backend_of(logits).scalar(squared.mean(dtype=array_module(logits).float64))

    def value_and_gradient(self, logits, targets, out, sample_weight=None):
        predictions = self.predict(logits)
        gradient = output_gradient(predictions, targets, sample_weight, 2.0 / logits.size)  # dL/dy_hat
        # The identity's is the whole gradient; any other output activation chains its own.
        out[...] = self.output_activation.backward(logits, predictions, gradient)
        return self._mean(logits, targets, sample_weight)


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
