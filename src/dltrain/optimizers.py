"""Optimizers: state in plain arrays keyed like the parameters, updated in place.

Every optimizer supports ``weight_decay`` (L2 added to the gradient; decoupled, AdamW-style,
for adam) on weight matrices only, and ``clip_norm`` (global gradient-norm clipping).
"""

from __future__ import annotations

import math

from .backend import xp


class Optimizer:
    name = ""

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
        self._gradient_norm = None
        self.slots = {}  # name -> {param key -> array}
        self._scratch = {key: xp.empty_like(value) for key, value in params.items()}

    def _slot(self, name):
        if name not in self.slots:
            self.slots[name] = {key: xp.zeros_like(value) for key, value in self.params.items()}
        return self.slots[name]

    def gradient_norm(self) -> float:
        """Global L2 norm of all gradients."""
        return math.sqrt(sum(float(xp.vdot(g, g)) for g in self.grads.values()))

    def _prepare_gradients(self, coupled_decay=True):
        if self.clip_norm is not None:
            norm = self._gradient_norm if self._gradient_norm is not None else self.gradient_norm()
            if norm > self.clip_norm:
                scale = self.clip_norm / (norm + 1e-12)
                for grad in self.grads.values():
                    grad *= scale
        if coupled_decay and self.weight_decay:
            for weight, grad in self.decayed:
                grad += self.weight_decay * weight

    def step(self, lr=None, gradient_norm=None):
        """One update of every parameter from its gradient, at ``lr`` (default: ``self.lr``).

        ``gradient_norm``, when the caller has already computed it, saves clipping a pass."""
        self.step_count += 1
        self._gradient_norm = gradient_norm
        self._update(self.lr if lr is None else lr)

    def _update(self, lr):
        raise NotImplementedError

    def state(self):
        """Arrays and counters needed to continue exactly where this optimizer stopped."""
        arrays = {f"{slot}/{key}": value for slot, values in self.slots.items() for key, value in values.items()}
        return {"step_count": self.step_count, "arrays": arrays}

    def load_state(self, state):
        self.step_count = int(state["step_count"])
        for name, value in state["arrays"].items():
            slot, key = name.split("/", 1)
            xp.copyto(self._slot(slot)[key], value)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as in PyTorch."""

    name = "sgd"

    def __init__(self, params, grads, lr=0.01, momentum=0.0, nesterov=False, **common):
        super().__init__(params, grads, lr, **common)
        self.momentum = momentum
        self.nesterov = nesterov

    def _update(self, lr):
        self._prepare_gradients()
        if not self.momentum:
            for key, param in self.params.items():
                scratch = xp.multiply(self.grads[key], lr, out=self._scratch[key])
                param -= scratch
            return
        velocity = self._slot("velocity")
        for key, param in self.params.items():
            grad, v, scratch = self.grads[key], velocity[key], self._scratch[key]
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
    """Adam (Kingma & Ba) with PyTorch's bias correction; weight decay is decoupled (AdamW)."""

    name = "adam"

    def __init__(self, params, grads, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, **common):
        super().__init__(params, grads, lr, **common)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, lr):
        self._prepare_gradients(coupled_decay=False)
        if self.weight_decay:
            for weight, _ in self.decayed:
                weight *= 1.0 - lr * self.weight_decay
        first, second = self._slot("m"), self._slot("v")
        correction1 = 1.0 - self.beta1 ** self.step_count
        root_correction2 = math.sqrt(1.0 - self.beta2 ** self.step_count)
        # lr * m_hat / (sqrt(v_hat) + eps), rearranged so each step is one in-place pass:
        # (lr * rc2 / c1) * m / (sqrt(v) + eps * rc2).
        step_size = lr * root_correction2 / correction1
        scaled_eps = self.eps * root_correction2
        for key, param in self.params.items():
            grad, m, v, scratch = self.grads[key], first[key], second[key], self._scratch[key]
            m -= grad                      # m = beta1 * m + (1 - beta1) * g
            m *= self.beta1
            m += grad
            xp.multiply(grad, grad, out=scratch)
            v -= scratch                   # v = beta2 * v + (1 - beta2) * g^2
            v *= self.beta2
            v += scratch
            xp.sqrt(v, out=scratch)
            scratch += scaled_eps
            xp.divide(m, scratch, out=scratch)
            scratch *= step_size
            param -= scratch


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

    name = "rmsprop"

    def __init__(self, params, grads, lr=0.001, rho=0.9, eps=1e-8, **common):
        super().__init__(params, grads, lr, **common)
        self.rho, self.eps = rho, eps

    def _update(self, lr):
        self._prepare_gradients()
        mean_square = self._slot("mean_square")
        for key, param in self.params.items():
            grad, s, scratch = self.grads[key], mean_square[key], self._scratch[key]
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
    """An optimizer over a model's flat parameter and gradient arrays (one vectorised update)."""
    return OPTIMIZERS[name]({"all": model.flat_params}, {"all": model.flat_grads}, decayed=model.decayed(),
                            **options)
