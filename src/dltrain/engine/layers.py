"""Layers: forward and backward side by side; parameters and gradients in dicts with equal keys.

A layer's parameters are drawn on the host (the same start on every device) and moved to the
model's backend when the model is built; from then on ``self.backend.xp`` (NumPy or CuPy)
computes on them.

The reference path is the formulas on whole arrays. On the fused path (``fused``, set by the
model when the kernels pay) a Dense layer keeps its output and gradient buffers between steps
(one set per batch shape), so a training step allocates no new large arrays once the first
step has run.
"""

from __future__ import annotations

import math

from .activations import ACTIVATIONS
from .backend import CPU, DEFAULT_DTYPE, xp


def glorot_uniform(fan_in, fan_out, rng):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def glorot_normal(fan_in, fan_out, rng):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def he_normal(fan_in, fan_out, rng):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def he_uniform(fan_in, fan_out, rng):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}


class Layer:
    """Base layer: no parameters; buffers for the fused path, cached by shape."""

    kind = ""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self._buffers: dict = {}
        self.fused = False  # run the fused kernels (set by the model when they pay)
        self.backend = CPU  # where the parameters live (set by the model)

    def _buffer(self, name, shape, dtype):
        """The layer's buffer ``name`` of this shape, made once."""
        key = (name, shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.dtype != dtype:
            buffer = self.backend.xp.empty(shape, dtype=dtype)
            self._buffers[key] = buffer
        return buffer

    @classmethod
    def param_shapes(cls, spec: dict, fan_in: int) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter a layer of ``spec`` after ``fan_in`` inputs holds, known
        before anything is allocated (a memory estimate); none by default."""
        return {}

    @classmethod
    def spec_units(cls, spec: dict, fan_in: int) -> int:
        """The width of a ``spec`` layer's output after ``fan_in`` inputs, before it is built."""
        return fan_in

    def output_units(self, input_units: int) -> int:
        return input_units

    def describe(self) -> str:
        """The layer's settings in a few words, for the model summary."""
        return ""

    def forward(self, x, training: bool):
        raise NotImplementedError

    def backward(self, grad, need_input_grad: bool = True):
        raise NotImplementedError


class Dense(Layer):
    """a = f(z) with z = x @ W + b, for an activation f (linear on the output layer: the loss
    applies the output activation)."""

    kind = "dense"

    def __init__(self, input_units, units, init="glorot_uniform", rng=None, dtype=DEFAULT_DTYPE, activation="linear"):
        super().__init__()
        self.units = units
        self.activation = ACTIVATIONS[activation]
        weights = INITIALIZERS[init](input_units, units, rng)
        self.params = {"W": xp.asarray(weights, dtype=dtype), "b": xp.zeros(units, dtype=dtype)}
        self.grads = {key: xp.zeros_like(value) for key, value in self.params.items()}

    @classmethod
    def from_spec(cls, spec: dict, input_units: int, rngs: dict, dtype):
        """``{"type": "dense", "units", "activation", "init"}`` -> a Dense layer."""
        activation = spec.get("activation", "linear")
        init = spec.get("init") or ACTIVATIONS[activation].default_init
        return cls(input_units, spec["units"], init, rngs["init"], dtype, activation)

    @classmethod
    def param_shapes(cls, spec, fan_in):
        return {"W": (fan_in, spec["units"]), "b": (spec["units"],)}

    @classmethod
    def spec_units(cls, spec, fan_in):
        return spec["units"]

    def output_units(self, input_units):
        return self.units

    def describe(self):
        return self.activation.name

    def _runs_fused(self):
        """The fused kernels cover the linear output and ReLU, the layers that dominate a step."""
        return self.fused and self.activation.name in ("linear", "relu")

    def forward(self, x, training):
        """a = f(z) with z = x W + b; x, z and a are kept for ``backward``."""
        self._input = x
        if self._runs_fused():
            return self._forward_fused(x)
        self._z = x @ self.params["W"] + self.params["b"]
        self._a = self.activation.forward(self._z)
        return self._a

    def backward(self, grad, need_input_grad=True):
        """``grad`` is dL/da; fills dL/dW and dL/db and returns dL/dx (None when not needed)."""
        if self._runs_fused():
            return self._backward_fused(grad, need_input_grad)
        xp, W = self.backend.xp, self.params["W"]
        dz = self.activation.backward(self._z, self._a, grad)  # dL/dz = dL/da * f'(z)
        # The gradients are views into the model's flat gradient array: written in place.
        xp.matmul(self._input.T, dz, out=self.grads["W"])  # dL/dW = x^T dL/dz
        xp.sum(dz, axis=0, out=self.grads["b"])  # dL/db = the column sums of dL/dz
        return dz @ W.T if need_input_grad else None  # dL/dx = dL/dz W^T

    def _forward_fused(self, x):
        """The same into a kept buffer: z + b and max(z + b, 0) in one pass after the product."""
        W, b = self.params["W"], self.params["b"]
        z = self._buffer("z", (x.shape[0], self.units), W.dtype)
        self.backend.xp.matmul(x, W, out=z)
        # ReLU's backward needs only a, so a replaces z.
        self._z = self._a = self.backend.kernels.bias_activation(z, b, self.activation.name == "relu")
        return self._a

    def _backward_fused(self, grad, need_input_grad):
        """The same with the ReLU mask and the column sums of dL/dz in one pass; the incoming
        gradient buffer belongs to the next layer and is not read again, so dL/dz replaces it."""
        xp, W = self.backend.xp, self.params["W"]
        dz = self.backend.kernels.bias_gradient(grad, self._a, self.grads["b"], self.activation.name == "relu")
        xp.matmul(self._input.T, dz, out=self.grads["W"])
        if not need_input_grad:
            return None
        return xp.matmul(dz, W.T, out=self._buffer("dx", self._input.shape, grad.dtype))


class Dropout(Layer):
    """Inverted dropout: active only while training, identity at inference."""

    kind = "dropout"

    def __init__(self, rate, rng):
        super().__init__()
        self.rate = rate
        self.rng = rng

    @classmethod
    def from_spec(cls, spec: dict, input_units: int, rngs: dict, dtype):
        """``{"type": "dropout", "rate"}`` -> a Dropout layer."""
        return cls(spec["rate"], rngs["dropout"])

    def describe(self):
        return f"rate {self.rate:g}"

    def forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        # Each unit is kept with probability keep and scaled by 1 / keep, so the expected
        # output is x: nothing changes at inference.
        keep = 1.0 - self.rate
        kept = self.rng.random(x.shape, dtype=x.dtype) < keep
        self._mask = kept * x.dtype.type(1.0 / keep)
        return x * self._mask

    def backward(self, grad, need_input_grad=True):
        return grad if self._mask is None else grad * self._mask


# The layer types a config may name: ``type`` in a layer spec -> the class that builds it.
LAYERS: dict[str, type[Layer]] = {cls.kind: cls for cls in (Dense, Dropout)}
