"""The array module used by the engine, behind one name so a GPU array library can replace it,
and the choice of BLAS threads per problem size."""

from __future__ import annotations

import contextlib
import os

import numpy as xp

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay usable without it
    ThreadpoolController = None

DEFAULT_DTYPE = xp.float32

# Multiply-adds per thread below which another BLAS thread costs more than it saves: tiny
# products spread over many threads spend their time waking and waiting (measured: batch 32
# of the 784-128-10 network ran 1.6x slower on 2 threads than on 1 on a 2-core machine, and
# a naive loop ran 8x slower on 16 cores than on 2).
MACS_PER_THREAD = 4_000_000


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def threads_for(largest_product_macs: int, cores: int | None = None) -> int:
    """BLAS threads for a step whose largest matrix product has this many multiply-adds."""
    cores = cores or available_cores()
    return max(1, min(cores, largest_product_macs // MACS_PER_THREAD))


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


__all__ = ["xp", "DEFAULT_DTYPE", "blas_threads", "threads_for", "available_cores"]
