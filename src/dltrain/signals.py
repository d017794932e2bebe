"""Ctrl-C, SIGTERM and SIGHUP: the one list of signals that stop dltrain, and the ways a
command takes them.

- ``stop_as_interrupt()``: every command line command. Each signal stops the command as Ctrl-C
  does (``Interrupted``, exit code 128 + its number): SIGTERM from kill, systemd, Docker or a
  batch scheduler, SIGHUP from a closed terminal.
- ``deferred()``: a group of files (a run folder's commit, an epoch's checkpoint and its line)
  is never left half-updated. The first signal is held until the block is done, then handed to
  the block around it (or to the program's own handler, else raised, where there is none).
- ``SafePoints``: a tune worker takes signals only where it calls ``check()`` (between batches
  and trials), never in the middle of a write to the study's storage (an interrupted journal
  write leaves its lock behind). A second signal interrupts at once unless told otherwise.
- ``calling(handler)``: ``dltrain serve`` stops gracefully, finishing the requests in flight.

Blocks nest, and the innermost open one decides. Only the main thread receives signals: a block
opened on another thread changes nothing. A signal the process was started to ignore (SIGHUP
under ``nohup``, Ctrl-C of a background job) stays ignored, and a handler Python did not
install (a C library's) is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable

from .errors import Interrupted

STOP_SIGNALS = tuple(
    number
    for number in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
    if number is not None
)


class _Raise:
    """Stop at once: the signal becomes ``Interrupted`` wherever the main thread is."""

    def receive(self, number: int):
        raise Interrupted(number)


class _Call:
    """Hand the signal to a function of the command's own (serve: stop accepting, finish the requests)."""

    def __init__(self, handler: Callable[[int, Any], None]):
        self.handler = handler

    def receive(self, number: int):
        self.handler(number, None)


class _Hold:
    """Keep the first signal until the block is done."""

    def __init__(self):
        self.received: int | None = None

    def receive(self, number: int):
        if self.received is None:
            self.received = number


class SafePoints:
    """Signals taken where ``check()`` is called; with ``escalate``, a second one interrupts at once.

    Reusable: ``with`` it around each stretch of work; a signal kept stays until checked."""

    def __init__(self, escalate: bool = True):
        self.received: int | None = None
        self.escalate = escalate
        self._block: contextlib.AbstractContextManager | None = None

    def receive(self, number: int):
        if self.received is not None and self.escalate:
            raise Interrupted(number)
        self.received = number

    def check(self):
        """Raise the signal received since the work began, if any."""
        if self.received is not None:
            raise Interrupted(self.received)

    def __enter__(self):
        self._block = _opened(self)
        self._block.__enter__()
        return self

    def __exit__(self, *exc_info):
        block, self._block = self._block, None
        if block is not None:
            block.__exit__(*exc_info)


_modes: list = []  # the open blocks of the main thread, innermost last
_previous: dict = {}  # signal number -> the handler to put back when the last block closes


def _deliver(number, frame):
    (_modes[-1] if _modes else _Raise()).receive(number)


def _install():
    for number in STOP_SIGNALS:
        handler = signal.getsignal(number)
        if handler is not signal.SIG_IGN and handler is not None:
            _previous[number] = signal.signal(number, _deliver)


def _restore():
    while _previous:
        number, handler = _previous.popitem()
        signal.signal(number, handler)


@contextlib.contextmanager
def _opened(mode):
    """``mode`` receives the stop signals while the block runs (on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield mode
        return
    _modes.append(mode)  # first: a signal that comes while the handlers are installed finds it
    try:
        if len(_modes) == 1:
            _install()
        yield mode
    finally:
        try:
            if _modes == [mode]:
                _restore()
        finally:
            _modes.remove(mode)


@contextlib.contextmanager
def stop_as_interrupt():
    """Every stop signal stops the block as Ctrl-C does (``Interrupted`` with its number)."""
    with _opened(_Raise()):
        yield


@contextlib.contextmanager
def deferred():
    """Hold the stop signals until the block is done; the first one received is then handed to
    the block around this one, or where there is none to the handler the program had (a Python
    API user's own), or raised as ``Interrupted``."""
    hold = _Hold()
    try:
        with _opened(hold):
            yield
    finally:
        if hold.received is not None:
            _hand_on(hold.received)


def _hand_on(number: int):
    if _modes:
        _modes[-1].receive(number)
        return
    handler = signal.getsignal(number)  # the program's own, put back by now
    if callable(handler) and handler is not _deliver:
        handler(number, None)  # Python's Ctrl-C handler raises KeyboardInterrupt
    else:
        raise Interrupted(number)


@contextlib.contextmanager
def calling(handler: Callable[[int, Any], None]):
    """``handler(number, frame)`` takes every stop signal while the block runs (a server that stops
    gracefully: it no longer accepts connections and finishes the requests in flight)."""
    with _opened(_Call(handler)):
        yield
