"""The study's journal file, checked before Optuna reads it or anyone appends to it.

Optuna appends one JSON record per line. A write cut short (a full disk, a machine that lost
power) leaves a last line without its newline: it is truncated away here, before any append,
so that nothing is ever written after garbage. A damaged or foreign record elsewhere, or
something that is not a regular file at the journal's path (a folder, a FIFO, a device), is
refused with one message naming the file, before a byte of it is read; the file is left as
it was. Every append and every repair happens under one ``flock`` (``.journal.lock`` beside
the journal), which the kernel frees when its holder dies (on a system without ``flock``, none:
``system.lock`` warns once)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import system
from ..errors import DltrainError
from ..files import MiB, open_regular

JOURNAL = "journal.log"
JOURNAL_LOCK = ".journal.lock"
JOURNAL_LIMIT = 2048 * MiB


class JournalError(DltrainError):
    """The study's journal cannot be used as it is."""


class JournalMutex:
    """One appender (or repairer) of the journal at a time, across processes."""

    def __init__(self, journal: Path):
        self.path = Path(journal).with_name(JOURNAL_LOCK)
        self.descriptor: int | None = None

    def __enter__(self):
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        system.lock(self.descriptor, wait=True)
        return self

    def __exit__(self, *exc):
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing drops the lock
            self.descriptor = None


def _damaged(path: Path, number: int, reason: str) -> JournalError:
    return JournalError(
        f"{path}: line {number} is not a record of an Optuna journal ({reason}); the study cannot be "
        "read. Nothing was changed: restore the file from a backup, or start a new study with another --out"
    )


def _check_record(path: Path, number: int, line: bytes, op_codes: frozenset):
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, number, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _damaged(path, number, f"not JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(record, dict):
        raise _damaged(path, number, f"a JSON {type(record).__name__}, not an object")
    op_code = record.get("op_code")
    if not isinstance(op_code, int) or isinstance(op_code, bool) or op_code not in op_codes:
        raise _damaged(path, number, f"op_code {op_code!r} is no operation this Optuna knows")
    if not isinstance(record.get("worker_id"), str):
        raise _damaged(path, number, "no worker_id")


def _read(path: Path) -> bytes:
    with open_regular(path, JournalError, kind="study journal (journal.log)", limit=JOURNAL_LIMIT) as handle:
        try:
            return handle.read()
        except OSError as problem:
            raise JournalError(f"{path}: cannot read ({problem.strerror or problem})") from None


def check_journal(path: Path, op_codes: frozenset) -> str | None:
    """Refuse a damaged journal; cut a torn last record away. Returns a note when it did."""
    path = Path(path)
    if not os.path.lexists(path):
        return None  # a new study
    with JournalMutex(path):
        payload = _read(path)
        complete, _, torn = payload.rpartition(b"\n")
        lines = complete.split(b"\n") if complete else []
        for number, line in enumerate(lines, start=1):
            _check_record(path, number, line, op_codes)
        if not torn:
            return None
        try:
            os.truncate(path, len(payload) - len(torn))
        except OSError as problem:
            raise JournalError(
                f"{path}: its last record was cut short, and it cannot be removed ({problem.strerror or problem}); "
                "check the folder's permissions and free space"
            ) from None
    return (
        f"{path}: its last record was cut short ({len(torn)} bytes of an unfinished write: a full disk "
        "or a stopped machine); removed it before continuing"
    )
