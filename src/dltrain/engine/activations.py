"""Activations: each forward beside its backward, in a name-keyed registry.

``forward(z)`` returns ``a = f(z)``; ``backward(z, a, grad)`` returns ``dL/dz`` given
``dL/da``, as ``grad`` times ``f'(z)``. Both are the formulas as written, on whole arrays, in
the dtype of ``z`` (float32 stays float32), with the functions of z's array module ``xp``
(NumPy, or CuPy on a GPU: the same names). The fused kernels (kernels.py) cover ReLU and the
linear output where a step is large; everything else runs these.
"""

from __future__ import annotations

import math

from .backend import array_module
from .backend import xp as host

_GELU_C = 0.7978845608028654  # sqrt(2 / pi)
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_ERF_SPLIT, _ERF_END = 2.0, 6.5  # beyond 6.5, erfc < 4e-20: erf is +-1 in float64

# NumPy has no erf. Below 2, erf(x) = x * core(x**2); above, erfc(x) = exp(-x**2 + tail(s))
# with s mapping [2, 6.5] to [-1, 1]. Both are polynomials (highest power first) evaluated by
# Horner's rule; ``fit_erf()`` computes them, and a test checks that these are its result and
# within 1e-13 of math.erf. Written out so that importing the engine fits nothing.
ERF_CORE = host.array(
    [
        7.338620977060387e-14,
        -3.1728698021188436e-12,
        7.069521705733916e-11,
        -1.1175645158660366e-09,
        1.4424922847333083e-08,
        -1.6270167389590868e-07,
        1.644462800955188e-06,
        -1.4923336499686579e-05,
        0.0001205511540368747,
        -0.0008548312937261311,
        0.005223977028415362,
        -0.026866170492372794,
        0.11283791668902597,
        -0.37612638903073614,
        1.1283791670954995,
    ]
)
ERF_TAIL = host.array(
    [
        -4.476137748708429e-09,
        1.3107617343034213e-08,
        -1.3636747105507877e-08,
        1.9771450262300048e-08,
        -3.6515312096270866e-08,
        -7.182440770775737e-08,
        7.54962950332621e-07,
        -3.5211766993948344e-06,
        1.34693549938462e-05,
        -4.661649708319137e-05,
        0.00015120325625540918,
        -0.00046905281325926903,
        0.0014115430045256634,
        -0.004173785914488588,
        0.012315426453691762,
        -0.03717608718712591,
        0.12107183199068337,
        -0.5034953599242469,
        -2.045269901469708,
    ]
)


def fit_erf():
    """(core, tail) as written in ``ERF_CORE`` and ``ERF_TAIL``: least-squares fits to
    ``math.erf`` on 400 Chebyshev nodes (error below 1e-13). Run by the tests, never at import."""
    nodes = host.cos(host.pi * (host.arange(400) + 0.5) / 400)
    squares = (nodes + 1) * _ERF_SPLIT**2 / 2
    roots = host.sqrt(squares)
    core_values = [math.erf(x) / x if x > 0 else 2 / math.sqrt(math.pi) for x in roots]
    core = host.polynomial.Polynomial.fit(squares, core_values, 14).convert().coef[::-1]
    points = _ERF_SPLIT + (nodes + 1) / 2 * (_ERF_END - _ERF_SPLIT)
    tail_values = [math.log(math.erfc(x)) + x * x for x in points]
    tail = host.polynomial.Polynomial.fit(nodes, tail_values, 18, domain=[-1, 1], window=[-1, 1]).convert().coef[::-1]
    return core, tail


def _horner(coefficients, x):
    xp = array_module(x)
    result = xp.full_like(x, coefficients[0])
    for coefficient in coefficients[1:]:
        result *= x
        result += coefficient
    return result


def erf(x, core=ERF_CORE, tail=ERF_TAIL):
    """The error function, element-wise, in the dtype of ``x`` (``core`` and ``tail``: the
    polynomials' coefficients, as ``fit_erf`` returns them)."""
    xp = array_module(x)
    size = xp.abs(x)
    near = xp.minimum(size, _ERF_SPLIT)
    small = near * _horner(core, near * near)
    far = xp.clip(size, _ERF_SPLIT, _ERF_END)
    middle, half_width = (_ERF_SPLIT + _ERF_END) / 2, (_ERF_END - _ERF_SPLIT) / 2
    large = 1.0 - xp.exp(_horner(tail, (far - middle) / half_width) - far * far)
    return xp.copysign(xp.where(size < _ERF_SPLIT, small, large), x).astype(x.dtype, copy=False)


def normal_cdf(z):
    """Phi(z), the standard normal distribution function."""
    return 0.5 * (1.0 + erf(z * _SQRT_HALF))


class Activation:
    name = ""
    default_init = "glorot_uniform"
    output_only = False

    @staticmethod
    def forward(z):
        raise NotImplementedError

    @staticmethod
    def backward(z, a, grad):
        raise NotImplementedError


class Linear(Activation):
    name = "linear"

    @staticmethod
    def forward(z):
        return z  # a = z (the same array: nothing to compute)

    @staticmethod
    def backward(z, a, grad):
        return grad


class Sigmoid(Activation):
    name = "sigmoid"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        # 1 / (1 + e^-z), written as e / (1 + e) with e = exp(-|z|) for z < 0: exp never
        # overflows, and small probabilities stay exact in float32 (1e-9 stays 1e-9;
        # 0.5 * (1 + tanh(z / 2)) rounds it to 0).
        small = xp.exp(-xp.abs(z))
        return xp.where(z >= 0, 1.0, small) / (1.0 + small)

    @staticmethod
    def backward(z, a, grad):
        return grad * (a * (1.0 - a))  # da/dz = a (1 - a)


class Tanh(Activation):
    name = "tanh"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return xp.tanh(z)

    @staticmethod
    def backward(z, a, grad):
        return grad * (1.0 - a * a)  # da/dz = 1 - a^2


class ReLU(Activation):
    name = "relu"
    default_init = "he_normal"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return xp.maximum(z, 0)

    @staticmethod
    def backward(z, a, grad):
        return grad * (a > 0)  # the ReLU mask: the gradient passes where z > 0, which is where a > 0


class LeakyReLU(Activation):
    name = "leaky_relu"
    default_init = "he_normal"
    slope = 0.01

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return xp.where(z > 0, z, LeakyReLU.slope * z)

    @staticmethod
    def backward(z, a, grad):
        xp = array_module(z)
        return xp.where(z > 0, grad, LeakyReLU.slope * grad)


class ELU(Activation):
    name = "elu"
    default_init = "he_normal"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return xp.where(z > 0, z, xp.expm1(xp.minimum(z, 0)))  # e^z - 1 for z <= 0 (never exp of a large z)

    @staticmethod
    def backward(z, a, grad):
        xp = array_module(z)
        return xp.where(z > 0, grad, grad * (a + 1.0))  # for z <= 0, a = e^z - 1, so da/dz = e^z = a + 1


class GELU(Activation):
    """GELU, exact: z * Phi(z) with the normal CDF Phi (PyTorch's and Keras's default)."""

    name = "gelu"
    default_init = "he_normal"

    @staticmethod
    def forward(z):
        return z * normal_cdf(z)

    @staticmethod
    def backward(z, a, grad):
        xp = array_module(z)
        # d/dz z Phi(z) = Phi(z) + z phi(z), with the normal density phi
        return grad * (normal_cdf(z) + z * (_INV_SQRT_2PI * xp.exp(-0.5 * z * z)))


class GELUTanh(Activation):
    """GELU, tanh approximation (Hendrycks & Gimpel), as used by GPT-2 and BERT.
    Run folders saved while ``gelu`` meant this form load with it (see api.load)."""

    name = "gelu_tanh"
    default_init = "he_normal"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return 0.5 * z * (1.0 + xp.tanh(_GELU_C * (z + 0.044715 * z**3)))

    @staticmethod
    def backward(z, a, grad):
        xp = array_module(z)
        t = xp.tanh(_GELU_C * (z + 0.044715 * z**3))
        return grad * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * z * z))


class Softplus(Activation):
    name = "softplus"

    @staticmethod
    def forward(z):
        xp = array_module(z)
        return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))  # log(1 + e^z), finite for any z

    @staticmethod
    def backward(z, a, grad):
        return grad * Sigmoid.forward(z)  # d/dz log(1 + e^z) = sigmoid(z)


class Softmax(Activation):
    """Row-wise softmax; a layer-level op, allowed only on the output layer."""

    name = "softmax"
    output_only = True

    @staticmethod
    def forward(z):
        xp = array_module(z)
        exponentials = xp.exp(z - z.max(axis=1, keepdims=True))  # shifted: never exp of a large number
        return exponentials / exponentials.sum(axis=1, keepdims=True)

    @staticmethod
    def backward(z, a, grad):
        # The Jacobian-vector product, row by row: dz = a * (g - sum(g * a)).
        return a * (grad - (grad * a).sum(axis=1, keepdims=True))


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Linear, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, GELU, GELUTanh, Softplus, Softmax)
}
HIDDEN_ACTIVATIONS = sorted(name for name, cls in ACTIVATIONS.items() if not cls.output_only)
