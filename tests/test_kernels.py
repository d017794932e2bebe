"""The fused kernels against the reference path, results against the thread count, and the
NumPy fallback where numba is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dltrain.build import Seeds, array_trainer
from dltrain.engine import kernels, threads
from dltrain.engine.backend import compute_threads
from dltrain.engine.layers import Dense
from dltrain.engine.losses import make_loss
from dltrain.engine.optimizers import make_optimizer

needs_numba = pytest.mark.skipif(not kernels.active(), reason="numba not installed: only the reference path runs")

# 1 row, 1 column, and sizes that no thread count divides.
SHAPES = [(1, 7), (9, 1), (37, 13), (131, 67)]
DTYPES = [np.float32, np.float64]
# float32 kernels add in float32 like NumPy, but a few sums add in another order or in float64.
TOLERANCE = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}


@pytest.fixture(params=["serial", "parallel"])
def variant(request, monkeypatch):
    """Run each kernel test with the serial and with the parallel version of the kernels."""
    if request.param == "parallel":
        monkeypatch.setattr(kernels, "_threads", None)  # on one thread the serial versions run
        monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 0)
        monkeypatch.setattr(kernels, "BLOCK", 16)  # several blocks even for small arrays
    return request.param


def _dense(shape_in, units, dtype, activation, fused):
    layer = Dense(shape_in, units, "he_normal", np.random.default_rng(5), dtype, activation)
    layer.fused = fused
    return layer


@needs_numba
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_dense_kernels_equal_the_reference(shape, dtype, activation, variant):
    rows, units = shape
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 11)).astype(dtype)
    upstream = rng.normal(size=(rows, units)).astype(dtype)
    reference, fused = (_dense(11, units, dtype, activation, flag) for flag in (False, True))
    reference.params["b"][...] = fused.params["b"][...] = rng.normal(size=units)
    expected = reference.forward(x, training=True).copy()
    got = fused.forward(x, training=True).copy()
    np.testing.assert_allclose(got, expected, **TOLERANCE[dtype])
    expected_dx = reference.backward(upstream.copy()).copy()
    got_dx = fused.backward(upstream.copy()).copy()
    for key in ("W", "b"):
        np.testing.assert_allclose(fused.grads[key], reference.grads[key], **TOLERANCE[dtype])
    np.testing.assert_allclose(got_dx, expected_dx, **TOLERANCE[dtype])
    assert got.dtype == got_dx.dtype == dtype


@needs_numba
@pytest.mark.parametrize("shape", [(1, 4), (9, 1), (37, 10), (130, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_kernel_equals_softmax_minus_onehot(shape, dtype, weighted, variant):
    rows, classes = shape
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=shape) * 5).astype(dtype)
    targets = rng.integers(0, classes, size=rows)
    weights = rng.uniform(0.5, 2.0, size=rows).astype(dtype) if weighted else None
    reference, fused = make_loss("cross_entropy", "softmax"), make_loss("cross_entropy", "softmax")
    fused.fused = True
    expected_grad, got_grad = np.empty_like(logits), np.empty_like(logits)
    expected = reference.value_and_gradient(logits, targets, out=expected_grad, sample_weight=weights)
    got = fused.value_and_gradient(logits, targets, out=got_grad, sample_weight=weights)
    assert got == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(got_grad, expected_grad, **TOLERANCE[dtype])
    assert got_grad.dtype == dtype


@needs_numba
@pytest.mark.parametrize("size", [1, 7, 1001])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_kernel_equals_the_textbook_update(size, dtype, weight_decay, variant):
    rng = np.random.default_rng(3)
    start = {"dense_0.W": rng.normal(size=(size, 3)).astype(dtype), "dense_0.b": rng.normal(size=size).astype(dtype)}
    runs = {}
    for fused in (False, True):
        params = {key: value.copy() for key, value in start.items()}
        grads = {key: np.empty_like(value) for key, value in params.items()}
        optimizer = make_optimizer("adam", params, grads, lr=0.01, weight_decay=weight_decay)
        optimizer.fused = fused
        gradient_rng = np.random.default_rng(4)
        norms = []
        for _ in range(3):
            for grad in grads.values():
                grad[...] = gradient_rng.normal(size=grad.shape)
            norms.append(optimizer.step())
        runs[fused] = params, optimizer.state()["arrays"], norms
    (expected, expected_state, expected_norms), (got, got_state, got_norms) = runs[False], runs[True]
    for key in start:
        np.testing.assert_allclose(got[key], expected[key], **TOLERANCE[dtype])
    assert sorted(got_state) == sorted(expected_state) == ["m/dense_0.W", "m/dense_0.b", "v/dense_0.W", "v/dense_0.b"]
    for key in got_state:
        np.testing.assert_allclose(got_state[key], expected_state[key], **TOLERANCE[dtype])
    np.testing.assert_allclose(got_norms, expected_norms, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_numba), False], ids=["fused", "reference"])
def test_adam_sets_subnormal_moments_to_zero(dtype, fused, variant):
    # A weight whose gradient stays 0 has its moments decay by beta1 and beta2 each step; once
    # they drop below the smallest normal number both paths store 0 (subnormal arithmetic is
    # slow). Every other moment is the textbook value, and the weights are unchanged by it.
    tiny = np.finfo(dtype).tiny
    size = 1001
    rows = np.arange(size)
    m0 = np.where(rows % 2, 1.05 * tiny, 20 * tiny) * np.where(rows % 3, 1, -1)  # odd rows fall below tiny
    v0 = np.where(rows % 5 == 0, 1.0005 * tiny, 1.0)  # every fifth row falls below tiny
    params = {"dense_0.W": np.linspace(-1, 1, size).astype(dtype).reshape(size, 1)}
    start = params["dense_0.W"].copy()
    grads = {"dense_0.W": np.zeros_like(start)}
    optimizer = make_optimizer("adam", params, grads, lr=0.01)
    optimizer.fused = fused
    m, v = optimizer.slots["m"]["dense_0.W"][:, 0], optimizer.slots["v"]["dense_0.W"][:, 0]
    m[...], v[...] = m0, v0
    optimizer.step()
    textbook_m, textbook_v = dtype(0.9) * m0.astype(dtype), dtype(0.999) * v0.astype(dtype)
    below_m, below_v = np.abs(textbook_m) < tiny, textbook_v < tiny
    assert below_m.sum() == size // 2 and below_v.sum() == (size + 4) // 5
    assert np.all(textbook_m[below_m] != 0) and np.all(textbook_v[below_v] != 0)  # subnormal, not 0
    assert np.all(m[below_m] == 0) and np.all(v[below_v] == 0)
    np.testing.assert_array_equal(m[~below_m], textbook_m[~below_m])
    np.testing.assert_array_equal(v[~below_v], textbook_v[~below_v])
    np.testing.assert_allclose(params["dense_0.W"], start, rtol=0, atol=np.finfo(dtype).eps)


@pytest.mark.parametrize(
    "name, options, slot, factor",
    [("sgd", {"momentum": 0.9}, "velocity", 0.9), ("rmsprop", {"rho": 0.9}, "mean_square", 0.9)],
)
def test_decaying_optimizer_state_stops_at_zero_not_in_the_subnormals(name, options, slot, factor):
    tiny = np.finfo(np.float32).tiny
    params = {"dense_0.W": np.ones((4, 1), np.float32)}
    grads = {"dense_0.W": np.zeros((4, 1), np.float32)}
    optimizer = make_optimizer(name, params, grads, lr=0.01, **options)
    state = optimizer.slots[slot]["dense_0.W"][:, 0]
    state[...] = [1.05 * tiny, 2 * tiny, 0.5, 1.05 * tiny if name == "rmsprop" else -1.05 * tiny]
    expected = np.float32(factor) * state
    assert np.count_nonzero((expected != 0) & (np.abs(expected) < tiny)) == 2  # subnormal after one step
    optimizer.step()
    assert state.tolist() == [0.0, expected[1], expected[2], 0.0]


def _wide_trainer(fused, rows=300, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.random((rows, 40), dtype=np.float32)
    targets = rng.integers(0, 5, size=rows)
    settings = {
        "model": {
            "layers": [
                {"units": 33, "activation": "relu"},
                {"type": "dropout", "rate": 0.2},
                {"units": 17, "activation": "relu"},
            ]
        },
        "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.01},
        "train": {"epochs": 2, "batch_size": 64},
    }
    seeds = Seeds(*(np.random.default_rng(seed) for seed in (0, 1, 2, 7)))  # split, init, shuffle, dropout
    return array_trainer(settings, features, targets, list(range(5)), seeds=seeds, fused=fused)


@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_numba), False], ids=["fused", "reference"])
def test_the_same_seed_gives_a_bit_identical_model_on_1_and_2_threads(fused, monkeypatch):
    # Every kernel runs its parallel version, so two threads really split the work.
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "BLOCK", 64)
    models = []
    for count in (1, 2):
        trainer = _wide_trainer(fused)
        trainer.blas_threads = count
        trainer.kernel_threads = count if fused else None
        trainer.run()
        models.append(trainer.model.state())
    for key in models[0]:
        assert np.array_equal(models[0][key], models[1][key]), key


@needs_numba
def test_fused_and_reference_paths_train_the_same_model_within_rounding():
    trained = {}
    for fused in (False, True):
        trainer = _wide_trainer(fused)
        trainer.run()
        trained[fused] = trainer.model.state(), trainer.history[-1]["loss"]
    for key, value in trained[False][0].items():
        np.testing.assert_allclose(trained[True][0][key], value, rtol=1e-3, atol=1e-5)
    assert trained[True][1] == pytest.approx(trained[False][1], rel=1e-4)


def test_without_numba_the_reference_path_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails, as where it is not installed
    monkeypatch.delenv(threads.KERNELS_VARIABLE, raising=False)
    assert not kernels.installed() and not kernels.active()
    assert "reference NumPy path (numba not installed)" in kernels.describe()
    trainer = _wide_trainer(fused=None, rows=64)
    assert trainer.fused is False
    trainer.run()
    assert np.isfinite(trainer.history[-1]["loss"])


def test_a_numba_that_fails_to_import_leaves_the_reference_path(monkeypatch):
    monkeypatch.setattr(kernels, "_numba", None)
    monkeypatch.setattr(kernels, "installed", lambda: True)  # found on the path...
    monkeypatch.setitem(sys.modules, "numba", None)  # ...but its import fails
    monkeypatch.delenv(threads.KERNELS_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "FUSED_MIN_MACS", 1)
    assert kernels.active() and not kernels.ready()
    trainer = _wide_trainer(fused=None, rows=64)
    assert trainer.fused is False
    trainer.run()
    assert np.isfinite(trainer.history[-1]["loss"])


def test_the_environment_variable_forces_the_reference_path(monkeypatch):
    monkeypatch.setenv(threads.KERNELS_VARIABLE, "reference")
    assert not kernels.active()
    assert kernels.describe() == "reference NumPy path (DLTRAIN_KERNELS=reference)"
    settings = {"model": {"layers": [{"units": 128, "activation": "relu"}]}, "train": {"epochs": 1, "batch_size": 256}}
    features, targets = np.zeros((256, 784), np.float32), np.arange(256) % 10
    trainer = array_trainer(settings, features, targets, list(range(10)))
    assert trainer.fused is False and not any(layer.fused for layer in trainer.model.layers)


@needs_numba
def test_large_problems_take_the_fused_path_and_small_ones_the_reference(monkeypatch):
    monkeypatch.delenv(threads.KERNELS_VARIABLE, raising=False)
    big = _wide_trainer(fused=None)
    assert big.fused is False  # 64 x 40 x 33 multiply-adds: below threads.FUSED_MIN_MACS
    monkeypatch.setattr(threads, "FUSED_MIN_MACS", 1)
    small_limit = _wide_trainer(fused=None)
    assert small_limit.fused is True and small_limit.loss.fused and small_limit.optimizer.fused


def test_a_small_fit_never_loads_numba(tmp_path):
    # The first `dltrain fit configs/iris.yaml` stays quick: importing numba alone takes half a second.
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; from dltrain.commands.fit import fit; "
        f"fit({str(root / 'configs' / 'iris.yaml')!r}, ['train.epochs=2'], out={str(tmp_path / 'run')!r}); "
        "print('numba loaded' if 'numba' in sys.modules else 'numba not loaded')"
    )
    env = {key: value for key, value in os.environ.items() if key != threads.KERNELS_VARIABLE}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "numba not loaded"


def test_version_names_the_active_path():
    env = dict(os.environ, **{threads.KERNELS_VARIABLE: "reference"})
    result = subprocess.run(
        [sys.executable, "-m", "dltrain", "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[:2] == ["dltrain 0.1.0", "engine: reference NumPy path (DLTRAIN_KERNELS=reference)"]
    assert lines[2].startswith("gpu: ") and len(lines) == 3


def test_thread_pools_are_set_to_yield_without_overriding_the_user():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.configure_environment(environ)
    assert environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice stands
    assert environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert environ["NUMBA_THREADING_LAYER_PRIORITY"].split()[0] == "omp"
    assert "OPENBLAS_CORETYPE" not in environ and "OPENBLAS_L2_SIZE" not in environ


def test_dltrain_sets_the_pools_up_before_numpy_loads():
    code = "import dltrain, os, sys; print('numpy' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.split() == ["False", "PASSIVE"]


def test_kernels_are_cached_beside_the_package_or_in_the_user_cache(tmp_path, monkeypatch):
    package = tmp_path / "site-packages"
    package.mkdir()
    assert threads.kernel_cache_dir(package, {}) is None  # numba's own cache, beside the source
    # A read-only site-packages (as root every folder is writable, so the check is replaced).
    monkeypatch.setattr(threads.os, "access", lambda path, mode: Path(path) != package)
    assert (
        threads.kernel_cache_dir(package, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
        == tmp_path / "cache" / "dltrain" / "numba"
    )
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setattr(threads.os, "access", lambda path, mode: False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    threads.configure_environment(environ)
    assert environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "dltrain" / "numba")


@pytest.mark.parametrize("macs,cores,expected", [(10, 16, 1), (8_000_000, 2, 2), (8_000_000, 16, 2), (10**12, 16, 16)])
def test_one_thread_policy_for_blas_and_kernels(macs, cores, expected):
    assert threads.threads_for(macs, cores) == expected


@needs_numba
def test_kernel_threads_follow_the_limit():
    import numba

    with compute_threads(1, 1):
        assert numba.get_num_threads() == 1
    with compute_threads(None, 2):
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize(
    "wanted,other,cores,expected",
    [(2, 0.2, 2, 2), (2, 0.6, 2, 1), (2, 5.0, 2, 1), (16, 3.4, 16, 13), (16, None, 16, 16), (1, 0.0, 16, 1)],
)
def test_threads_leave_the_cores_other_processes_use(wanted, other, cores, expected):
    assert threads.threads_beside(wanted, other, cores) == expected


def test_machine_load_sees_a_busy_process():
    load = threads.MachineLoad()
    if load.other_busy_cores(settle=0.0) is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        load.other_busy_cores(settle=0.0)
        assert load.other_busy_cores(settle=0.5) >= 0.5
    finally:
        busy.kill()
        busy.wait()
