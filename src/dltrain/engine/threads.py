"""How the engine uses the cores: thread pools set up before NumPy and numba load, and one
policy for BLAS and kernel threads by problem size.

Imports neither NumPy nor numba: ``configure_environment`` must run before either loads
(``dltrain/__init__.py`` calls it first), because OpenBLAS, OpenMP and numba read these
variables once, when they start. A variable the user has set is never changed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# "reference" forces the plain NumPy path even where numba is installed (kernels.SETTINGS: the values).
KERNELS_VARIABLE = "DLTRAIN_KERNELS"

# Two pools that both spin-wait for work (OpenBLAS's and numba's) fight for the cores: on a
# 16-core machine a training step ran 21-41x slower than PyTorch with the defaults, and
# 0.34-0.50x with these settings, where idle threads sleep instead of spinning.
YIELDING_POOLS = {
    # numba's OpenMP layer first (its threads honour OMP_WAIT_POLICY), then workqueue (its
    # threads block on a condition variable); TBB last.
    "NUMBA_THREADING_LAYER_PRIORITY": "omp workqueue tbb",
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU and LLVM OpenMP: idle threads sleep
    "KMP_BLOCKTIME": "0",  # Intel OpenMP (MKL builds): the same
    "OPENBLAS_THREAD_TIMEOUT": "4",  # OpenBLAS threads sleep after 2^4 idle cycles (the least)
}

# Multiply-adds per thread below which another BLAS thread costs more than it saves: tiny
# products spread over many threads spend their time waking and waiting (measured: batch 32
# of the 784-128-10 network ran 1.6x slower on 2 threads than on 1 on a 2-core machine, and
# a naive loop ran 8x slower on 16 cores than on 2).
MACS_PER_THREAD = 4_000_000

# Multiply-adds of the largest product in a step below which the fused kernels are not
# used: compiling (or loading) them costs more than a small fit runs, and a short fit must
# stay quick (`dltrain fit configs/iris.yaml` in under 2 s, first run included).
FUSED_MIN_MACS = 1_000_000


def kernel_cache_dir(package_dir: Path, environ=os.environ) -> Path | None:
    """Where numba should cache compiled kernels: None (beside the source, numba's default)
    when the package folder is writable, else a user cache folder."""
    if os.access(package_dir, os.W_OK):
        return None
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dltrain" / "numba"


def configure_environment(environ=os.environ) -> None:
    """Set up the thread pools to yield and the kernel cache, before NumPy and numba load."""
    for name, value in YIELDING_POOLS.items():
        environ.setdefault(name, value)
    if "NUMBA_CACHE_DIR" not in environ and "numba" not in sys.modules:
        cache = kernel_cache_dir(Path(__file__).resolve().parent, environ)
        if cache is not None:
            environ["NUMBA_CACHE_DIR"] = str(cache)


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def threads_for(largest_product_macs: int, cores: int | None = None) -> int:
    """Threads (BLAS and kernels) for a step whose largest matrix product has this many multiply-adds."""
    cores = cores or available_cores()
    return max(1, min(cores, largest_product_macs // MACS_PER_THREAD))


def fused_pays(largest_product_macs: int) -> bool:
    """Whether a step this large should run the fused kernels (when they are available)."""
    return largest_product_macs >= FUSED_MIN_MACS


class MachineLoad:
    """How many cores other processes keep busy, measured between two looks (Linux only).

    Threads that wait for a partner on a core someone else is using lose far more than the
    partner gains: on 2 cores with other work running, a step on 2 threads took 4-7x as long
    as on 1. The training loop looks before each epoch and leaves the busy cores alone."""

    def __init__(self):
        self._last = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        own = os.times()
        return time.monotonic(), (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def other_busy_cores(self, settle: float = 0.05) -> float | None:
        """Cores kept busy by other processes since the last look (None where unknown); waits
        ``settle`` seconds when the last look was more recent than that."""
        if self._last is None:
            return None
        if time.monotonic() - self._last[0] < settle:
            time.sleep(settle)
        now = self._sample()
        if now is None:
            return None
        elapsed = now[0] - self._last[0]
        busy, own = now[1] - self._last[1], now[2] - self._last[2]
        self._last = now
        return max(0.0, (busy - own) / elapsed) if elapsed > 0 else None


def idle_cores(cores: int | None = None) -> float:
    """Cores no process is using, from the load average of the last minute (0 where unknown)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return 0.0
    return max(0.0, (cores or available_cores()) - load)


def threads_beside(wanted: int, other_busy_cores: float | None, cores: int | None = None) -> int:
    """``wanted`` threads, less the cores other processes keep busy (at least one)."""
    if other_busy_cores is None:
        return wanted
    cores = cores or available_cores()
    return max(1, min(wanted, cores - int(other_busy_cores + 0.5)))
