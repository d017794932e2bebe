"""Optimizers: state in plain arrays keyed by parameter name (``m/dense_0.W``), updated in place.

Every optimizer supports ``weight_decay`` (L2 added to the gradient; decoupled, AdamW-style,
for adam) on weight matrices only, and ``clip_norm`` (global gradient-norm clipping).
Each optimizer writes its update for one array (``_update_array``, the reference path);
the base class runs it over every array, measuring the gradient norm on the way. Adam also
has a fused kernel (``kernels.adam``) that does the whole update of an array in one pass.

An optimizer's constructor arguments and their defaults are its options: the config reads
them from here (``options``), so each has one default, written once.
"""

from __future__ import annotations

import inspect
import math

from . import kernels
from .backend import xp

# Arguments every optimizer takes, set by the config's common keys rather than per optimizer.
COMMON_OPTIONS = ("lr", "weight_decay", "clip_norm")


class Optimizer:
    name = ""
    slot_names: tuple = ()
    decoupled_decay = False  # True: weight decay acts on the weights, the gradients stay as computed

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None):
        self.params = params
        self.grads = grads
        # Weight decay applies to weight matrices ("<layer>.W"), not to biases.
        self.decayed = [key for key in params if key.endswith(".W")]
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.step_count = 0
        self.fused = False  # run the fused kernel where the optimizer has one (set by the trainer)
        self._scratch = {key: xp.empty_like(value) for key, value in params.items()}
        self.slots = {name: {key: xp.zeros_like(value) for key, value in params.items()} for name in self.slot_names}

    @classmethod
    def options(cls) -> dict:
        """This optimizer's own options and their defaults (beyond ``COMMON_OPTIONS``)."""
        return _keyword_defaults(cls, exclude=COMMON_OPTIONS)

    def gradient_norm(self) -> float:
        """Global L2 norm of all gradients."""
        return math.sqrt(sum(_sum_of_squares(self.grads[key], self._scratch[key]) for key in self.grads))

    def _prepare_gradients(self, norm):
        """Clip and (coupled) decay the gradients; ``norm`` is their norm, known whenever
        either applies."""
        if self.clip_norm is not None and norm > self.clip_norm:
            scale = self.clip_norm / (norm + 1e-12)
            for grad in self.grads.values():
                grad *= scale
        if self.weight_decay and not self.decoupled_decay:
            for key in self.decayed:
                self.grads[key] += self.weight_decay * self.params[key]

    def step(self, lr=None) -> float:
        """One update of every parameter from its gradient, at ``lr`` (default: ``self.lr``).

        Returns the global gradient norm before clipping. It takes a pass of its own only when
        clipping or coupled decay must change the gradients first; otherwise it is measured
        array by array just before each update reads the gradient."""
        self.step_count += 1
        changes_gradients = self.clip_norm is not None or (self.weight_decay and not self.decoupled_decay)
        gradient_norm = self.gradient_norm() if changes_gradients else None
        constants = self._begin_step(self.lr if lr is None else lr, gradient_norm)
        measure = gradient_norm is None
        squares = 0.0
        for key in self.params:  # in order: the sum of squares never depends on the machine
            squares += self._update_one(key, constants, measure)
        return math.sqrt(squares) if gradient_norm is None else gradient_norm

    def _update_one(self, key, constants, measure=False) -> float:
        """Update one array; the sum of its squared gradients when ``measure``, else 0."""
        param, grad = self.params[key], self.grads[key]
        squares = _sum_of_squares(grad, self._scratch[key]) if measure else 0.0
        slots = {name: values[key] for name, values in self.slots.items()}
        self._update_array(param, grad, slots, self._scratch[key], constants)
        return squares

    def _begin_step(self, lr, gradient_norm):
        """Prepare gradients and return whatever every array's update needs this step."""
        self._prepare_gradients(gradient_norm)
        return lr

    def _update_array(self, param, grad, slots, scratch, constants):
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
            xp.copyto(self.slots[slot][key], value)


def _keyword_defaults(cls, exclude=()) -> dict:
    """Keyword arguments of ``cls.__init__`` with their defaults, minus ``exclude``."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty and p.name not in exclude}


# The defaults of the common arguments, as every optimizer's constructor has them.
COMMON_DEFAULTS = {name: value for name, value in _keyword_defaults(Optimizer).items() if name in COMMON_OPTIONS}


def _sum_of_squares(array, scratch) -> float:
    """Sum of squares through ``scratch``, added in the same order on any machine and thread
    count (NumPy's pairwise sum; a BLAS dot splits the sum among its threads)."""
    xp.multiply(array, array, out=scratch)
    return float(scratch.sum())


def _smallest_normal(array) -> float:
    """The smallest positive normal number of the array's float type (1.2e-38 for float32)."""
    return float(xp.finfo(array.dtype).tiny)


def _flush_subnormal(array, scratch):
    """Set the entries of ``array`` below the smallest normal number in size to 0 (a nan stays nan)."""
    xp.abs(array, out=scratch)
    xp.greater_equal(scratch, _smallest_normal(array), out=scratch, casting="unsafe")  # 1 where kept
    array *= scratch


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch."""

    name = "sgd"

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, momentum=0.0, nesterov=False):
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.momentum = momentum
        self.nesterov = nesterov

    def _update_array(self, param, grad, slots, scratch, lr):
        if not self.momentum:
            xp.multiply(grad, lr, out=scratch)
            param -= scratch
            return
        v = slots["velocity"]
        v *= self.momentum
        v += grad
        _flush_subnormal(v, scratch)  # a velocity that decays stops at 0, not in the slow subnormals
        if self.nesterov:
            xp.multiply(v, self.momentum, out=scratch)
            scratch += grad
        else:
            xp.copyto(scratch, v)
        scratch *= lr
        param -= scratch


class GradientDescent(SGD):
    """Full-batch gradient descent: the training loop feeds it the whole training set."""

    name = "gd"

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None):
        super().__init__(params, grads, lr, weight_decay, clip_norm)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as in PyTorch; weight decay is decoupled (AdamW)."""

    name = "adam"
    slot_names = ("m", "v")
    decoupled_decay = True

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._partial = {
            key: xp.empty(kernels.blocks_for(value.size), dtype=xp.float64) for key, value in params.items()
        }

    def _begin_step(self, lr, gradient_norm):
        self._prepare_gradients(gradient_norm)
        if self.weight_decay and not self.fused:  # the fused kernel decays as it updates
            for key in self.decayed:
                self.params[key] *= 1.0 - lr * self.weight_decay  # decoupled: the weights shrink
        return lr

    def _update_one(self, key, lr, measure=False) -> float:
        if not self.fused:
            return super()._update_one(key, lr, measure)
        decay = 1.0 - lr * self.weight_decay if key in self.decayed else 1.0
        param, grad, m, v = (
            array.reshape(-1)
            for array in (self.params[key], self.grads[key], self.slots["m"][key], self.slots["v"][key])
        )
        squares = kernels.adam(
            param,
            grad,
            m,
            v,
            lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.step_count,
            decay,
            _smallest_normal(param),
            self._partial[key],
        )
        return squares if measure else 0.0

    def _update_array(self, param, grad, slots, scratch, lr):
        m, v = slots["m"], slots["v"]
        # m = beta1 * m + (1 - beta1) * g
        m *= self.beta1
        xp.multiply(grad, 1.0 - self.beta1, out=scratch)
        m += scratch
        # v = beta2 * v + (1 - beta2) * g^2
        v *= self.beta2
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.beta2
        v += scratch
        # Moments below the smallest normal number become 0: subnormal arithmetic is slow, and
        # the moments of a weight whose gradient stays 0 decay through it (see kernels.adam).
        _flush_subnormal(m, scratch)
        _flush_subnormal(v, scratch)
        # param -= lr * m_hat / (sqrt(v_hat) + eps), with m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
        xp.divide(v, 1.0 - self.beta2**self.step_count, out=scratch)
        xp.sqrt(scratch, out=scratch)
        scratch += self.eps
        xp.divide(m, scratch, out=scratch)
        scratch *= lr / (1.0 - self.beta1**self.step_count)
        param -= scratch


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

    name = "rmsprop"
    slot_names = ("mean_square",)

    def __init__(self, params, grads, lr=0.001, weight_decay=0.0, clip_norm=None, rho=0.9, eps=1e-8):
        super().__init__(params, grads, lr, weight_decay, clip_norm)
        self.rho, self.eps = rho, eps

    def _update_array(self, param, grad, slots, scratch, lr):
        s = slots["mean_square"]
        s *= self.rho
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.rho
        s += scratch
        _flush_subnormal(s, scratch)  # a mean square that decays stops at 0, not in the slow subnormals
        xp.sqrt(s, out=scratch)
        scratch += self.eps
        xp.divide(grad, scratch, out=scratch)
        scratch *= lr
        param -= scratch


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (GradientDescent, SGD, Adam, RMSprop)}


def make_optimizer(name, params, grads, **options) -> Optimizer:
    """Build an optimizer by name over ``params``/``grads`` dicts with the same keys."""
    return OPTIMIZERS[name](params, grads, **options)


def make_model_optimizer(name, model, **options) -> Optimizer:
    """An optimizer over a model's parameters, its state keyed by their names (``dense_0.W``, ...)."""
    return OPTIMIZERS[name](model.params, model.grads, **options)
