"""A database that stops answering (a frozen server, a network that drops packets) ends the command
instead of keeping it waiting forever: a statement without an answer for two heartbeats gets its
connection shut from a watching thread, so the call waiting on it fails and the search ends with
one message (``storage.storage_failure``). Two heartbeats: the silence after which Optuna too
declares a worker dead."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time


class ServerSilent(ConnectionError):
    """The database gave no answer for two heartbeats: no new connection is tried for this command."""


class SilenceWatch:
    """Watches every statement (and commit) of one SQLAlchemy engine."""

    def __init__(self, engine, limit_seconds: float):
        from sqlalchemy import event

        self.limit = limit_seconds
        self.waiting: dict = {}  # socket descriptor -> when its statement was sent
        self.guard = threading.Lock()
        self.silent = False
        event.listen(engine, "before_cursor_execute", self._sent)
        event.listen(engine, "after_cursor_execute", self._answered)
        event.listen(engine, "commit", self._committing)
        event.listen(engine, "handle_error", self._failed)
        event.listen(engine, "checkin", self._returned)  # commits end here: SQLAlchemy has no after-commit
        event.listen(engine, "do_connect", self._connecting)
        threading.Thread(target=self._watch, name="dltrain-silence-watch", daemon=True).start()

    @staticmethod
    def _descriptor(dbapi_connection) -> int | None:
        try:
            return dbapi_connection.fileno()
        except Exception:  # a closed connection
            return None

    def _mark(self, dbapi_connection, started: float | None):
        descriptor = self._descriptor(dbapi_connection)
        if descriptor is None:
            return
        with self.guard:
            if started is None:
                self.waiting.pop(descriptor, None)
            else:
                self.waiting[descriptor] = started

    def _sent(self, connection, cursor, *args):
        self._mark(cursor.connection, time.monotonic())

    def _answered(self, connection, cursor, *args):
        self._mark(cursor.connection, None)

    def _committing(self, connection):
        self._mark(connection.connection.dbapi_connection, time.monotonic())

    def _failed(self, context):
        cursor = getattr(context, "cursor", None)
        if cursor is not None:
            self._mark(cursor.connection, None)

    def _returned(self, dbapi_connection, record):
        self._mark(dbapi_connection, None)

    def _connecting(self, dialect, record, cargs, cparams):
        if self.silent:  # each new try would wait for its connect_timeout in vain
            raise ServerSilent(f"no answer from the server for {self.limit:g} s")

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.limit / 4))
            now = time.monotonic()
            with self.guard:
                silent = [fd for fd, started in self.waiting.items() if now - started > self.limit]
                for descriptor in silent:
                    del self.waiting[descriptor]
                self.silent = self.silent or bool(silent)
            for descriptor in silent:
                _shut(descriptor)


def _shut(descriptor: int):
    """Shut a connection's socket: the call reading from it gets an error at once."""
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(descriptor))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
