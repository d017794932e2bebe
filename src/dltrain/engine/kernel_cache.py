"""numba's on-disk cache of compiled kernels, made unable to crash or mislead a fit.

The one module that uses numba's caching internals (``numba.core.caching``). Two promises:

- A cache that cannot be written (a read-only install with ``XDG_CACHE_HOME`` or ``HOME`` a
  file, a read-only cache folder, a full disk) leaves the kernels compiled in memory.
- A damaged cache file is never handed to numba: each index and data file carries the SHA-256
  of its content and is used only while it matches (numba's own files, unpickled as they are,
  raised ``UnpicklingError`` or made LLVM abort the process). A damaged file is ignored, the
  kernel compiled again, and the file rewritten.

Either way the run goes on, and at most one ``KernelCacheWarning`` per process says why.
The sealed files have names of their own (``….dltrain.nbi``, ``….dltrain.N.nbc``), so numba's
plain cache and this one never read each other's files.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import warnings
from pathlib import Path

_MAGIC = b"dltrain kernel cache 1\n"
_DIGEST_BYTES = 32
_warned = False
_guarded_cache = None  # the cache class, built on first use (importing numba's caching module)


class KernelCacheWarning(RuntimeWarning):
    """The on-disk kernel cache could not be used as it is; the run goes on without it."""


class DamagedCacheFile(OSError):
    """A cache file whose content does not match its own checksum (an OSError: numba then
    treats a data file as missing, and compiles)."""


def warn_once(message: str) -> None:
    """One KernelCacheWarning per process, however many kernels meet the same problem."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, KernelCacheWarning, stacklevel=2)


def seal(payload: bytes) -> bytes:
    """``payload`` behind a marker and its SHA-256."""
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def unseal(blob: bytes, path) -> bytes:
    """The payload of a sealed file; DamagedCacheFile when the marker or the checksum is wrong."""
    start = len(_MAGIC) + _DIGEST_BYTES
    payload, digest = blob[start:], blob[len(_MAGIC) : start]
    if not blob.startswith(_MAGIC) or len(blob) < start or hashlib.sha256(payload).digest() != digest:
        raise DamagedCacheFile(f"{path}: damaged (its checksum does not match)")
    return payload


def enable(dispatcher) -> bool:
    """Cache ``dispatcher``'s compilations on disk where that works (True); else they stay in memory."""
    try:
        cache = _cache_class()(dispatcher.py_func)
    except Exception as error:  # numba raises RuntimeError when no folder can be written
        warn_once(
            f"compiled kernels cannot be cached on disk ({_first_line(error)}); they are compiled "
            "in memory for this run. Set NUMBA_CACHE_DIR to a writable folder to keep them"
        )
        return False
    dispatcher._cache = cache  # what numba's own enable_caching() sets, with the guarded cache
    return True


def holds(dispatcher, signature) -> bool:
    """Whether the disk cache holds ``dispatcher``'s compilation for ``signature`` (its index
    names it; the entry is loaded, and checked, only when the kernel is called)."""
    from numba.core.compiler_lock import global_compiler_lock

    cache = dispatcher._cache
    if not getattr(cache, "_enabled", False):
        return False
    # Under numba's lock, as its own compilations: refreshing the contexts while another thread
    # compiles made that compilation fail to type (Unknown attribute 'shape' of type array).
    with global_compiler_lock:
        dispatcher.targetctx.refresh()
        key = cache._index_key(signature, dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()


def warm(dispatcher, arguments: tuple) -> bool:
    """Whether a call of ``dispatcher`` with ``arguments`` runs at once: its compilation for their
    types is in this process or in the disk cache (looked up as numba looks it up)."""
    signature = tuple(dispatcher.typeof_pyval(value) for value in arguments)
    return signature in dispatcher.overloads or holds(dispatcher, signature)


def start_helper(code: str):
    """A helper process running ``code`` (Python that compiles kernels into the disk cache), as
    subprocess.Popen, or None where none can start. The code should lower its own priority, so
    that it takes only a core nothing else wants; nothing waits for it (it goes on after this
    process ends) and it writes nowhere but to the cache. It imports this same dltrain."""
    if not sys.executable:
        return None
    import subprocess

    source_root = str(Path(__file__).resolve().parents[2])  # where this dltrain is imported from
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environ,
        )
    except OSError:
        return None  # the work goes on without it; a later call starts another


class CompileHelper:
    """One helper process at most that runs ``code`` (see ``start_helper``) to compile kernels into
    the disk cache while the work goes on without them."""

    def __init__(self, code: str):
        self.code, self.process = code, None

    def start(self) -> None:
        """Start it, unless it was started (then it is reaped once it has ended)."""
        if self.process is not None:
            self.process.poll()
            return
        self.process = start_helper(self.code)
        if self.process is not None:
            import atexit

            atexit.register(self.leave)

    def leave(self) -> None:
        """At exit: let it finish on its own, without Python's warning that it still runs."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self.process = None


def folder(dispatcher) -> Path | None:
    """The folder holding ``dispatcher``'s cached compilations; None where they are not cached on disk."""
    cache = dispatcher._cache
    return Path(cache._cache_path) if getattr(cache, "_enabled", False) else None


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _cache_class():
    global _guarded_cache
    if _guarded_cache is None:
        _guarded_cache = _build_cache_class()
    return _guarded_cache


def _build_cache_class():
    from numba.core import caching

    return _guarded_cache_class(caching, _sealed_file_class(caching))


def _sealed_file_class(caching):
    class SealedFile(caching.IndexDataCacheFile):
        """numba's index and data files, each sealed with its checksum."""

        def __init__(self, cache_path, filename_base, source_stamp):
            super().__init__(cache_path, f"{filename_base}.dltrain", source_stamp)

        def _read_sealed(self, path) -> bytes:
            with open(path, "rb") as handle:
                return unseal(handle.read(), path)

        def _write_sealed(self, path, payload: bytes) -> None:
            with self._open_for_write(path) as handle:
                handle.write(seal(payload))

        def _load_index(self):
            try:
                stream = io.BytesIO(self._read_sealed(self._index_path))
            except FileNotFoundError:
                return {}
            except DamagedCacheFile as error:
                warn_once(f"kernel cache file {error}; it is replaced after compiling again")
                return {}  # compiled again, then saved over it
            if pickle.load(stream) != self._version:  # another numba's entries: not unpickled
                return {}
            stamp, overloads = pickle.loads(stream.read())
            return overloads if stamp == self._source_stamp else {}

        def _save_index(self, overloads):
            payload = pickle.dumps(self._version, protocol=-1) + self._dump((self._source_stamp, overloads))
            self._write_sealed(self._index_path, payload)

        def _load_data(self, name):
            path = self._data_path(name)
            try:
                payload = self._read_sealed(path)
            except DamagedCacheFile as error:
                warn_once(f"kernel cache file {error}; it is replaced after compiling again")
                raise  # an OSError: numba treats the entry as missing
            return pickle.loads(payload)

        def _save_data(self, name, data):
            self._write_sealed(self._data_path(name), self._dump(data))

    return SealedFile


def _guarded_cache_class(caching, SealedFile):  # noqa: N803 (a class, named as one)
    class GuardedCache(caching.FunctionCache):
        """A per-function cache whose failures cost a compilation, never the run."""

        def __init__(self, py_func):
            super().__init__(py_func)  # RuntimeError when no cache folder can be written
            self._cache_file = SealedFile(
                self._cache_path, self._impl.filename_base, self._impl.locator.get_source_stamp()
            )

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception as error:  # anything in a cached entry that numba cannot rebuild
                warn_once(
                    f"a compiled kernel in {self._cache_path} cannot be loaded ({_first_line(error)}); compiled again"
                )
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as error:  # a read-only folder, a full disk, a file in the way
                self.disable()
                warn_once(
                    f"compiled kernels cannot be saved in {self._cache_path} ({_first_line(error)}); they are "
                    "kept in memory for this run. Set NUMBA_CACHE_DIR to a writable folder to keep them"
                )

    return GuardedCache
