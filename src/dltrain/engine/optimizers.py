"""Optimizers: state in plain arrays keyed by parameter name (``m/dense_0.W``), updated in place.

Each optimizer writes its equations for one parameter array in ``update`` (the reference
path): one whole-array expression per quantity, as the papers write them. The base class
clips the gradients, runs ``update`` over every array (in blocks, see ``UPDATE_BLOCK``) and
measures the gradient norm on the way. Adam also has a fused kernel (``kernels.adam``) that
does the same update of an array in one pass, without temporary arrays; it is tested equal
to ``Adam.update``.

Every optimizer supports ``weight_decay`` on weight matrices only (``<layer>.W``, not the
biases): L2, its gradient added to the loss's, for gd, sgd and rmsprop; decoupled, the
weights shrinking by ``lr * weight_decay`` each step, for adam (AdamW). ``clip_norm``
rescales all gradients together when their global norm exceeds it.

State that decays towards 0 (Adam's m and v, SGD's velocity, RMSprop's mean square) is set
to 0 once it falls below the smallest normal number (see ``flush_subnormal``).

An optimizer's constructor arguments and their defaults are its options: the config reads
them from here (``options``), so each has one default, written once.
"""

from __future__ import annotations

import inspect
import math

from . import kernels
from .backend import array_module, backend_of

# Arguments every optimizer takes, set by the config's common keys rather than per optimizer.
COMMON_OPTIONS = ("lr", "weight_decay", "clip_norm")

# ``update`` runs over blocks of this many elements of an array. Its expressions make
# temporary arrays, and larger temporaries come back from the allocator as fresh pages
# (page faults) every step. Measured on the reference path, 100-256-10 at batch 32 (CPU
# time per step, 1 BLAS thread): 358 us in blocks of 2^14 (64 KB in float32), 599 us in
# blocks of 2^16 or on whole arrays (93 page faults per step); 784-128-10 at batch 32:
# 0.79 ms against 1.65 ms on whole arrays (457 page faults).
UPDATE_BLOCK = 1 << 14


class Optimizer:
    name = ""
    slot_names: tuple = ()  # the state kept per parameter array, e.g. ("m", "v")

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None):
        self.params = params
        self.grads = grads
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.step_count = 0
        self.fused = False  # run the fused kernel where the optimizer has one (set by the trainer)
        # Where the parameters live: NumPy or CuPy arrays, and the fused kernels for them.
        self.backend = backend_of(next(iter(params.values()), None))
        xp = self.backend.xp
        self.slots = {name: {key: xp.zeros_like(value) for key, value in params.items()} for name in self.slot_names}
        self._squares = {key: xp.empty_like(value) for key, value in params.items()}  # for the gradient norm

    @classmethod
    def options(cls) -> dict:
        """This optimizer's own options and their defaults (beyond ``COMMON_OPTIONS``)."""
        return _keyword_defaults(cls, exclude=COMMON_OPTIONS)

    def decay_of(self, key) -> float:
        """The weight decay of one parameter array: weight matrices decay, biases do not."""
        return self.weight_decay if key.endswith(".W") else 0.0

    def gradient_norm(self):
        """Global L2 norm of all gradients (on a device, a 0-d array left there)."""
        return self._root(sum(_sum_of_squares(self.grads[key], self._squares[key]) for key in self.grads))

    def _root(self, squares):
        return self.backend.xp.sqrt(squares) if self.backend.device else math.sqrt(squares)

    def step(self, lr=None):
        """One update of every parameter from its gradient, at ``lr`` (default: ``self.lr``).

        Returns the global gradient norm before clipping (a float; on a device, a 0-d array
        left there: reading it would make the step wait for the device). It takes a pass of
        its own only when clipping needs it first; otherwise it is measured array by array just
        before each update reads the gradient."""
        self.step_count += 1
        lr = self.lr if lr is None else lr
        norm = None
        if self.clip_norm is not None:
            norm = self.gradient_norm()
            if self.backend.device:
                # The same rescaling without reading the norm: by exactly 1 when it is not above.
                factor = self.backend.xp.where(norm > self.clip_norm, self.clip_norm / (norm + 1e-12), 1.0)
                for grad in self.grads.values():
                    grad *= factor.astype(grad.dtype)
            elif norm > self.clip_norm:
                for grad in self.grads.values():
                    grad *= self.clip_norm / (norm + 1e-12)
        squares = 0.0
        for key in self.params:  # in order: the sum of squares never depends on the machine
            squares += self._step_array(key, lr, measure=norm is None)
        return self._root(squares) if norm is None else norm

    def _step_array(self, key, lr, measure) -> float:
        """Update one array, block by block; the sum of its squared gradients when ``measure``, else 0."""
        squares = _sum_of_squares(self.grads[key], self._squares[key]) if measure else 0.0
        param, grad = self.params[key].reshape(-1), self.grads[key].reshape(-1)  # views: the arrays are contiguous
        state = {name: values[key].reshape(-1) for name, values in self.slots.items()}
        decay = self.decay_of(key)
        # A device has no page faults to avoid, and each block is a kernel launch: whole arrays.
        block_size = max(1, param.size) if self.backend.device else UPDATE_BLOCK
        for start in range(0, param.size, block_size):
            block = slice(start, start + block_size)
            self.update(param[block], grad[block], {name: array[block] for name, array in state.items()}, lr, decay)
        return squares

    def update(self, param, grad, state, lr, decay):
        """The update of one parameter array in place, with its ``state`` arrays (by slot
        name) and its weight decay."""
        raise NotImplementedError

    def state(self):
        """Arrays and counters needed to continue exactly where this optimizer stopped."""
        arrays = {f"{slot}/{key}": value for slot, values in self.slots.items() for key, value in values.items()}
        return {"step_count": self.step_count, "arrays": arrays}

    def load_state(self, state):
        """Restore ``state()``; every slot of every parameter must be there, under its name."""
        expected = {f"{slot}/{key}" for slot, values in self.slots.items() for key in values}
        if set(state["arrays"]) != expected:
            missing = sorted(expected - set(state["arrays"]))
            extra = sorted(set(state["arrays"]) - expected)
            raise KeyError(f"optimizer state differs (missing {missing}, unexpected {extra})")
        self.step_count = int(state["step_count"])
        for name, value in state["arrays"].items():
            slot, key = name.split("/", 1)
            self.backend.copy_into(self.slots[slot][key], value)


def _keyword_defaults(cls, exclude=()) -> dict:
    """Keyword arguments of ``cls.__init__`` with their defaults, minus ``exclude``."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty and p.name not in exclude}


# The defaults of the common arguments, as every optimizer's constructor has them.
COMMON_DEFAULTS = {name: value for name, value in _keyword_defaults(Optimizer).items() if name in COMMON_OPTIONS}


def _sum_of_squares(array, scratch):
    """Sum of squares through ``scratch``, added in the same order on any machine and thread
    count (NumPy's pairwise sum; a BLAS dot splits the sum among its threads). A float on the
    host; on a device, a 0-d array left there."""
    backend = backend_of(array)
    backend.xp.multiply(array, array, out=scratch)
    return backend.scalar(scratch.sum())


def smallest_normal(array) -> float:
    """The smallest positive normal number of the array's float type (1.2e-38 for float32)."""
    return float(array_module(array).finfo(array.dtype).tiny)


def flush_subnormal(*arrays):
    """Set the entries below the smallest normal number in size to 0, in place (a nan stays nan).

    The state of a weight whose gradient stays 0 (an input that is always 0, a ReLU unit that
    no longer fires) decays by a constant factor each step, and would spend ~150 steps among
    the subnormal numbers, where every multiplication takes a slow microcode path. What is
    lost is below 1.2e-38 (float32), a change to the weights far below their rounding."""
    for array in arrays:
        array[array_module(array).abs(array) < smallest_normal(array)] = 0


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch."""

    name = "sgd"

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, momentum=0.0, nesterov=False):
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.momentum = momentum
        self.nesterov = nesterov

    def update(self, param, grad, state, lr, decay):
        if decay:
            grad = grad + decay * param  # the gradient of the L2 penalty decay/2 * |W|^2
        if not self.momentum:
            param -= lr * grad
            return
        v = state["velocity"]
        v[...] = self.momentum * v + grad
        flush_subnormal(v)
        param -= lr * (grad + self.momentum * v if self.nesterov else v)


class GradientDescent(SGD):
    """Full-batch gradient descent: the training loop feeds it the whole training set."""

    name = "gd"

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None):
        super().__init__(params, grads, lr, weight_decay, clip_norm)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as in PyTorch; weight decay is decoupled (AdamW)."""

    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        xp = self.backend.xp
        self._partial = {
            key: xp.empty(kernels.blocks_for(value.size), dtype=xp.float64) for key, value in params.items()
        }

    def update(self, param, grad, state, lr, decay):
        xp = array_module(param)
        m, v, t = state["m"], state["v"], self.step_count
        m[...] = self.beta1 * m + (1 - self.beta1) * grad
        v[...] = self.beta2 * v + (1 - self.beta2) * grad**2
        flush_subnormal(m, v)
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        if decay:
            param *= 1 - lr * decay  # decoupled: the weights shrink, the gradient stays as computed
        param -= lr * m_hat / (xp.sqrt(v_hat) + self.eps)

    def _step_array(self, key, lr, measure) -> float:
        if not self.fused:
            return super()._step_array(key, lr, measure)
        param, grad, m, v = (
            array.reshape(-1)
            for array in (self.params[key], self.grads[key], self.slots["m"][key], self.slots["v"][key])
        )
        squares = self.backend.kernels.adam(
            param,
            grad,
            m,
            v,
            lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.step_count,
            1.0 - lr * self.decay_of(key),
            smallest_normal(param),
            self._partial[key],
        )
        return squares if measure else 0.0


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

    name = "rmsprop"
    slot_names = ("mean_square",)

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, rho=0.9, eps=1e-8):
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.rho, self.eps = rho, eps

    def update(self, param, grad, state, lr, decay):
        if decay:
            grad = grad + decay * param  # the gradient of the L2 penalty decay/2 * |W|^2
        s = state["mean_square"]
        s[...] = self.rho * s + (1 - self.rho) * grad**2
        flush_subnormal(s)
        param -= lr * grad / (array_module(param).sqrt(s) + self.eps)


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (GradientDescent, SGD, Adam, RMSprop)}


def make_optimizer(name, params, grads, **options) -> Optimizer:
    """Build an optimizer by name over ``params``/``grads`` dicts with the same keys."""
    return OPTIMIZERS[name](params, grads, **options)


def make_model_optimizer(name, model, **options) -> Optimizer:
    """An optimizer over a model's parameters, its state keyed by their names (``dense_0.W``, ...)."""
    return OPTIMIZERS[name](model.params, model.grads, **options)
