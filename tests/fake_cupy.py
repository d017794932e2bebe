"""A stand-in for CuPy made of NumPy, strict where CuPy is: what the device-independent tests
run the CUDA backend on, where CI has no GPU.

Its arrays (``ndarray``, a NumPy subclass) live on a pretend device:

- an operation given a NumPy array with at least one dimension beside one of them raises
  TypeError, as CuPy does: data must be moved explicitly (``asarray``, ``asnumpy``, ``set``);
- reading a value back to Python (``float``, ``int``, ``bool``, ``item``, ``tolist``, ``get``,
  ``asnumpy``) counts as a synchronisation with the device (``SYNCS``), which a training step
  must not make; ``asarray`` of a host array counts as an upload (``UPLOADS``);
- reductions give 0-d arrays, not NumPy scalars, as CuPy's do.

It has no kernel compilers (no ``ElementwiseKernel``): the CUDA kernels report themselves not
ready on it, and the reference path runs, which is what it checks.
"""

from __future__ import annotations

import sys
import types

import numpy as np

SYNCS = [0]
UPLOADS = [0]
FREE_MEMORY = [64 << 30]  # what cuda.Device().mem_info reports free


def _is_host(value) -> bool:
    return isinstance(value, np.ndarray) and not isinstance(value, ndarray) and value.ndim > 0


def _check(values) -> None:
    for value in values:
        if _is_host(value):
            raise TypeError("a NumPy array given to a device operation; move it with asarray first")
        if isinstance(value, (list, tuple)):
            _check(value)


def _plain(value):
    if isinstance(value, ndarray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _wrap(value):
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    if isinstance(value, np.generic):
        return np.asarray(value).view(ndarray)
    if isinstance(value, tuple):
        return tuple(_wrap(item) for item in value)
    return value


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """An array on the pretend device."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check(inputs)
        if out is not None:
            _check(out)
            kwargs["out"] = tuple(_plain(item) for item in out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, function, classes, args, kwargs):
        _check(args)
        _check(list(kwargs.values()))
        return _wrap(function(*_plain(args), **{key: _plain(value) for key, value in kwargs.items()}))

    def __getitem__(self, index):
        _check(index if isinstance(index, tuple) else (index,))
        return _wrap(super().__getitem__(_plain(index)))

    def __setitem__(self, index, value):
        _check(index if isinstance(index, tuple) else (index,))
        _check((value,))
        super().__setitem__(_plain(index), _plain(value))

    def argmax(self, *args, **kwargs):
        return _wrap(self.view(np.ndarray).argmax(*args, **kwargs))

    # Reading a value back waits for the device.
    def __float__(self):
        SYNCS[0] += 1
        return float(self.view(np.ndarray))

    def __int__(self):
        SYNCS[0] += 1
        return int(self.view(np.ndarray))

    def __index__(self):
        SYNCS[0] += 1
        return self.view(np.ndarray).__index__()

    def __bool__(self):
        SYNCS[0] += 1
        return bool(self.view(np.ndarray))

    def __format__(self, spec):
        SYNCS[0] += 1
        return format(self.view(np.ndarray)[()] if self.ndim == 0 else self.view(np.ndarray), spec)

    def item(self, *args):
        SYNCS[0] += 1
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        SYNCS[0] += 1
        return self.view(np.ndarray).tolist()

    def get(self, stream=None):
        SYNCS[0] += 1
        return np.array(self.view(np.ndarray))

    def set(self, array, stream=None):
        np.copyto(self.view(np.ndarray), array)


def asarray(array, dtype=None):
    if isinstance(array, ndarray):
        return array if dtype is None or array.dtype == dtype else array.astype(dtype)
    UPLOADS[0] += 1
    return np.array(array, dtype=dtype).view(ndarray)


def asnumpy(array):
    SYNCS[0] += 1
    return np.array(_plain(array))


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(array, ndarray) for array in arrays) else np


class _Generator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def random(self, shape, dtype=np.float64):
        return self._rng.random(shape, dtype=dtype).view(ndarray)


random = types.SimpleNamespace(default_rng=_Generator)


class _Event:
    def synchronize(self):
        pass


class _Stream:
    def __init__(self, non_blocking=False):
        pass

    def record(self):
        return _Event()

    def wait_event(self, event):
        pass


class _Device:
    id = 0

    @property
    def mem_info(self):
        return FREE_MEMORY[0], 80 << 30


class _Pool:
    def free_bytes(self):
        return 0


def get_default_memory_pool():
    return _Pool()


cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda index: {"name": b"Fake GPU", "totalGlobalMem": 80 << 30},
    ),
    Device=_Device,
    Stream=_Stream,
    get_current_stream=lambda: _Stream(),
)
__version__ = "0.0-fake"

# The pinned host memory of cupyx: plain NumPy arrays here.
cupyx = types.SimpleNamespace(empty_pinned=lambda shape, dtype: np.empty(shape, dtype))


def __getattr__(name):
    """Every other NumPy function, its array results on the device."""
    value = getattr(np, name)
    if not callable(value) or isinstance(value, type):
        return value

    def device_function(*args, **kwargs):
        _check(args)
        return _wrap(value(*_plain(args), **{key: _plain(item) for key, item in kwargs.items()}))

    return device_function
