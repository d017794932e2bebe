"""A Sequential network built from plain layer specs: forward, backward, parameters."""

from __future__ import annotations

from .activations import ACTIVATIONS
from .backend import DEFAULT_DTYPE, xp
from .layers import ActivationLayer, Dense, Dropout


class Sequential:
    """Hidden layers in order, then a dense output layer whose activation is applied by the loss.

    ``forward`` returns the output layer's logits; ``predict`` applies the output activation.
    Parameters and gradients are two dicts with the same keys (``"0.W"``, ``"0.b"``, ...).
    """

    def __init__(self, layers, n_inputs, output_activation, dtype=DEFAULT_DTYPE):
        self.layers = layers
        self.n_inputs = n_inputs
        self.output_activation = output_activation
        self.dtype = dtype
        # All parameters live in one contiguous array (and all gradients in another); the
        # per-layer arrays are views into them. Optimizers then update everything in a
        # dozen vectorised passes per step instead of a dozen per parameter array.
        size = sum(value.size for layer in layers for value in layer.params.values())
        self.flat_params = xp.empty(size, dtype=dtype)
        self.flat_grads = xp.zeros(size, dtype=dtype)
        self.params = {}
        self.grads = {}
        offset = 0
        for index, layer in enumerate(layers):
            for key, value in list(layer.params.items()):
                view = self.flat_params[offset:offset + value.size].reshape(value.shape)
                view[...] = value
                layer.params[key] = view
                layer.grads[key] = self.flat_grads[offset:offset + value.size].reshape(value.shape)
                self.params[f"{index}.{key}"] = layer.params[key]
                self.grads[f"{index}.{key}"] = layer.grads[key]
                offset += value.size

    @classmethod
    def build(cls, n_inputs, hidden, n_outputs, output_activation, *, init_rng, dropout_rng=None,
              output_init=None, dtype=DEFAULT_DTYPE):
        """Build from hidden layer specs: ``{"type": "dense", "units", "activation", "init"}``
        or ``{"type": "dropout", "rate"}``."""
        layers = []
        units = n_inputs
        for spec in hidden:
            if spec["type"] == "dropout":
                layers.append(Dropout(spec["rate"], dropout_rng))
                continue
            activation = spec["activation"]
            init = spec.get("init") or ACTIVATIONS[activation].default_init
            layers.append(Dense(units, spec["units"], init, init_rng, dtype))
            layers.append(ActivationLayer(activation))
            units = spec["units"]
        init = output_init or ACTIVATIONS[output_activation].default_init
        layers.append(Dense(units, n_outputs, init, init_rng, dtype))
        return cls(layers, n_inputs, output_activation, dtype)

    @staticmethod
    def dense_shapes(n_inputs, hidden, n_outputs):
        """(index in ``hidden`` or None for the output layer, fan_in, fan_out) of every dense layer,
        known before anything is allocated."""
        shapes = []
        units = n_inputs
        for index, spec in enumerate(hidden):
            if spec["type"] == "dropout":
                continue
            shapes.append((index, units, spec["units"]))
            units = spec["units"]
        shapes.append((None, units, n_outputs))
        return shapes

    @property
    def n_outputs(self):
        return self.layers[-1].units

    def forward(self, x, training=False):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad):
        """Back-propagate dL/dlogits, filling ``self.grads``."""
        last = len(self.layers) - 1
        for index in range(last, -1, -1):
            grad = self.layers[index].backward(grad, need_input_grad=index > 0)

    def predict(self, x, batch_size=4096):
        """Output activations (probabilities or values) for ``x``, in batches to bound memory."""
        activation = ACTIVATIONS[self.output_activation]
        outputs = self.logits(x, batch_size)
        with xp.errstate(over="ignore", invalid="ignore"):
            return activation.forward(outputs, outputs)

    def logits(self, x, batch_size=4096):
        """Output-layer logits for ``x``, in batches. Weights that overflowed give inf or nan
        (shown as such in metrics) rather than a stream of NumPy warnings."""
        outputs = xp.empty((x.shape[0], self.n_outputs), dtype=self.dtype)
        with xp.errstate(over="ignore", invalid="ignore"):
            for start in range(0, x.shape[0], batch_size):
                outputs[start:start + batch_size] = self.forward(
                    xp.asarray(x[start:start + batch_size], dtype=self.dtype))
        return outputs

    def summary(self):
        """Rows of (layer, output shape, parameter count) for display."""
        rows = [("input", f"(None, {self.n_inputs})", 0)]
        units = self.n_inputs
        for index, layer in enumerate(self.layers):
            units = layer.output_units(units)
            count = sum(int(p.size) for p in layer.params.values())
            if isinstance(layer, Dense):
                name = f"dense_{index}"
            elif isinstance(layer, ActivationLayer):
                name = f"{layer.activation.name}_{index}"
            else:
                name = f"dropout_{index} (rate {layer.rate:g})"
            rows.append((name, f"(None, {units})", count))
        rows.append((f"{self.output_activation} (output)", f"(None, {units})", 0))
        return rows

    def largest_product(self, batch_size: int) -> int:
        """Multiply-adds of the largest matrix product in a training step at this batch size."""
        return max(batch_size * layer.params["W"].shape[0] * layer.params["W"].shape[1]
                   for layer in self.layers if isinstance(layer, Dense))

    def decayed(self):
        """(weight, gradient) pairs that weight decay applies to: weight matrices, not biases."""
        return [(self.params[key], self.grads[key]) for key in self.params if key.endswith(".W")]

    def state(self):
        """A copy of every parameter, keyed like ``params``."""
        return {key: value.copy() for key, value in self.params.items()}

    def load_state(self, arrays):
        """Copy saved parameters in place; keys and shapes must match exactly."""
        if set(arrays) != set(self.params):
            missing = sorted(set(self.params) - set(arrays))
            extra = sorted(set(arrays) - set(self.params))
            raise KeyError(f"parameter names differ (missing {missing}, unexpected {extra})")
        for key, target in self.params.items():
            source = arrays[key]
            if source.shape != target.shape:
                raise ValueError(f"parameter {key} has shape {source.shape}, expected {target.shape}")
            xp.copyto(target, source)
