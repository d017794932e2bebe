"""Which worker runs a trial, and whether it is still alive.

A database storage tells a dead worker by Optuna's heartbeat; a journal file has none, so each
trial names its worker (host, process id, the process's start time) and a worker on this
machine that is gone is found here (start times and zombies from Linux's /proc; elsewhere by
process id alone). Failing its trial is the storage's job (``storage``)."""

from __future__ import annotations

import datetime
import os
import socket

from ..errors import ConfigError
from ..system import process_running, process_stat

# Seconds between a worker's heartbeats in a database storage; a trial whose worker is silent
# for twice as long is failed and retried. Tests shorten it through the environment.
HEARTBEAT_SECONDS = 30
# A worker names itself a moment after asking for a trial; one killed in between left no name.
UNNAMED_GRACE_SECONDS = 60
WORKER_ATTR = "worker"


HEARTBEAT_VARIABLE = "DLTRAIN_TUNE_HEARTBEAT"


def heartbeat_seconds() -> int:
    """The heartbeat interval: DLTRAIN_TUNE_HEARTBEAT (whole seconds, at least 1) or 30."""
    text = os.environ.get(HEARTBEAT_VARIABLE)
    if text is None:
        return HEARTBEAT_SECONDS
    try:
        seconds = int(text.strip())
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ConfigError(
            f"environment variable {HEARTBEAT_VARIABLE}={text!r}: give a whole number of seconds of at "
            f"least 1 (the default is {HEARTBEAT_SECONDS}), or unset it"
        )
    return seconds


def worker_label() -> str:
    """host:pid:start-time; the start time tells a reused process id from the original."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def label_prefix(pid: int) -> str:
    """The start of the label of every worker that process ``pid`` on this machine runs."""
    return f"{socket.gethostname()}:{pid}:"


def _start_time(pid: int) -> str:
    """The process's start time ("?" where the system does not say: not Linux)."""
    fields = process_stat(pid)
    return fields[19] if len(fields) > 19 else "?"


def process_exists(pid: int, started: str = "?") -> bool:
    """Whether process ``pid`` of this machine runs (and, given its start time, is still the same
    one); True where the system cannot tell: a live worker's trial is never failed."""
    if process_running(pid) is False:
        return False
    fields = process_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # a zombie: dead, only not yet reaped by its parent
    return started == "?" or (fields[19] if len(fields) > 19 else "?") == started


def alive(label: str) -> bool:
    """False only for a worker on this machine whose process is gone (or is another process now)."""
    host, pid, started = (label.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: only a database heartbeat can tell
    return process_exists(int(pid), started)


def dead_workers(running_trials) -> list:
    """(trial, worker label) for each running trial whose worker died."""
    dead = []
    for trial in running_trials:
        label = trial.user_attrs.get(WORKER_ATTR)
        if label is None:
            started = trial.datetime_start
            now = datetime.datetime.now(started.tzinfo) if started is not None else None
            if started is None or (now - started).total_seconds() < UNNAMED_GRACE_SECONDS:
                continue
            label = "(unnamed)"
        elif alive(label):
            continue
        dead.append((trial, label))
    return dead
