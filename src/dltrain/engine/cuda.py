"""The CUDA backend: CuPy arrays and CUDA kernels, loaded only when a model asks for it.

Nothing here imports CuPy until ``backend()`` is called, so `dltrain --help` and every fit on
the CPU start as quickly as without it. ``choose`` is the rule of ``train.device: auto``.

Reproducibility on one GPU: the kernels (cuda_kernels.py) write each element once and reduce
in a fixed order (no atomic additions), CuPy's reductions are deterministic, and cuBLAS gives
bit-identical products on the same GPU and CUDA version when its workspace is fixed:
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set (unless already set) before CuPy loads, and
TF32 stays off (CuPy's default; do not set ``CUPY_TF32=1``), which also keeps float32
products within rounding of the CPU's.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any

from . import cuda_kernels

# The pip command that installs CuPy for this project (from its folder; the name dltrain on the
# package index belongs to another project).
INSTALL = "pip install '.[cuda12]' (CUDA 12) or pip install '.[cuda13]' (CUDA 13), from the dltrain folder"

# ``train.device: auto`` runs on the GPU from this many multiply-adds per training step (the
# forward products of one batch: batch size x the sum of fan_in x fan_out over the dense layers).
# Set from the measurements of one H200 against 16 CPU cores (seconds per epoch, 60,000 rows;
# per step below): the seed network 784-128-10 at batch 32 (3.3e6 per step) took 0.51 ms on
# the CPU against 1.5 ms for PyTorch CUDA and 2.7 ms for a CuPy step; at batch 128 (1.3e7),
# 0.74 ms against 0.97 and 1.1 ms; at batch 256 (2.6e7) the CPU took 1.03 ms, about a GPU's
# floor per step (~1 ms: kernel launches, not arithmetic); 784-512-512-10 at batch 256 (1.7e8)
# took 3.2 ms on the CPU, and 784-1024-1024-10 at batch 1024 (1.9e9) 15.8 ms against 1.2 ms on
# the GPU. The GPU pays between 2.6e7 and 1.7e8: the threshold is their geometric middle. It
# must be measured again with `python bench/gpu.py` on the machine that runs it: a slower CPU
# moves it down, a GPU with a lower floor per step too.
AUTO_MIN_MACS = 64_000_000


class DeviceUnavailable(RuntimeError):
    """The GPU cannot be used here; the message says why and what to do."""


_backend: Any = None


def _backend_class():
    """The CUDA backend's class (backend.py, which loads NumPy, imported only here: `dltrain
    --version` asks this module about CuPy without loading NumPy)."""
    from .backend import Backend

    class CudaBackend(Backend):
        """CuPy arrays on the current GPU."""

        def free_memory(self) -> int | None:
            free = self.xp.cuda.Device().mem_info[0]
            return int(free + self.xp.get_default_memory_pool().free_bytes())

        def batches(self, arrays, batch_size: int):
            return HostBatches(self.xp, arrays, batch_size)

    return CudaBackend


def installed() -> bool:
    """Whether CuPy can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("cupy") is not None
    except ValueError:  # stubbed out in sys.modules, as the tests do
        return False


def backend(module=None):
    """The CUDA backend, made once: CuPy imported (``module``: a stand-in, for tests) and a GPU
    found; DeviceUnavailable saying why not."""
    global _backend
    if _backend is not None and (module is None or _backend.xp is module):
        return _backend
    cupy = module if module is not None else _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError without a driver or device
        raise DeviceUnavailable(f"no CUDA device found ({_first_line(error)})") from None
    if count < 1:
        raise DeviceUnavailable("no CUDA device found")
    from .backend import register_device

    cuda_kernels.bind(cupy)
    _backend = _backend_class()("cuda", cupy, cuda_kernels, device=True, description=describe_device(cupy))
    register_device(_backend)
    return _backend


def _import_cupy():
    if not installed():
        raise DeviceUnavailable(f"CuPy is not installed; install it with {INSTALL}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # bit-identical products (see above)
    try:
        import cupy
    except Exception as error:  # a CuPy built for another CUDA, a missing library
        raise DeviceUnavailable(f"CuPy cannot be loaded ({_first_line(error)}); reinstall it with {INSTALL}") from None
    return cupy


def describe_device(cupy) -> str:
    """``NVIDIA H200, 139.8 GiB, CuPy 14.2.0`` (what ``--version`` and a fit name)."""
    try:
        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = properties["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        memory = f", {properties['totalGlobalMem'] / 2**30:.1f} GiB"
    except Exception:
        name, memory = "a CUDA device", ""
    return f"{name}{memory}, CuPy {getattr(cupy, '__version__', '?')}"


def describe() -> str:
    """The GPU line of ``dltrain --version``: CuPy and the GPU where both are there. CuPy is
    imported only where it is installed."""
    if not installed():
        return f"not available (CuPy not installed: {INSTALL})"
    try:
        return backend().description
    except DeviceUnavailable as error:
        version = importlib.metadata.version("cupy") if _distribution("cupy") else "installed"
        return f"not available ({error}; CuPy {version})"


def _distribution(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def choose(setting: str, step_macs: int) -> tuple[Any, str]:
    """The rule of ``train.device``: (the CUDA backend, or None for the CPU; the reason in words).

    ``cuda`` raises DeviceUnavailable where it cannot run; ``auto`` takes the GPU only where
    one is found and the step does ``AUTO_MIN_MACS`` multiply-adds or more, and quietly stays
    on the CPU otherwise (CuPy is not even imported for a small network)."""
    if setting == "cpu":
        return None, "train.device: cpu"
    if setting == "cuda":
        gpu = backend()
        return gpu, f"train.device: cuda; {gpu.description}"
    work = f"{step_macs:,} multiply-adds per step"
    if step_macs < AUTO_MIN_MACS:
        return None, f"auto: {work}, below the {AUTO_MIN_MACS:,} from which a GPU pays"
    if not installed():
        return None, f"auto: {work}, but CuPy is not installed ({INSTALL})"
    try:
        gpu = backend()
    except DeviceUnavailable as error:
        return None, f"auto: {work}, but {error}"
    return gpu, f"auto: {work}, at least {AUTO_MIN_MACS:,}; {gpu.description}"


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


class HostBatches:
    """Batches of training data too large for the device: each gathered on the host into
    pinned memory and copied on a stream of its own while the previous step runs.

    Two slots alternate. The copy of batch k waits (on the device, not the host) for the steps
    queued before batch k-1 was handed out, the last ones that read the slot it overwrites; the
    step waits (on the device) for its copy."""

    def __init__(self, cupy, arrays, batch_size: int):
        import cupyx

        self.cupy = cupy
        shapes = [((batch_size,) + array.shape[1:], array.dtype) for array in arrays]
        self.pinned = [[cupyx.empty_pinned(shape, dtype) for shape, dtype in shapes] for _ in range(2)]
        self.device = [[cupy.empty(shape, dtype) for shape, dtype in shapes] for _ in range(2)]
        self.arrays = arrays
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.copied: list = [None, None]
        self.handed_out = None
        self.count = 0

    def load(self, rows):
        """The batch of these rows (host indices) on the device, its copy queued."""
        slot = self.count % 2
        self.count += 1
        size = len(rows)
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the slot's last copy (two batches ago) has left its pinned memory
        pinned = [buffer[:size] for buffer in self.pinned[slot]]
        for array, buffer in zip(self.arrays, pinned):
            array.take(rows, axis=0, out=buffer)
        compute = self.cupy.cuda.get_current_stream()
        if self.handed_out is not None:
            self.stream.wait_event(self.handed_out)
        device = [buffer[:size] for buffer in self.device[slot]]
        for target, source in zip(device, pinned):
            target.set(source, stream=self.stream)
        self.copied[slot] = self.stream.record()
        compute.wait_event(self.copied[slot])
        self.handed_out = compute.record()
        return device
