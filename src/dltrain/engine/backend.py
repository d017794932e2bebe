"""Where a model's arrays live and what computes on them: the one module that names NumPy.

A ``Backend`` is chosen when a model is built (``Sequential.build(..., backend=...)``), not
per process: ``CPU`` keeps arrays in NumPy and runs the numba kernels (kernels.py); the CUDA
backend (cuda.py) keeps them in CuPy and runs its CUDA kernels (cuda_kernels.py). The
reference path is written once for both: each function takes the array module of the arrays
it is given (``array_module``), NumPy or CuPy, whose functions have the same names. Weights
and optimizer state leave a model as NumPy arrays (``to_host``), so run folders and
checkpoints are the same from either device.

Also here: the limits on BLAS and kernel threads during a step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as host

from . import kernels
from .threads import available_cores, threads_for

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay usable without it
    ThreadpoolController = None

xp = host  # the host's array module, for what never leaves it (metrics, data, the CPU engine)
DEFAULT_DTYPE = host.float32


@dataclass(frozen=True, eq=False)
class Backend:
    """An array library and the fused kernels for its arrays.

    ``device``: the arrays are not in host memory, so a value read back (a loss, a gradient
    norm) waits for the device: the training loop then reads its losses and metrics once per
    epoch instead of once per step."""

    name: str  # "cpu" or "cuda"
    xp: Any  # the array module: numpy or cupy
    kernels: Any  # bias_activation, bias_gradient, softmax_cross_entropy, adam, ready()
    device: bool = False
    description: str = ""

    def to_device(self, array, dtype=None):
        """``array`` (NumPy, or already this backend's) as this backend's array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array with the values of ``array`` (the same array where it is one)."""
        if not self.device:
            return array
        return self.xp.asnumpy(array)

    def scalar(self, value):
        """A number computed on this backend: a float on the host; on a device, left there
        (reading it would wait for the device), to be read once per epoch."""
        return value if self.device else float(value)

    def copy_into(self, target, source) -> None:
        """Copy host or device values into ``target`` in place."""
        target[...] = self.to_device(source, dtype=target.dtype)

    def random(self, seed: int):
        """A random generator for this backend's arrays (``random(shape, dtype)``, ...)."""
        return self.xp.random.default_rng(seed)

    def take_rows(self, array, rows, out):
        """``out[:] = array[rows]`` for the rows of a batch."""
        if self.device:
            return self.xp.take(array, rows, axis=0, out=out)
        # mode="clip": with the default "raise", take() first gathers into a temporary of the
        # batch's size; the rows here are always in range.
        return host.take(array, rows, axis=0, out=out, mode="clip")

    def free_memory(self) -> int | None:
        """Bytes free on the device (None on the host: the data is there already)."""
        return None

    def batches(self, arrays, batch_size: int):
        """A ``HostBatches`` that moves batches gathered on the host to the device while the
        previous step runs (None on the host, or where the device has no such path)."""
        return None


CPU = Backend("cpu", host, kernels, device=False, description="CPU (NumPy)")

# Device backends loaded in this process (cuda.py adds itself); ``array_module`` asks them.
_devices: list[Backend] = []


def register_device(backend: Backend) -> None:
    """Make ``array_module`` and ``backend_of`` recognise ``backend``'s arrays."""
    if backend not in _devices:
        _devices.insert(0, backend)


def backend_of(array) -> Backend:
    """The backend whose arrays ``array`` is one of (CPU for NumPy arrays and numbers)."""
    for backend in _devices:
        if isinstance(array, backend.xp.ndarray):
            return backend
    return CPU


def array_module(array):
    """NumPy or CuPy: the module whose functions compute on ``array`` (CuPy's get_array_module)."""
    for backend in _devices:
        if isinstance(array, backend.xp.ndarray):
            return backend.xp
    return host


def quiet_overflow():
    """Overflow and invalid values on the host give inf and nan without warnings (a device
    never warns): a network whose weights overflowed is reported once, not in a stream."""
    return host.errstate(over="ignore", invalid="ignore")


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


__all__ = [
    "Backend",
    "CPU",
    "xp",
    "DEFAULT_DTYPE",
    "array_module",
    "backend_of",
    "blas_threads",
    "compute_threads",
    "threads_for",
    "available_cores",
]
