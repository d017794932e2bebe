"""How a long read of a CSV file is reported: the caller (report/progress.py draws a bar on a
terminal) installs a hook for a while; the data package itself never prints."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_READ_PROGRESS: ContextVar = ContextVar("dltrain_read_progress", default=None)


@contextmanager
def reading_progress(start):
    """Report the reading of each CSV file while in this context: ``start(path, total_bytes)``
    returns a context manager that gives a function called with the bytes read so far
    (report/progress.py draws a bar on a terminal; the data package itself never prints)."""
    token = _READ_PROGRESS.set(start)
    try:
        yield
    finally:
        _READ_PROGRESS.reset(token)


@contextmanager
def progress_of(path: Path, size: int):
    """The function to call with the bytes of ``path`` read so far (does nothing unless reported)."""
    start = _READ_PROGRESS.get()
    if start is None:
        yield lambda done: None
        return
    with start(path, size) as update:
        yield update
