"""One hand-computed step (or two, where state matters) for every optimizer."""

import math

import numpy as np
import pytest

from dltrain.engine.optimizers import OPTIMIZERS, make_optimizer


def _problem():
    params = {"0.W": np.array([[1.0, -2.0]], dtype=np.float32), "0.b": np.array([0.5], dtype=np.float32)}
    grads = {"0.W": np.array([[0.1, -0.4]], dtype=np.float32), "0.b": np.array([2.0], dtype=np.float32)}
    return params, grads


def test_gd_and_sgd_take_a_plain_step():
    for name in ("gd", "sgd"):
        params, grads = _problem()
        make_optimizer(name, params, grads, lr=0.5).step()
        np.testing.assert_allclose(params["0.W"], [[0.95, -1.8]], rtol=1e-6)
        np.testing.assert_allclose(params["0.b"], [-0.5], rtol=1e-6)


def test_sgd_momentum_accumulates_velocity():
    params, grads = _problem()
    optimizer = make_optimizer("sgd", params, grads, lr=0.1, momentum=0.9)
    optimizer.step()  # v = g; p = 1 - 0.1 * 0.1
    optimizer.step()  # v = 0.9 g + g = 1.9 g; p -= 0.1 * 1.9 * 0.1
    assert params["0.W"][0, 0] == pytest.approx(1.0 - 0.01 - 0.019, rel=1e-6)


def test_sgd_nesterov_looks_ahead():
    params, grads = _problem()
    optimizer = make_optimizer("sgd", params, grads, lr=0.1, momentum=0.9, nesterov=True)
    optimizer.step()  # v = g; step = g + 0.9 v = 1.9 g
    assert params["0.W"][0, 0] == pytest.approx(1.0 - 0.1 * 1.9 * 0.1, rel=1e-6)
    optimizer.step()  # v = 1.9 g; step = g + 0.9 * 1.9 g = 2.71 g
    assert params["0.W"][0, 0] == pytest.approx(1.0 - 0.019 - 0.1 * 2.71 * 0.1, rel=1e-6)


def test_adam_first_step_moves_each_weight_by_lr_in_the_gradient_direction():
    params, grads = _problem()
    make_optimizer("adam", params, grads, lr=0.01).step()
    # m_hat = g and v_hat = g^2 after one step, so the update is lr * g / (|g| + eps).
    np.testing.assert_allclose(params["0.W"], [[0.99, -1.99]], rtol=1e-6)
    np.testing.assert_allclose(params["0.b"], [0.49], rtol=1e-6)


def test_adam_second_step_matches_the_formula():
    params, grads = _problem()
    optimizer = make_optimizer("adam", params, grads, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    optimizer.step()
    grads["0.b"][:] = -1.0
    optimizer.step()
    m = 0.9 * (0.1 * 2.0) + 0.1 * -1.0
    v = 0.999 * (0.001 * 4.0) + 0.001 * 1.0
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    assert params["0.b"][0] == pytest.approx(0.49 - 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-5)


def test_rmsprop_step():
    params, grads = _problem()
    make_optimizer("rmsprop", params, grads, lr=0.01, rho=0.9, eps=1e-8).step()
    # s = 0.1 g^2, step = lr * g / sqrt(0.1 g^2) = lr * sign(g) / sqrt(0.1)
    assert params["0.W"][0, 0] == pytest.approx(1.0 - 0.01 / math.sqrt(0.1), rel=1e-5)
    assert params["0.W"][0, 1] == pytest.approx(-2.0 + 0.01 / math.sqrt(0.1), rel=1e-5)


def test_every_registered_optimizer_is_tested_and_keeps_float32():
    assert set(OPTIMIZERS) == {"gd", "sgd", "adam", "rmsprop"}
    for name in OPTIMIZERS:
        params, grads = _problem()
        make_optimizer(name, params, grads, lr=0.1).step()
        assert all(value.dtype == np.float32 for value in params.values())


def _tiny_model():
    from dltrain.engine.model import Sequential

    model = Sequential.build(
        3, [{"type": "dense", "units": 2, "activation": "tanh"}], 2, "linear", init_rng=np.random.default_rng(0)
    )
    rng = np.random.default_rng(1)
    for grad in model.grads.values():
        grad[...] = rng.normal(size=grad.shape)
    return model


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_weight_decay_and_clipping_through_the_model_optimizer(name):
    """The production path (make_model_optimizer over a model's flat arrays): the global gradient
    norm is clipped, weight matrices decay (coupled for sgd and rmsprop, decoupled for adam),
    biases do not."""
    from dltrain.engine.optimizers import make_model_optimizer

    model = _tiny_model()
    lr, decay, clip = 0.1, 0.5, 0.3
    before = {key: value.astype(np.float64) for key, value in model.params.items()}
    grads = {key: value.astype(np.float64) for key, value in model.grads.items()}
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    assert norm > clip  # the case under test: clipping applies
    clipped = {key: g * clip / (norm + 1e-12) for key, g in grads.items()}
    reported = make_model_optimizer(name, model, lr=lr, weight_decay=decay, clip_norm=clip).step()
    assert reported == pytest.approx(norm, rel=1e-5)  # the norm before clipping, for the divergence check
    for key, weight in before.items():
        decays = key.endswith(".W")
        if name == "sgd":
            expected = weight - lr * (clipped[key] + (decay * weight if decays else 0.0))
        elif name == "rmsprop":  # first step: s = (1 - rho) g^2 with g the clipped gradient plus decay * W
            g = clipped[key] + (decay * weight if decays else 0.0)
            expected = weight - lr * g / (np.sqrt(0.1 * g * g) + 1e-8)
        else:  # first Adam step: m_hat = g, v_hat = g**2, so the step is lr * g / (|g| + eps)
            shrunk = weight * (1 - lr * decay) if decays else weight
            expected = shrunk - lr * clipped[key] / (np.abs(clipped[key]) + 1e-8)
        np.testing.assert_allclose(model.params[key], expected, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize(
    "name, options", [("gd", {}), ("sgd", {"momentum": 0.9, "nesterov": True}), ("adam", {}), ("rmsprop", {})]
)
def test_the_update_in_blocks_equals_the_update_of_whole_arrays(name, options, monkeypatch):
    from dltrain.engine import optimizers

    rng = np.random.default_rng(5)
    shapes = {"dense_0.W": (13, 5), "dense_0.b": 5}
    start = {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}
    results = []
    for block in (1 << 20, 7):  # one block per array; blocks that split rows and end mid-array
        monkeypatch.setattr(optimizers, "UPDATE_BLOCK", block)
        params = {key: value.copy() for key, value in start.items()}
        grads = {key: np.empty_like(value) for key, value in params.items()}
        optimizer = make_optimizer(name, params, grads, lr=0.01, weight_decay=0.1, **options)
        gradient_rng = np.random.default_rng(6)
        for _ in range(3):
            for grad in grads.values():
                grad[...] = gradient_rng.normal(size=grad.shape)
            optimizer.step()
        results.append((params, optimizer.state()["arrays"]))
    (whole, whole_state), (blocked, blocked_state) = results
    assert not np.array_equal(whole["dense_0.W"], start["dense_0.W"])
    for key in whole:
        np.testing.assert_array_equal(blocked[key], whole[key])
    for key in whole_state:
        np.testing.assert_array_equal(blocked_state[key], whole_state[key])
