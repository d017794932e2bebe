"""No compile wait on the first fit: the kernels a fit needs are loaded or compiled (by helper
processes, into the disk cache) while it reads its data, and a step runs the serial version of
a kernel while its parallel one is not ready, which gives the same results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dltrain import fit_session
from dltrain.engine import kernel_loops, kernels, threads
from test_kernels import _wide_trainer

needs_numba = pytest.mark.skipif(not kernels.active(), reason="numba not installed: only the reference path runs")


@pytest.fixture
def fresh(monkeypatch):
    """Kernels looked up anew (this process's compiled ones forgotten) and no warm-up under way."""
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setattr(kernels, "_warming", {})
    monkeypatch.setattr(kernels, "_threads", None)
    monkeypatch.delenv(threads.KERNELS_VARIABLE, raising=False)


def _wait_for_warm_up():
    for thread in threading.enumerate():
        if thread.name == kernels._WARM_UP_THREAD:
            thread.join(timeout=120)


def _both_versions(call, *arrays):
    """``call`` on copies of ``arrays`` with the serial, then the parallel kernels: both results."""
    results = []
    for threshold in (1 << 40, 0):
        copies = [array.copy() for array in arrays]
        kernels.PARALLEL_MIN_ELEMENTS = threshold
        returned = call(*copies)
        results.append((copies, returned))
    return results


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_serial_and_parallel_versions_of_every_kernel_are_bit_identical(dtype, monkeypatch):
    # What lets a step run the serial version while the parallel one compiles.
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", kernels.PARALLEL_MIN_ELEMENTS)
    monkeypatch.setattr(kernels, "_threads", None)  # not one thread: the parallel versions run
    monkeypatch.setattr(kernels, "BLOCK", 64)  # several blocks of Adam's sums
    rng = np.random.default_rng(0)
    z, b = rng.normal(size=(131, 67)).astype(dtype), rng.normal(size=67).astype(dtype)
    targets, size = rng.integers(0, 67, 131), 1001
    moments = [rng.normal(size=size).astype(dtype) for _ in range(3)] + [rng.uniform(size=size).astype(dtype)]
    calls = [
        (lambda z: kernels.bias_activation(z, b, True), z),
        (lambda z: kernels.bias_activation(z, b, False), z),
        (lambda g, d: kernels.bias_gradient(g, np.maximum(z, 0), d, True), z, np.empty(67, dtype)),
        (lambda g, d: kernels.bias_gradient(g, z, d, False), z, np.empty(67, dtype)),
        (
            lambda grad, loss: kernels.softmax_cross_entropy(z, targets, np.ones(131, dtype), 1 / 131, grad, loss),
            np.empty_like(z),
            np.empty(131, dtype),
        ),
        (
            lambda p, g, m, v, partial: kernels.adam(
                p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 3, 0.99, float(np.finfo(dtype).tiny), partial
            ),
            *moments,
            np.empty(kernels.blocks_for(size)),
        ),
    ]
    for call, *arrays in calls:
        (serial, serial_returned), (parallel, parallel_returned) = _both_versions(call, *arrays)
        for one, other in zip(serial, parallel):
            assert np.array_equal(one, other, equal_nan=True)
        assert np.array_equal(serial_returned, parallel_returned)


def test_a_step_runs_the_serial_version_while_the_parallel_one_is_on_its_way(fresh, monkeypatch):
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 100)
    serial, parallel = object(), object()
    monkeypatch.setattr(kernels, "_compile", lambda function, parallel_version: parallel)
    kernels._compiled[("adam_loop", False)] = serial
    kernels._warming[("adam_loop", True)] = pending = threading.Event()
    assert kernels._kernel(kernel_loops.adam_loop, 1000) is serial
    pending.set()  # the helper has put it in the cache
    assert kernels._kernel(kernel_loops.adam_loop, 1000) is parallel
    assert kernels._kernel(kernel_loops.adam_loop, 10) is serial


@needs_numba
def test_the_warm_up_looks_in_the_cache_for_what_the_steps_call(fresh, monkeypatch):
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 256)  # serial and parallel versions both run
    trainer = _wide_trainer(fused=True)
    trainer.wanted_threads = trainer.blas_threads = trainer.kernel_threads = 2  # on one, only serial ones run
    trainer.run()  # the cache now holds what the steps call
    needs = trainer.kernel_needs()
    assert {name for name, _ in needs} == {"bias_relu", "bias", "column_sums", "softmax_cross_entropy", "adam"}
    monkeypatch.setattr(kernels, "_compiled", {})
    handed_over = []
    monkeypatch.setattr(kernels, "_compiled_by_helper", lambda missing, *types: handed_over.extend(missing) or [])
    kernels.warm_up(needs, np.float32)
    _wait_for_warm_up()
    assert {parallel for _, parallel in kernels._warming} == {False, True}
    assert handed_over == []  # every one found in the cache: the warm-up's types are the steps'


@needs_numba
def test_what_the_cache_lacks_a_helper_process_compiles_into_it(fresh, monkeypatch, tmp_path):
    import numba

    monkeypatch.setattr(threads, "idle_cores", lambda: 2.0)  # one core for the helper, on a busy machine too
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # the helper's cache
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))  # and this process's
    kernels.warm_up([("bias", 0)], np.float32)
    _wait_for_warm_up()
    assert [path.name.split(".")[0] for path in tmp_path.rglob("*.dltrain.nbi")] == ["kernel_loops"]
    z = np.zeros((2, 2), np.float32)
    kernels.bias_activation(z, np.array([1.0, 2.0], np.float32), relu=False)
    assert z.tolist() == [[1.0, 2.0], [1.0, 2.0]]
    kernel = kernels._compiled[("bias_loop", False)]
    assert sum(kernel._cache_hits.values()) == 1 and not kernel._cache_misses  # loaded, not compiled here


@needs_numba
def test_no_helper_takes_the_core_of_a_busy_machine(fresh, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: 1.2)  # this process's core, and not one more
    assert list(kernels._compiled_by_helper([("bias_loop", False)], "float32", "int64")) == []


@needs_numba
def test_fit_starts_the_warm_up_before_it_reads_the_data(fresh, monkeypatch, tmp_path, root):
    monkeypatch.setattr(threads, "FUSED_MIN_MACS", 1)  # iris runs the fused kernels
    monkeypatch.setattr(threads, "MACS_PER_THREAD", 1)  # on several threads, so sizes matter
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    events = []
    warm_up, prepare = kernels.warm_up, fit_session.prepare_fit

    def recorded(name, call):
        return lambda first, *rest: events.append((name, first)) or call(first, *rest)

    monkeypatch.setattr(kernels, "warm_up", recorded("warm up", warm_up))
    monkeypatch.setattr(fit_session, "prepare_fit", recorded("prepare", prepare))
    fit_session.run_fit(root / "configs" / "iris.yaml", ["train.epochs=1"], tmp_path / "run")
    assert events[0][0] == "warm up" and events[1][0] == "prepare"
    # From the config and the CSV's header alone: 4 inputs, 16 ReLU units, Adam, cross-entropy.
    assert {name for name, _ in events[0][1]} == {"bias_relu", "bias", "column_sums", "softmax_cross_entropy", "adam"}
    assert ("adam", 4 * 16) in events[0][1]


@needs_numba
def test_helpers_still_compiling_when_the_fit_ends_are_left_to_finish_in_silence(monkeypatch):
    import os
    import signal
    import subprocess
    import warnings

    stop, started, popen = threading.Event(), [], subprocess.Popen
    monkeypatch.setattr(threads, "idle_cores", lambda: 3.0)  # two helpers
    monkeypatch.setattr(kernels, "_warm_up_stop", stop)
    monkeypatch.setattr(kernels, "_running_helpers", [], raising=False)
    monkeypatch.setattr(subprocess, "Popen", _recording(popen, started, stop))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            missing = [("bias_loop", False), ("adam_loop", False)]
            assert list(kernels._compiled_by_helper(missing, "float32", "int64")) == []  # none reported
            kernels._finish_warm_up()  # at exit
        assert len(started) == 2
        assert [str(warning.message) for warning in caught] == []  # "subprocess N is still running", before
        assert not kernels._running_helpers
    finally:
        for pid in started:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # reaped already
                pass


def _recording(popen, started, stop):
    """subprocess.Popen starting, in place of each helper, one that never reports; ``stop`` is
    set (the fit ends) once two have started."""

    def start(command, **options):
        process = popen([command[0], "-c", "import time; time.sleep(30)"], **options)
        started.append(process.pid)
        if len(started) == 2:
            stop.set()
        return process

    return start
