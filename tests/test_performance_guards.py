"""Guards for the optimised training step (not timings): no allocation churn, float32, same numbers."""

import tracemalloc

import numpy as np
import pytest

from dltrain.build import Seeds, array_trainer
from dltrain.engine import kernels
from dltrain.engine.backend import threads_for


def _trainer(batch_size=32, rows=512, optimizer="adam", fused=None):
    rng = np.random.default_rng(0)
    features = rng.random((rows, 784), dtype=np.float32)
    targets = rng.integers(0, 10, size=rows)
    settings = {
        "model": {"layers": [{"units": 128, "activation": "relu"}]},
        "optimizer": {"name": optimizer, "lr": 0.001},
        "train": {"epochs": 1, "batch_size": batch_size},
    }
    seeds = Seeds(*(np.random.default_rng(seed) for seed in (0, 1, 2, 3)))
    trainer = array_trainer(settings, features, targets, list(range(10)), seeds=seeds, fused=fused)
    return trainer, features, targets


def _allocations_over_ten_steps(trainer):
    """(peak bytes allocated, bytes still held) during 10 training steps after the first ones."""
    trainer.train_epoch(1, 0.001, max_batches=2)  # first steps allocate the reused buffers
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        trainer.train_epoch(2, 0.001, max_batches=10)
        after = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, sum(stat.size_diff for stat in after.compare_to(before, "filename") if stat.size_diff > 0)


@pytest.mark.skipif(not kernels.active(), reason="no numba")
def test_training_steps_allocate_no_new_large_arrays():
    peak, grown = _allocations_over_ten_steps(_trainer(fused=True)[0])
    # A batch of inputs is 32*784*4 = 100 KB and the weights 400 KB: nothing that size may be
    # allocated per step on the fused path, even temporarily.
    assert peak < 64 * 1024
    assert grown < 64 * 1024


def test_the_reference_path_frees_its_temporaries_every_step():
    # The reference path computes whole-array expressions, as written in the textbook: their
    # temporaries come and go with each step, and nothing accumulates.
    _, grown = _allocations_over_ten_steps(_trainer(fused=False)[0])
    assert grown < 64 * 1024


def test_parameters_gradients_and_optimizer_state_stay_float32():
    trainer, _, _ = _trainer()
    trainer.train_epoch(1, 0.001, max_batches=3)
    assert trainer.model.flat_params.dtype == np.float32
    assert all(value.dtype == np.float32 for value in trainer.model.params.values())
    assert all(value.dtype == np.float32 for value in trainer.model.grads.values())
    assert all(value.dtype == np.float32 for value in trainer.optimizer.state()["arrays"].values())


def _reference_step(weights, features, targets, lr, moments, step):
    """The textbook step, written plainly in float64: forward, fused gradient, backward, Adam."""
    W1, b1, W2, b2 = weights
    hidden = np.maximum(features @ W1 + b1, 0)
    logits = hidden @ W2 + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    delta = probabilities.copy()
    delta[np.arange(len(targets)), targets] -= 1
    delta /= len(targets)
    grads = [None, None, hidden.T @ delta, delta.sum(axis=0)]
    back = (delta @ W2.T) * (hidden > 0)
    grads[0], grads[1] = features.T @ back, back.sum(axis=0)
    updated = []
    for index, (param, grad) in enumerate(zip(weights, grads)):
        m, v = moments[index]
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        moments[index] = (m, v)
        m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
        updated.append(param - lr * m_hat / (np.sqrt(v_hat) + 1e-8))
    return updated


@pytest.mark.parametrize(
    "fused",
    [pytest.param(True, marks=pytest.mark.skipif(not kernels.active(), reason="no numba")), False],
    ids=["fused", "reference"],
)
def test_optimised_steps_match_the_plain_reference(fused):
    trainer, features, targets = _trainer(batch_size=512, rows=512, fused=fused)
    trainer.batches.shuffle = False
    params = trainer.model.params
    weights = [params[key].astype(np.float64) for key in ("dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b")]
    moments = [(np.zeros_like(w), np.zeros_like(w)) for w in weights]
    for step in range(1, 4):
        trainer.train_epoch(step, 0.001)
        weights = _reference_step(weights, features.astype(np.float64), targets, 0.001, moments, step)
    for key, expected in zip(("dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"), weights):
        np.testing.assert_allclose(params[key], expected, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize(
    "macs,cores,expected",
    [
        (32 * 784 * 128, 2, 1),
        (256 * 784 * 128, 2, 2),
        (32 * 784 * 128, 16, 1),
        (256 * 784 * 512, 16, 16),
        (128 * 784 * 128, 16, 3),
    ],
)
def test_blas_threads_grow_with_the_problem_never_past_the_cores(macs, cores, expected):
    assert threads_for(macs, cores) == expected


@pytest.mark.parametrize(
    "name,options",
    [
        ("adam", {}),
        ("sgd", {"momentum": 0.9}),
        ("rmsprop", {}),
        ("adam", {"fused": True}),
        ("sgd", {"weight_decay": 0.1}),
        ("adam", {"clip_norm": 0.5}),
    ],
)
def test_step_returns_the_gradient_norm_it_measured_on_the_way(name, options):
    # The training loop checks for divergence with the norm the step returns, instead of a
    # separate pass over all gradients; it must be the norm before clipping and decay.
    from dltrain.engine import optimizers

    rng = np.random.default_rng(3)
    params = {"a.W": rng.normal(size=(30, 41)).astype(np.float32), "b.W": rng.normal(size=777).astype(np.float32)}
    grads = {key: np.empty_like(value) for key, value in params.items()}
    options = dict(options)
    fused = options.pop("fused", False)
    optimizer = optimizers.make_optimizer(name, params, grads, lr=0.01, **options)
    optimizer.fused = fused
    for _ in range(3):
        for grad in grads.values():
            grad[...] = rng.normal(size=grad.shape)
        expected = optimizer.gradient_norm()
        assert optimizer.step() == pytest.approx(expected, rel=1e-6)
