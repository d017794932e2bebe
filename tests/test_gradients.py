"""Every activation, loss and layer against float64 central differences."""

import numpy as np
import pytest

from conftest import assert_close, numerical_gradient
from dltrain.engine.activations import ACTIVATIONS
from dltrain.engine.layers import Dense, Dropout
from dltrain.engine.losses import LOSSES, make_loss
from dltrain.engine.model import Sequential

RNG = np.random.default_rng(42)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_backward_matches_central_differences(name):
    activation = ACTIVATIONS[name]
    # Stay away from kinks (relu at 0) where a central difference is not a derivative.
    z = RNG.normal(size=(4, 5))
    z[np.abs(z) < 1e-2] = 0.5
    upstream = RNG.normal(size=z.shape)

    def scalar():
        return float(np.sum(activation.forward(z) * upstream))

    a = activation.forward(z)
    analytic = activation.backward(z, a, upstream.copy())
    assert_close(analytic, numerical_gradient(scalar, z), rtol=1e-6, atol=1e-8)


def _targets(loss_name, n, k):
    if loss_name == "cross_entropy":
        return RNG.integers(0, k, size=n)
    if loss_name == "binary_cross_entropy":
        return RNG.integers(0, 2, size=(n, 1)).astype(np.float64)
    return RNG.normal(size=(n, k))


LOSS_CASES = [
    ("cross_entropy", "softmax", 4),
    ("binary_cross_entropy", "sigmoid", 1),
    ("mse", "linear", 3),
    ("mse", "sigmoid", 2),
    ("mse", "tanh", 2),
    ("mse", "softmax", 3),
]


@pytest.mark.parametrize("loss_name,activation,k", LOSS_CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradient_matches_central_differences(loss_name, activation, k, weighted):
    loss = make_loss(loss_name, activation)
    logits = RNG.normal(size=(6, k))
    targets = _targets(loss_name, 6, k)
    weights = RNG.uniform(0.5, 2.0, size=6) if weighted else None
    out = np.empty_like(logits)
    value = loss.value_and_gradient(logits, targets, out=out, sample_weight=weights)
    assert value == pytest.approx(loss.value(logits, targets, sample_weight=weights), rel=1e-12)
    numeric = numerical_gradient(lambda: loss.value(logits, targets, sample_weight=weights), logits)
    assert_close(out, numeric, rtol=1e-6, atol=1e-9)


def test_every_registered_loss_is_gradient_checked():
    assert {case[0] for case in LOSS_CASES} == set(LOSSES)


def test_dense_layer_gradients_for_weights_bias_and_input():
    layer = Dense(5, 3, "glorot_uniform", np.random.default_rng(0), dtype=np.float64)
    x = RNG.normal(size=(4, 5))
    upstream = RNG.normal(size=(4, 3))

    def scalar():
        return float(np.sum(layer.forward(x, training=True) * upstream))

    layer.forward(x, training=True)
    input_grad = layer.backward(upstream.copy()).copy()
    assert_close(layer.grads["W"], numerical_gradient(scalar, layer.params["W"]))
    assert_close(layer.grads["b"], numerical_gradient(scalar, layer.params["b"]))
    assert_close(input_grad, numerical_gradient(scalar, x))


def test_dropout_gradient_uses_the_same_mask_and_is_identity_at_inference():
    layer = Dropout(0.5, np.random.default_rng(3))
    x = RNG.normal(size=(50, 8))
    out = layer.forward(x, training=True).copy()
    kept = out != 0
    assert 0.3 < kept.mean() < 0.7
    assert_close(out[kept], x[kept] * 2.0)
    grad = layer.backward(np.ones_like(x)).copy()
    assert_close(grad, kept * 2.0)
    assert np.array_equal(layer.forward(x, training=False), x)


@pytest.mark.parametrize(
    "loss_name,output", [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"), ("mse", "linear")]
)
def test_whole_network_gradient(loss_name, output):
    hidden = [
        {"type": "dense", "units": 6, "activation": "tanh"},
        {"type": "dense", "units": 5, "activation": "gelu"},
        {"type": "dense", "units": 4, "activation": "gelu_tanh"},
    ]
    k = 1 if output == "sigmoid" else 3
    model = Sequential.build(4, hidden, k, output, init_rng=np.random.default_rng(1), dtype=np.float64)
    loss = make_loss(loss_name, output)
    x = RNG.normal(size=(7, 4))
    targets = _targets(loss_name, 7, k)
    grad = np.empty((7, k))
    loss.value_and_gradient(model.forward(x, training=True), targets, out=grad)
    model.backward(grad)
    for key, param in model.params.items():
        numeric = numerical_gradient(lambda: loss.value(model.forward(x), targets), param)
        assert_close(model.grads[key], numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_softmax_and_cross_entropy_stay_finite_for_huge_logits(scale):
    logits = np.array([[scale, 0.0, -scale], [0.0, scale, 1.0]], dtype=np.float32)
    targets = np.array([2, 0])
    loss = make_loss("cross_entropy", "softmax")
    grad = np.empty_like(logits)
    value = loss.value_and_gradient(logits, targets, out=grad)
    wide = logits.astype(np.float64)
    top = wide.max(axis=1)
    expected = np.mean(top + np.log(np.exp(wide - top[:, None]).sum(axis=1)) - wide[[0, 1], targets])
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(grad).all()
    probabilities = loss.predict(logits)
    assert np.isfinite(probabilities).all()
    assert_close(probabilities.sum(axis=1), [1.0, 1.0], rtol=1e-6)


def test_binary_cross_entropy_finite_for_huge_logits():
    loss = make_loss("binary_cross_entropy", "sigmoid")
    logits = np.array([[1e4], [-1e4]], dtype=np.float32)
    targets = np.array([[0.0], [1.0]], dtype=np.float32)
    grad = np.empty_like(logits)
    value = loss.value_and_gradient(logits, targets, out=grad)
    assert value == pytest.approx(1e4, rel=1e-6)
    assert np.isfinite(grad).all()


def test_loss_refuses_an_output_activation_it_cannot_fuse():
    with pytest.raises(ValueError, match="softmax"):
        make_loss("cross_entropy", "sigmoid")


def test_relu_forward_is_exactly_max_z_0():
    # ReLU must equal max(z, 0) exactly,
    # for signed zeros, subnormals and values up to half the float32 range.
    tiny, huge = np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).max / 2
    z = np.concatenate(
        [
            RNG.normal(size=1000) * 10.0 ** RNG.integers(-30, 30, size=1000),
            [0.0, -0.0, tiny, -tiny, huge, -huge, 1.0, -1.0],
        ]
    ).astype(np.float32)
    out = ACTIVATIONS["relu"].forward(z)
    assert np.array_equal(out, np.maximum(z, np.float32(0)))
    assert not np.signbit(out).any()  # no -0.0 either


def test_sigmoid_keeps_tiny_probabilities_in_float32():
    z = np.array([-20.6, -80.0, 0.0, 30.0], dtype=np.float32)
    p = ACTIVATIONS["sigmoid"].forward(z)
    np.testing.assert_allclose(p[:2], 1.0 / (1.0 + np.exp(-z[:2].astype(np.float64))), rtol=1e-5)
    assert p[0] > 0 and p[2] == 0.5 and p[3] == 1.0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_keep_float32(name):
    activation = ACTIVATIONS[name]
    z = RNG.normal(size=(3, 4)).astype(np.float32)
    a = activation.forward(z)
    assert a.dtype == np.float32
    assert activation.backward(z, a, np.ones_like(z)).dtype == np.float32
