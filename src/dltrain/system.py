"""What differs between operating systems, in one place: file locks, swapping two folders in one
step, folders opened as descriptors, what a process id refers to, the memory left, fork.

dltrain is tested on Linux, which has all of them. Elsewhere each degrades instead of failing,
and nothing here fails at import:

- locks: ``flock`` where ``fcntl`` exists (Linux, macOS, the BSDs). Without it (Windows) folders
  are not locked, and the first command that would lock one warns once. Not ``msvcrt.locking``:
  its locks hold a file open inside the run folder, and Windows cannot rename a folder while a
  file in it is open, so no run could be committed.
- exchange: Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``; elsewhere
  ``exchange`` says it cannot, and the commit moves the old run aside and the new one in.
- folders as descriptors (``O_DIRECTORY``, ``dir_fd``, fsync of a folder): POSIX; on Windows a
  run folder's files are read by path and a folder is not fsynced (NTFS journals its entries).
- processes: start times and zombies from ``/proc`` (Linux); ``kill(pid, 0)`` on POSIX;
  ``OpenProcess`` on Windows (where ``os.kill`` would end the process).
- memory: ``/proc/meminfo`` and ``RLIMIT_AS`` (Linux), ``sysconf`` elsewhere, else no limit.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

CAN_LOCK = fcntl is not None
CAN_FORK = hasattr(os, "fork")
# Open a folder and read or fsync files through its descriptor (every POSIX system; not Windows).
OPEN_FOLDERS = hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd


class NoLockWarning(UserWarning):
    """This system has no file locks: nothing stops two commands writing one folder at once."""


_warned = False


def warn_unlocked():
    """Say once per process that folders cannot be locked here."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            NoLockWarning(
                "this system has no file locks (fcntl): dltrain cannot stop two commands from writing "
                "one output folder at once; run one at a time per folder"
            ),
            stacklevel=2,
        )


def lock(descriptor: int, shared: bool = False, wait: bool = False) -> None:
    """``flock`` the open file: exclusive, or shared with other shared holders. Raises
    BlockingIOError when another process holds it and ``wait`` is False; where the system has
    no locks, warns once and returns."""
    if fcntl is None:
        warn_unlocked()
        return
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    fcntl.flock(descriptor, operation if wait else operation | fcntl.LOCK_NB)


# ---------------------------------------------------------------- swapping two folders

_LINUX_RENAME_EXCHANGE = 2
_MACOS_RENAME_SWAP = 2
_AT_CWD = -100  # Linux AT_FDCWD: paths relative to the current folder
_exchange_call: list = []  # [(function, system)] once looked up


def _rename_function():
    """(function, "linux" | "macos"), or (None, "") where the C library has no exchange."""
    if not _exchange_call:
        import ctypes  # only when a run is committed: it costs start-up time

        found: tuple = (None, "")
        names = {"linux": ("renameat2", "linux"), "darwin": ("renamex_np", "macos")}
        name, system = names.get("linux" if sys.platform.startswith("linux") else sys.platform, ("", ""))
        if name:
            try:
                found = (getattr(ctypes.CDLL(None, use_errno=True), name), system)
            except (AttributeError, OSError, TypeError):
                pass
        _exchange_call.append(found)
    return _exchange_call[0]


def exchange(first: Path, second: Path) -> bool:
    """Swap two folders in one atomic step; False where the system or the file system cannot."""
    function, system = _rename_function()
    if function is None:
        return False
    import ctypes

    if system == "linux":
        done = function(_AT_CWD, os.fsencode(first), _AT_CWD, os.fsencode(second), _LINUX_RENAME_EXCHANGE)
    else:
        done = function(os.fsencode(first), os.fsencode(second), _MACOS_RENAME_SWAP)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


# ---------------------------------------------------------------- processes


def process_running(pid: int) -> bool | None:
    """Whether a process with this id exists; None where the system cannot tell."""
    if sys.platform == "win32":
        return _windows_process_running(pid)  # os.kill(pid, 0) there would end the process
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _windows_process_running(pid: int) -> bool | None:
    """OpenProcess and GetExitCodeProcess, as Windows tells whether a process runs (untested here)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    query_limited_information, still_active = 0x1000, 259
    access_denied, invalid_parameter = 5, 87
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        error = ctypes.get_last_error()  # type: ignore[attr-defined]
        return {invalid_parameter: False, access_denied: True}.get(error)  # denied: someone else's process
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return None
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def process_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, start time at [19]),
    or [] where there is none (no such process, or no /proc: not Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


# ---------------------------------------------------------------- memory


def available_memory() -> int:
    """Bytes this process may still allocate: the system's available memory, within RLIMIT_AS."""
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 1 << 62  # unknown: no limit of ours
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as handle:
                used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            available = min(available, max(0, soft - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return available


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
