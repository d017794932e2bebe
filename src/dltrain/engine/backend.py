"""The array module used by the engine, behind one name so a GPU array library can replace it,
and the limits on BLAS and kernel threads during a step."""

from __future__ import annotations

import contextlib

import numpy as xp

from . import kernels
from .threads import available_cores, threads_for

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay usable without it
    ThreadpoolController = None

DEFAULT_DTYPE = xp.float32

_controller = None


def blas_threads(count: int | None):
    """Limit BLAS to ``count`` threads inside the block (no-op without threadpoolctl or count)."""
    global _controller
    if count is None or ThreadpoolController is None:
        return contextlib.nullcontext()
    if _controller is None:
        # Finding the loaded BLAS libraries takes about a millisecond: do it once.
        _controller = ThreadpoolController()
    return _controller.limit(limits=count, user_api="blas")


@contextlib.contextmanager
def compute_threads(blas: int | None, kernel: int | None = None):
    """BLAS limited to ``blas`` threads and the fused kernels to ``kernel`` (None: no limit)."""
    with blas_threads(blas):
        if kernel is not None:
            kernels.set_threads(kernel)
        yield


__all__ = ["xp", "DEFAULT_DTYPE", "blas_threads", "compute_threads", "threads_for", "available_cores"]
