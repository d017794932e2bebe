"""A Sequential network built from plain layer specs: forward, backward, parameters."""

from __future__ import annotations

from .activations import ACTIVATIONS
from .backend import CPU, DEFAULT_DTYPE, quiet_overflow
from .backend import xp as host
from .layers import LAYERS, Dense, Dropout


class Sequential:
    """Hidden layers in order, then a dense output layer whose activation is applied by the loss.

    ``forward`` returns the output layer's logits; ``predict`` applies the output activation.
    Parameters and gradients are two dicts with the same keys, ``"<layer name>.<parameter>"``
    (``"dense_0.W"``, ``"dense_0.b"``, ...); a layer's name is its kind and its number among
    the layers of that kind.
    """

    def __init__(self, layers, n_inputs, output_activation, dtype=DEFAULT_DTYPE, backend=CPU):
        self.layers = layers
        self.n_inputs = n_inputs
        self.output_activation = output_activation
        self.dtype = dtype
        self.backend = backend
        # All parameters live in one contiguous array (and all gradients in another); the
        # per-layer arrays are views into them, so the whole model is also one array to copy,
        # compare or check. The layers drew their values on the host; they move here.
        size = sum(value.size for layer in layers for value in layer.params.values())
        self.flat_params = backend.xp.empty(size, dtype=dtype)
        self.flat_grads = backend.xp.zeros(size, dtype=dtype)
        self.params = {}
        self.grads = {}
        self.names = []
        counts = {}
        offset = 0
        for layer in layers:
            layer.backend = backend
            name = f"{layer.kind}_{counts.get(layer.kind, 0)}"
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            self.names.append(name)
            for key, value in list(layer.params.items()):
                view = self.flat_params[offset : offset + value.size].reshape(value.shape)
                backend.copy_into(view, value)
                layer.params[key] = view
                layer.grads[key] = self.flat_grads[offset : offset + value.size].reshape(value.shape)
                self.params[f"{name}.{key}"] = layer.params[key]
                self.grads[f"{name}.{key}"] = layer.grads[key]
                offset += value.size

    @classmethod
    def build(
        cls,
        n_inputs,
        hidden,
        n_outputs,
        output_activation,
        *,
        init_rng,
        dropout_rng=None,
        output_init=None,
        dtype=DEFAULT_DTYPE,
        backend=CPU,
    ):
        """Build from hidden layer specs (``{"type": <a LAYERS name>, ...}``), then a dense
        output layer whose activation the loss applies, on ``backend`` (NumPy or CuPy arrays).
        The initial weights are drawn from ``init_rng`` on the host, so a seed gives the same
        start on every device."""
        rngs = {"init": init_rng, "dropout": dropout_rng}
        layers = []
        units = n_inputs
        for spec in hidden:
            layers.append(LAYERS[spec["type"]].from_spec(spec, units, rngs, dtype))
            units = layers[-1].output_units(units)
        init = output_init or ACTIVATIONS[output_activation].default_init
        layers.append(Dense(units, n_outputs, init, init_rng, dtype))
        return cls(layers, n_inputs, output_activation, dtype, backend)

    @staticmethod
    def param_shapes(n_inputs, hidden, n_outputs):
        """(index in ``hidden`` or None for the output layer, kind, fan_in, fan_out, {parameter:
        shape}) of every layer with parameters, known before anything is allocated."""
        shapes = []
        units = n_inputs
        specs = [*enumerate(hidden), (None, {"type": Dense.kind, "units": n_outputs})]
        for index, spec in specs:
            layer = LAYERS[spec["type"]]
            fan_out = layer.spec_units(spec, units)
            params = layer.param_shapes(spec, units)
            if params:
                shapes.append((index, layer.kind, units, fan_out, params))
            units = fan_out
        return shapes

    def use_kernels(self, fused: bool):
        """Run the fused kernels (True) or the reference path (False) from the next step on."""
        for layer in self.layers:
            layer.fused = fused

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

    def start_epoch(self, dropout_rng) -> None:
        """Before each training epoch: on a device, the dropout layers draw their masks from a
        device generator seeded from the run's dropout generator (one number per layer and
        epoch), so the masks follow the seed and a resumed epoch draws the same ones. On the
        host they draw from the run's generator itself."""
        if not self.backend.device or dropout_rng is None:
            return
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = self.backend.random(int(dropout_rng.integers(2**63)))

    def predict(self, x, batch_size=4096):
        """Output activations (probabilities or values) for ``x``, in batches to bound memory;
        a NumPy array whatever the device."""
        activation = ACTIVATIONS[self.output_activation]
        outputs = self.logits(x, batch_size)
        with quiet_overflow():
            return activation.forward(outputs)

    def logits(self, x, batch_size=4096):
        """Output-layer logits for ``x`` (NumPy, or already on the model's device), in batches,
        as a NumPy array. Weights that overflowed give inf or nan (shown as such in metrics)
        rather than a stream of NumPy warnings."""
        outputs = host.empty((x.shape[0], self.n_outputs), dtype=self.dtype)
        with quiet_overflow():
            for start in range(0, x.shape[0], batch_size):
                batch = self.backend.to_device(x[start : start + batch_size], dtype=self.dtype)
                outputs[start : start + batch_size] = self.backend.to_host(self.forward(batch))
        return outputs

    def summary(self):
        """Rows of (layer, output shape, parameter count) for display."""
        rows = [("input", f"(None, {self.n_inputs})", 0)]
        units = self.n_inputs
        for name, layer in zip(self.names, self.layers):
            units = layer.output_units(units)
            count = sum(int(p.size) for p in layer.params.values())
            detail = layer.describe()
            rows.append((f"{name} ({detail})" if detail else name, f"(None, {units})", count))
        rows.append((f"{self.output_activation} (output)", f"(None, {units})", 0))
        return rows

    def largest_product(self, batch_size: int) -> int:
        """Multiply-adds of the largest matrix product in a training step at this batch size."""
        return max(batch_size * value.shape[0] * value.shape[1] for value in self.params.values() if value.ndim == 2)

    def state(self):
        """A copy of every parameter, keyed like ``params`` (on the model's device)."""
        return {key: value.copy() for key, value in self.params.items()}

    def host_params(self):
        """Every parameter as a NumPy array, keyed like ``params``: what run folders and
        checkpoints store, the same from any device (on the host, the arrays themselves)."""
        return {key: self.backend.to_host(value) for key, value in self.params.items()}

    def load_state(self, arrays):
        """Copy saved parameters in place; keys and shapes must match exactly."""
        arrays = self._renamed_from_layer_numbers(arrays)
        if set(arrays) != set(self.params):
            missing = sorted(set(self.params) - set(arrays))
            extra = sorted(set(arrays) - set(self.params))
            raise KeyError(f"parameter names differ (missing {missing}, unexpected {extra})")
        for key, target in self.params.items():
            source = arrays[key]
            if source.shape != target.shape:
                raise ValueError(f"parameter {key} has shape {source.shape}, expected {target.shape}")
            self.backend.copy_into(target, source)

    def _renamed_from_layer_numbers(self, arrays):
        """Parameters saved by earlier versions, keyed by layer position (``"0.W"``, ``"2.W"``),
        under today's names: the n-th layer with parameters then is the n-th one now."""
        if not arrays or not all(key.split(".", 1)[0].isdigit() for key in arrays):
            return arrays
        old_layers = sorted({int(key.split(".", 1)[0]) for key in arrays})
        new_layers = [name for name, layer in zip(self.names, self.layers) if layer.params]
        if len(old_layers) != len(new_layers):
            return arrays
        renamed = dict(zip((str(number) for number in old_layers), new_layers))
        return {f"{renamed[key.split('.', 1)[0]]}.{key.split('.', 1)[1]}": value for key, value in arrays.items()}
