"""Shared test helpers: float64 central-difference gradients and small synthetic problems."""

import contextlib
import os
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def numerical_gradient(function, array, eps=1e-6):
    """Central differences of a scalar ``function()`` with respect to every entry of ``array``."""
    gradient = np.zeros_like(array, dtype=np.float64)
    flat = array.reshape(-1)
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + eps
        plus = function()
        flat[index] = original - eps
        minus = function()
        flat[index] = original
        gradient.reshape(-1)[index] = (plus - minus) / (2 * eps)
    return gradient


def assert_close(actual, expected, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.fixture
def root():
    return ROOT


@pytest.fixture(scope="session")
def bad_inputs_base(tmp_path_factory):
    """The bad-input corpus's base project (tests/bad_inputs/_base) with its run trained, once
    per session: tests copy it before changing anything."""
    from dltrain.commands import fit

    folder = tmp_path_factory.mktemp("bad_inputs_base")
    shutil.copytree(ROOT / "tests" / "bad_inputs" / "_base", folder, dirs_exist_ok=True)
    fit.fit(folder / "base.yaml", out=folder / "run")
    return folder


class Overrun(Exception):
    """A bounded block ran past its time limit."""


@contextlib.contextmanager
def bounded(seconds: float = 30, memory: int = 4 << 30):
    """Run a block with a wall-clock limit and at most ``memory`` more bytes of address space.

    A hang then fails the test (Overrun) and a memory blow-up fails it (MemoryError) instead
    of stalling or killing the whole CI run. The limits are set on this process and restored."""

    def overrun(number, frame):
        raise Overrun(f"ran past {seconds} s")

    previous_handler = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + memory if hard == resource.RLIM_INFINITY else min(hard, used + memory)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
