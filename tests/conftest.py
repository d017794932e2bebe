"""Shared test helpers: float64 central-difference gradients and small synthetic problems."""

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
