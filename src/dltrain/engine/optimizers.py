"""Optimizers: state in plain arrays keyed like the parameters, updated in place.

Every optimizer supports ``weight_decay`` (L2 added to the gradient; decoupled, AdamW-style,
for adam) on weight matrices only, and ``clip_norm`` (global gradient-norm clipping).
Each optimizer writes its update for one array (``_update_array``); the base class runs it
over every array, measuring the gradient norm on the way, on two threads when the arrays
are large enough for that to pay.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from .backend import available_cores, xp

# Below this many parameters a second thread costs more than it saves (35-100 µs per step
# to hand over work here). Measured alone, 670k parameters updated 1.5x faster on two
# threads; inside a training step on this 2-core machine the gain disappears (the update
# is then bound by memory), and for 100k parameters two threads were 8% slower a step.
PARALLEL_MIN_PARAMETERS = 400_000
_pool = None


def _worker_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dltrain-optimizer")
    return _pool


class Optimizer:
    name = ""
    slot_names: tuple = ()
    decoupled_decay = False  # True: weight decay acts on the weights, the gradients stay as computed

    def __init__(self, params, grads, lr=0.01, weight_decay=0.0, clip_norm=None, decayed=None):
        self.params = params
        self.grads = grads
        # (weight, gradient) pairs to decay; by default the entries named like "<layer>.W".
        self.decayed = decayed if decayed is not None else [
            (params[key], grads[key]) for key in params if key.endswith(".W")]
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.step_count = 0
        self._scratch = {key: xp.empty_like(value) for key, value in params.items()}
        self.slots = {name: {key: xp.zeros_like(value) for key, value in params.items()}
                      for name in self.slot_names}
        size = sum(value.size for value in params.values())
        self.parallel = len(params) > 1 and size >= PARALLEL_MIN_PARAMETERS and available_cores() > 1

    def gradient_norm(self) -> float:
        """Global L2 norm of all gradients."""
        return math.sqrt(sum(float(xp.vdot(g, g)) for g in self.grads.values()))

    def _prepare_gradients(self, norm):
        """Clip and (coupled) decay the gradients; ``norm`` is their norm, known whenever
        either applies."""
        if self.clip_norm is not None and norm > self.clip_norm:
            scale = self.clip_norm / (norm + 1e-12)
            for grad in self.grads.values():
                grad *= scale
        if self.weight_decay and not self.decoupled_decay:
            for weight, grad in self.decayed:
                grad += self.weight_decay * weight

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
        keys = list(self.params)
        if not self.parallel:
            squares = sum(self._update_one(key, constants, measure) for key in keys)
        else:
            # NumPy releases the GIL inside these element-wise loops, so two threads use two cores.
            pending = [_worker_pool().submit(self._update_one, key, constants, measure) for key in keys[1:]]
            try:
                squares = self._update_one(keys[0], constants, measure)
            finally:
                # Even on Ctrl-C: never return while the other thread still writes parameters.
                squares += sum(future.result() for future in pending)
        return math.sqrt(squares) if measure else gradient_norm

    def _update_one(self, key, constants, measure=False) -> float:
        """Update one array; the sum of its squared gradients when ``measure``, else 0."""
        param, grad = self.params[key], self.grads[key]
        squares = float(xp.vdot(grad, grad)) if measure else 0.0
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
        self.step_count = int(state["step_count"])
        for name, value in state["arrays"].items():
            slot, key = name.split("/", 1)
            xp.copyto(self.slots[slot][key], value)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch."""

    name = "sgd"

    def __init__(self, params, grads, lr=0.01, momentum=0.0, nesterov=False, **common):
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(params, grads, lr, **common)
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


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction; weight decay is decoupled (AdamW).

    The moments are kept as decayed sums, ``m_sum = m / (1 - beta1)`` and ``v_sum =
    v / (1 - beta2)``: updating a sum takes two passes (``s = beta * s + g``) where the
    average takes three, and the constant factors fold into the step size."""

    name = "adam"
    slot_names = ("m_sum", "v_sum")
    decoupled_decay = True

    def __init__(self, params, grads, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, **common):
        super().__init__(params, grads, lr, **common)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _begin_step(self, lr, gradient_norm):
        self._prepare_gradients(gradient_norm)
        if self.weight_decay:
            for weight, _ in self.decayed:
                weight *= 1.0 - lr * self.weight_decay
        correction1 = 1.0 - self.beta1 ** self.step_count
        correction2 = 1.0 - self.beta2 ** self.step_count
        # lr * m_hat / (sqrt(v_hat) + eps) with m_hat = (1 - beta1) * m_sum / c1 and
        # v_hat = (1 - beta2) * v_sum / c2 is step_size * m_sum / (sqrt(v_sum) + eps * r),
        # r = sqrt(c2 / (1 - beta2)): one in-place pass each.
        r = math.sqrt(correction2 / (1.0 - self.beta2))
        return lr * (1.0 - self.beta1) * r / correction1, self.eps * r

    def _update_array(self, param, grad, slots, scratch, constants):
        step_size, scaled_eps = constants
        m_sum, v_sum = slots["m_sum"], slots["v_sum"]
        m_sum *= self.beta1
        m_sum += grad
        xp.multiply(grad, grad, out=scratch)
        v_sum *= self.beta2
        v_sum += scratch
        xp.sqrt(v_sum, out=scratch)
        scratch += scaled_eps
        xp.divide(m_sum, scratch, out=scratch)
        scratch *= step_size
        param -= scratch


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

    name = "rmsprop"
    slot_names = ("mean_square",)

    def __init__(self, params, grads, lr=0.001, rho=0.9, eps=1e-8, **common):
        super().__init__(params, grads, lr, **common)
        self.rho, self.eps = rho, eps

    def _update_array(self, param, grad, slots, scratch, lr):
        s = slots["mean_square"]
        s *= self.rho
        xp.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.rho
        s += scratch
        xp.sqrt(s, out=scratch)
        scratch += self.eps
        xp.divide(grad, scratch, out=scratch)
        scratch *= lr
        param -= scratch


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (GradientDescent, SGD, Adam, RMSprop)
}


def make_optimizer(name, params, grads, **options) -> Optimizer:
    """Build an optimizer by name over ``params``/``grads`` dicts with the same keys."""
    return OPTIMIZERS[name](params, grads, **options)


def make_model_optimizer(name, model, **options) -> Optimizer:
    """An optimizer over a model's flat parameter and gradient arrays, as two halves.

    Two contiguous halves let a large update run on two threads; the split depends only
    on the parameter count, so results and checkpoints never depend on the machine."""
    half = model.flat_params.size // 2
    params = {"part0": model.flat_params[:half], "part1": model.flat_params[half:]}
    grads = {"part0": model.flat_grads[:half], "part1": model.flat_grads[half:]}
    return OPTIMIZERS[name](params, grads, decayed=model.decayed(), **options)
