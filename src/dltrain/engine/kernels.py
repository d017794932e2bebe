"""The fast path: fused kernels, each a plain loop over the data (kernel_loops.py) that numba compiles.

Each kernel does in one pass what the reference path (in layers.py, losses.py and
optimizers.py) writes as several NumPy expressions, and is tested equal to it. A kernel
runs in parallel over rows, column blocks or fixed-size blocks when the array is large
enough to pay for waking the threads; every reduction adds in an order that depends on the
data's shape alone, never on the thread count, so results are the same on 1 or 16 threads.

This module is also the one place where another array library's kernels would go: the
engine asks ``active()`` and calls the functions at the bottom; a GPU backend would provide
the same functions for its arrays here.

numba is imported only when a kernel is first needed, so small fits (which use the reference
path) never pay for it. Compiled kernels are cached on disk (see threads.kernel_cache_dir) in
files sealed with their checksum; a cache that cannot be written or read costs a compilation,
never the run (see kernel_cache.py).

Compiling all a fit needs takes seconds on a fresh install (1.9 s for the seed network here, 3.9 s
on a 16-core machine), so ``warm_up`` compiles them in a background thread while the fit reads
its data. The serial and the parallel version of a kernel give bit-identical results (tested),
so while a parallel version is still compiling, a step runs the serial one: the first epoch
never waits for it, and the model is the same.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import math
import os
import threading
import types
import warnings
from pathlib import Path

from . import kernel_cache, kernel_loops
from .kernel_loops import (
    LIGHT,
    REORDERED_SUMS,
    adam_loop,
    bias_loop,
    bias_relu_loop,
    column_sums_loop,
    softmax_cross_entropy_loop,
)
from .threads import KERNELS_VARIABLE

# The values DLTRAIN_KERNELS may take (case aside): auto (unset or empty too) runs the fused
# kernels where they pay; reference runs the plain NumPy path everywhere.
SETTINGS = ("auto", "reference")

# Arrays with fewer elements run the serial version of a kernel: below this, waking a
# second thread costs more than the pass itself (tests lower it to exercise the parallel
# versions on small arrays). Waking sleeping threads is slow (76 us for an empty parallel
# loop on 2 threads on a 2-core virtual machine), so only a kernel with a good deal of work
# per element (Adam: a square root and a division; softmax: an exponential) goes parallel
# from 65,536 elements; the light ones, one or two additions per element (bias, bias + ReLU,
# ReLU mask + column sums), need LIGHT_KERNEL_FACTOR times as many. Measured on 2 cores for
# 784-512-512-10 at batch 256: those light kernels took 521 us per step in parallel from
# 65,536 elements and 262 us serial.
PARALLEL_MIN_ELEMENTS = 1 << 16
LIGHT_KERNEL_FACTOR = 16
# The fixed chunk of a blocked reduction (sums of squares), and the columns per block of a
# column reduction: the order of every addition follows from these and the shape alone.
BLOCK = 4096
COLUMN_BLOCK = 64

_numba = None
_threads = None  # as set_threads last set them (None: numba's default, every core)
_compiled: dict = {}  # (loop name, parallel) -> numba dispatcher
_warming: dict = {}  # (loop name, parallel) -> threading.Event, set when warm_up is done with it
_warm_up_lock = threading.Lock()
_DONE = threading.Event()
_DONE.set()
_warm_up_stop = threading.Event()
_running_helpers: list = []  # helper processes still compiling when last looked at (see _finish_warm_up)


def installed() -> bool:
    """Whether numba can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("numba") is not None
    except ValueError:  # numba stubbed out in sys.modules (as the tests do to simulate its absence)
        return False


def setting(environ=os.environ) -> str:
    """DLTRAIN_KERNELS, checked: one of SETTINGS; a ValueError names the variable, the value
    and the allowed values (a typo must not silently leave the other path running)."""
    value = environ.get(KERNELS_VARIABLE, "")
    chosen = value.strip().lower() or "auto"
    if chosen not in SETTINGS:
        raise ValueError(
            f"{KERNELS_VARIABLE}={value!r} is not a setting; use {' or '.join(SETTINGS)} "
            "(auto, the default: the fused kernels where they pay; reference: the plain NumPy path)"
        )
    return chosen


def active() -> bool:
    """Whether the fused path is available: numba installed and not switched off."""
    return setting() != "reference" and installed()


def describe() -> str:
    """Which path the engine runs, in words (for ``dltrain --version``)."""
    if setting() == "reference":
        return f"reference NumPy path ({KERNELS_VARIABLE}=reference)"
    if not installed():
        return "reference NumPy path (numba not installed)"
    layers = os.environ.get("NUMBA_THREADING_LAYER", "") or os.environ.get("NUMBA_THREADING_LAYER_PRIORITY", "")
    layers = ", else ".join(layers.split()) or "numba's default"
    return (
        f"fused numba kernels (numba {importlib.metadata.version('numba')}; threading layer {layers}); "
        "small problems run the reference NumPy path"
    )


def _load_numba():
    global _numba
    if _numba is None:
        import numba

        _numba = numba
        kernel_loops.use_prange(numba.prange)
    return _numba


def ready() -> bool:
    """Whether the fused path can run here: active, and numba imports (an install that is
    found but broken, say built for another NumPy, leaves the reference path running)."""
    if not active():
        return False
    try:
        _load_numba()
    except Exception:  # any failure to import means: no kernels, never a crash
        return False
    return True


def set_threads(count: int) -> None:
    """Threads the parallel kernels use from now on in this thread (on one, the serial
    versions run: the same results without waking a pool)."""
    global _threads
    numba = _load_numba()
    _threads = max(1, min(count, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(_threads)


def _serial_copy(function):
    """The same Python function under another qualified name, so numba caches its serial
    and parallel compilations in separate files."""
    copy = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__ + "_serial",
        function.__defaults__,
        function.__closure__,
    )
    copy.__qualname__ = function.__qualname__ + "_serial"
    return copy


def _parallel(function, size: int) -> bool:
    """Whether ``function`` runs its parallel version on arrays of ``size`` elements: where
    they are large enough, except on one thread while only the serial version is compiled (the
    same results, without compiling the parallel one; a process that has it keeps using it, so
    a thread count that changes between epochs costs no second compilation)."""
    if size < PARALLEL_MIN_ELEMENTS * (LIGHT_KERNEL_FACTOR if function in LIGHT else 1):
        return False
    return _threads != 1 or (function.__name__, True) in _compiled


def _kernel(function, size: int):
    """The compiled version of ``function`` for arrays of ``size`` elements.

    While a warm-up's helper still compiles the parallel version, the serial one runs in its
    place (they give the same results, tested); a version a helper is about to put in the
    disk cache is waited for rather than compiled a second time."""
    parallel = _parallel(function, size)
    name = function.__name__
    compiled = _compiled.get((name, parallel))
    if compiled is not None:
        return compiled
    if parallel and not _warming.get((name, True), _DONE).is_set():
        _warming.get((name, False), _DONE).wait()
        return _compiled.get((name, False)) or _compile(function, False)
    _warming.get((name, parallel), _DONE).wait()
    return _compile(function, parallel)


def _compile(function, parallel: bool, signature=None):
    """Compile ``function`` (its parallel or serial version), for ``signature`` now or else
    for the types of its first call; cached on disk where that works."""
    numba = _load_numba()
    source = function if parallel else _serial_copy(function)
    # error_model="numpy": a division never checks for zero (it gives inf or nan, as
    # NumPy does), so the loops vectorise. Only the sums of squares may be reordered
    # ("reassoc", in an order fixed by the code and the block, never by the threads).
    fastmath = {"reassoc"} if function in REORDERED_SUMS else False
    compiled = numba.njit(parallel=parallel, nogil=True, error_model="numpy", fastmath=fastmath)(source)
    kernel_cache.enable(compiled)
    if signature is not None:
        compiled.compile(signature)  # compiles (or loads from the cache) without running it
    _compiled[(function.__name__, parallel)] = compiled
    return compiled


# --------------------------------------------------------------------------- the kernels


def bias_activation(z, b, relu: bool):
    """z += b, then ReLU when ``relu``, in place: a Dense layer's forward after its product."""
    _kernel(bias_relu_loop if relu else bias_loop, z.size)(z, b)
    return z


def bias_gradient(grad, a, db, relu: bool):
    """db = column sums of dL/dz, where dL/dz is ``grad`` masked by a > 0 when ``relu`` (in place)."""
    _kernel(column_sums_loop, grad.size)(grad, a, db, relu, COLUMN_BLOCK)
    return grad


def softmax_cross_entropy(logits, targets, weights, scale, grad, row_loss):
    """grad = (softmax(logits) - onehot(targets)) * weights * scale; row_loss = each row's
    weighted cross-entropy."""
    _kernel(softmax_cross_entropy_loop, logits.size)(logits, targets, weights, logits.dtype.type(scale), grad, row_loss)
    return row_loss


def adam_scalars(real, lr, beta1, beta2, eps, step, decay, smallest) -> tuple:
    """The scalars of one fused Adam update, in the parameters' type ``real``, for both devices'
    kernels: the bias corrections folded into the step size, lr / (1 - beta1^t), and into the
    second moment's divisor, 1 / sqrt(1 - beta2^t) (one division per element, as PyTorch)."""
    return (
        real(lr / (1.0 - beta1**step)),
        real(beta1),
        real(beta2),
        real(1.0 - beta1),
        real(1.0 - beta2),
        real(1.0 / math.sqrt(1.0 - beta2**step)),
        real(eps),
        real(decay),
        real(smallest),
    )


def adam(param, grad, m, v, lr, beta1, beta2, eps, step, decay, smallest, partial) -> float:
    """One Adam update of a flat array in place; returns the sum of squared gradients.

    ``partial`` (``blocks_for(param.size)`` float64s) receives the blocked sums of squares.

    Moments below ``smallest``, the dtype's smallest normal number, are set to 0. The moment of a weight whose
    gradient stays 0 (an input that is always 0, a ReLU unit that no longer fires) decays
    geometrically through the subnormal numbers, where every multiplication takes a slow
    microcode path: with 4% of the first layer's moments subnormal, an update of the
    784-128-10 network took twice as long. What is lost is below 1.2e-38 (float32), a
    change to the weights far below their rounding."""
    block_size = -(-param.size // partial.size)  # the block size partial was sized for
    scalars = adam_scalars(param.dtype.type, lr, beta1, beta2, eps, step, decay, smallest)
    _kernel(adam_loop, param.size)(param, grad, m, v, *scalars, partial, block_size)
    total = 0.0
    for value in partial.tolist():  # block by block, in order
        total += value
    return total


def blocks_for(size: int) -> int:
    """Length of the ``partial`` array that ``adam`` needs for ``size`` elements."""
    return max(1, (size + BLOCK - 1) // BLOCK)


# --------------------------------------------------------------------------- warming up
# A fit calls ``warm_up`` before it reads its data. A background thread imports numba and
# looks in the disk cache for each kernel the fit needs; what the cache lacks (a fresh
# install), helper processes compile into it, on other cores and without taking this
# process's interpreter lock (a compiling thread held it long enough to slow the reading of
# the data by a second here). A step loads each kernel from the cache when it first calls it,
# as without a warm-up, waiting for a helper still compiling it, or running the serial
# version while the parallel one is compiling. Where the cache cannot be written, nothing is
# handed to helpers: the step compiles, as without a warm-up.

# The kernels by the name ``warm_up`` knows them, in the order a step first calls them.
_LOOPS = {
    "bias_relu": bias_relu_loop,
    "bias": bias_loop,
    "softmax_cross_entropy": softmax_cross_entropy_loop,
    "column_sums": column_sums_loop,
    "adam": adam_loop,
}
_FUNCTIONS = {function.__name__: function for function in _LOOPS.values()}
_WARM_UP_THREAD = "dltrain kernels"


def needs_of(dense_layers, batch_sizes, loss: str, optimizer: str) -> list[tuple[str, int]]:
    """The (kernel, elements) pairs the fused path of a network calls: ``dense_layers`` holds
    (fan_in, fan_out, activation) of each dense layer in order, the output layer last (linear:
    the loss applies its activation); a size not known yet as 0 gives the serial version.
    Dense layers run kernels for ReLU and linear only (layers.Dense), the cross-entropy loss
    and Adam have one each."""
    needs = []
    for fan_in, fan_out, activation in dense_layers:
        if activation not in ("relu", "linear"):
            continue
        forward = "bias_relu" if activation == "relu" else "bias"
        for rows in batch_sizes:
            needs += [(forward, rows * fan_out), ("column_sums", rows * fan_out)]
        if optimizer == "adam":
            needs += [("adam", fan_in * fan_out), ("adam", fan_out)]
    if loss == "cross_entropy" and dense_layers:
        needs += [("softmax_cross_entropy", rows * dense_layers[-1][1]) for rows in batch_sizes]
    return needs


def warm_up(needs, dtype, index_dtype="int64") -> None:
    """Have the kernels in ``needs`` ((kernel, elements) pairs, see ``needs_of``) ready before a
    step calls them, without waiting here. The serial version of each comes first: a step runs
    it while the parallel one is not ready yet. Nothing happens where the fused path is off."""
    if not active():
        return
    order = list(_FUNCTIONS)
    wanted = {(_LOOPS[name].__name__, False) for name, _ in needs}
    wanted |= {(_LOOPS[name].__name__, _parallel(_LOOPS[name], size)) for name, size in needs}
    with _warm_up_lock:
        todo = [key for key in wanted if key not in _compiled and key not in _warming]
        todo.sort(key=lambda key: (key[1], order.index(key[0])))  # serial first, in the order a step calls them
        for key in todo:
            _warming[key] = threading.Event()
    if todo:
        arguments = (todo, _dtype(dtype).name, _dtype(index_dtype).name)
        threading.Thread(target=_warm_up_thread, args=arguments, name=_WARM_UP_THREAD, daemon=True).start()


def _signature(function, dtype: str, index_dtype: str):
    """The argument types a step passes to ``function``: compiling for them compiles exactly
    what the step calls (a test checks that a fit compiles nothing more)."""
    numba = _load_numba()
    real, index = numba.from_dtype(_dtype(dtype)), numba.from_dtype(_dtype(index_dtype))
    matrix, vector = numba.types.Array(real, 2, "C"), numba.types.Array(real, 1, "C")
    if function in (bias_loop, bias_relu_loop):
        return matrix, vector
    if function is column_sums_loop:
        return matrix, matrix, vector, numba.types.boolean, numba.types.int64
    if function is softmax_cross_entropy_loop:
        return matrix, numba.types.Array(index, 1, "C"), vector, real, matrix, vector
    return (
        vector,
        vector,
        vector,
        vector,
        *[real] * 9,
        numba.types.Array(numba.types.float64, 1, "C"),
        numba.types.int64,
    )


def _dtype(name: str):
    from .backend import xp  # here: backend imports this module

    return xp.dtype(name)


def _cached(name: str, parallel: bool, signature) -> bool | None:
    """Whether the disk cache holds the kernel; None where there is no disk cache."""
    numba = _load_numba()
    function = _FUNCTIONS[name]
    probe = numba.njit(parallel=parallel)(function if parallel else _serial_copy(function))
    if not kernel_cache.enable(probe):
        return None
    return kernel_cache.holds(probe, signature)


def _warm_up_thread(todo, dtype, index_dtype):
    try:
        _load_numba()
        if not _warm_up_stop.is_set() and _finish_warm_up not in _exit_hooks:
            _exit_hooks.append(_finish_warm_up)
            atexit.register(_finish_warm_up)  # after numba's own: it runs first (last in, first out)
        missing = []
        for key in todo:
            cached = _cached(*key, _signature(_FUNCTIONS[key[0]], dtype, index_dtype))
            if cached is None:  # no disk cache: the steps compile in this process
                missing = []
                break
            if not cached:
                missing.append(key)
            else:
                _warming[key].set()
        for key in _compiled_by_helper(missing, dtype, index_dtype):
            _warming[key].set()
    except Exception:  # a step compiles what is missing itself, and meets the error there
        pass
    finally:
        for key in todo:
            _warming[key].set()


def _compiled_by_helper(missing, dtype: str, index_dtype: str):
    """Yield each of ``missing`` as a helper process reports it compiled into the disk cache.

    One helper per idle core (less one for this process), up to one per kernel, each compiling
    its share in order: on many cores the wait is the longest kernel's, not the sum. On a
    machine with no idle core, none: a helper would only take the core from this process, and
    add its own start-up (0.35 s here), so the steps compile in this process."""
    from .threads import idle_cores

    count = min(len(missing), int(idle_cores() - 1 + 0.5))
    if count < 1 or _warm_up_stop.is_set() or os.name != "posix":  # Windows cannot select() on pipes
        return
    import selectors  # only on a fresh cache
    import subprocess
    import sys

    shares = [missing[index::count] for index in range(count)]
    script = "from dltrain.engine import kernels; kernels.compile_into_cache()"
    source_root = str(Path(__file__).resolve().parents[2])  # where this dltrain is imported from
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    selector, helpers = selectors.DefaultSelector(), []
    for share in shares:
        keys = [f"{name}:{int(parallel)}" for name, parallel in share]
        helpers.append(
            subprocess.Popen(
                [sys.executable, "-c", script, dtype, index_dtype, *keys],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=environ,
                text=True,
            )
        )
        reports = helpers[-1].stdout
        assert reports is not None  # stdout=PIPE
        selector.register(reports, selectors.EVENT_READ, reports)
    try:
        with selector:
            while selector.get_map() and not _warm_up_stop.is_set():
                for ready, _ in selector.select(timeout=0.1):
                    line = ready.data.readline()
                    if not line:
                        selector.unregister(ready.data)
                        ready.data.close()
                        continue
                    name, _, parallel = line.strip().partition(":")
                    if (name, parallel == "1") in missing:
                        yield name, parallel == "1"
    finally:
        for helper in helpers:
            if helper.stdout is not None:  # stdout=PIPE
                helper.stdout.close()  # a helper reporting after this fills the cache all the same
        _running_helpers.extend(helper for helper in helpers if helper.poll() is None)


def compile_into_cache(arguments=None) -> None:
    """The helper process: compile the kernels named on the command line (``name:parallel``
    after the dtype and index dtype) into the disk cache, reporting each one on a line."""
    import sys
    import warnings

    dtype, index_dtype, *keys = sys.argv[1:] if arguments is None else arguments
    warnings.simplefilter("error", kernel_cache.KernelCacheWarning)  # not cached: not reported
    for key in keys:
        name, _, parallel = key.partition(":")
        try:
            _compile(_FUNCTIONS[name], parallel == "1", _signature(_FUNCTIONS[name], dtype, index_dtype))
        except Exception:
            continue
        try:
            print(key, flush=True)
        except OSError:  # the fit has ended: fill the cache for the next one all the same
            pass


_exit_hooks: list = []


def _finish_warm_up():
    """At exit: let the thread end the kernel it is loading or compiling (the interpreter must
    not end under numba). Helpers still compiling finish on their own: the next fit finds
    their kernels in the cache."""
    _warm_up_stop.set()
    for thread in threading.enumerate():
        if thread.name == _WARM_UP_THREAD:
            thread.join()
    with warnings.catch_warnings():  # here, with no thread left to change the filters meanwhile
        warnings.simplefilter("ignore", ResourceWarning)  # Python's warning that a helper still runs
        _running_helpers.clear()
