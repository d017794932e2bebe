"""Which worker runs a trial, and whether it is still alive.

A database storage tells a dead worker by Optuna's heartbeat; a journal file has none, so each
trial names its worker (host, process id, the process's start time) and a worker on this
machine that is gone is found here. Failing its trial is the storage's job (``storage``)."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

# Seconds between a worker's heartbeats in a database storage; a trial whose worker is silent
# for twice as long is failed and retried. Tests shorten it through the environment.
HEARTBEAT_SECONDS = 30
# A worker names itself a moment after asking for a trial; one killed in between left no name.
UNNAMED_GRACE_SECONDS = 60
WORKER_ATTR = "worker"


def heartbeat_seconds() -> int:
    return int(os.environ.get("DLTRAIN_TUNE_HEARTBEAT", HEARTBEAT_SECONDS))


def worker_label() -> str:
    """host:pid:start-time; the start time tells a reused process id from the original."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def alive(label: str) -> bool:
    """False only for a worker on this machine whose process is gone (or is another process now)."""
    host, pid, started = (label.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: only a database heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started == "?" or _start_time(int(pid)) == started


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
