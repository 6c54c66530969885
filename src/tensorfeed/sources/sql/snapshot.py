"""Connections per process and, on PostgreSQL, the snapshot every reader of a dataset shares.

PostgreSQL is read through ADBC (``tensorfeed[postgres]``): rows arrive as Arrow, a stream uses
``COPY ... TO STDOUT (FORMAT binary)``. SQLite is read through the standard library's ``sqlite3``
(its values are typed per row, so we build Arrow ourselves and can name a stray value's row).

NOTE [ SQL snapshots and worker connections ]
Everything a worker needs crosses the process boundary as configuration: the URL, the SQL, the
key index (numpy, or Arrow for text keys) and, on PostgreSQL, a snapshot id. Connections are
opened lazily in the process that reads (``_Reader``, checked against ``os.getpid()``). A
connection found in a forked child belongs to the parent: closing it would send the parent's
``Terminate`` on the shared socket, so the child *abandons* it (keeps a reference in
``_ABANDONED`` so no destructor ever runs) and opens its own.

PostgreSQL map-style: the constructor opens a ``REPEATABLE READ READ ONLY`` transaction, calls
``pg_export_snapshot()`` and builds the key index inside it. That transaction is held open by a
module-level ``_Pin`` (never a picklable attribute) for as long as the dataset lives in the process
that built it. Every reader, in any process, runs ``BEGIN ISOLATION LEVEL REPEATABLE READ; SET
TRANSACTION SNAPSHOT '<id>'`` before its first batch, so all workers see exactly the database the
key index was built from: ``ds[i]`` never changes meaning and no row appears twice, whatever other
writers do. ``refresh()`` re-pins (new snapshot, new key index) for the next epoch; if the pin is
gone (dataset garbage-collected, ``close()``d, or the session killed by the server) a reader that
has not yet imported the snapshot raises :class:`SourceChangedError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ...errors import ConfigError, SourceChangedError
from .backend import _Backend, _Typing
from .driver_errors import _SNAPSHOT_GONE, _translate
from .postgres import _Postgres, _show_setting
from .sqlite import _SQLite
from .url import Database

_ABANDONED: list[Any] = []  # connections inherited through fork: never used, never closed


_PINS: dict[str, _Pin] = {}  # dataset token -> the snapshot-holding transaction of this process


_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f-]+$")


def _backend(db: Database) -> _Backend:
    return _Postgres(db) if db.backend == "postgresql" else _SQLite(db)


class _Pin:
    """The transaction that exported a PostgreSQL snapshot, held open in the process that built
    the key index (see NOTE [ SQL snapshots and worker connections ])."""

    def __init__(self, backend: _Postgres, conn: Any, snapshot: str) -> None:
        self.backend, self.conn, self.snapshot, self.pid = backend, conn, snapshot, os.getpid()

    def release(self) -> None:
        if self.pid != os.getpid():
            _ABANDONED.append(self.conn)
            return
        with contextlib.suppress(Exception):
            self.backend.execute(self.conn, "ROLLBACK")
        self.backend.close(self.conn)


def _release_pin(token: str) -> None:
    pin = _PINS.get(token)
    if pin is not None and pin.pid == os.getpid():
        del _PINS[token]
        pin.release()


def enter_snapshot(be: _Postgres, conn: Any, snapshot: str, where: str) -> None:
    """Begin a ``REPEATABLE READ`` transaction on ``conn`` that reads in ``snapshot`` (a
    SourceChangedError if the transaction that exported it has ended)."""
    if not _SNAPSHOT_ID.match(snapshot):
        raise ConfigError(f"{snapshot!r} is not a PostgreSQL snapshot id")
    be.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        be.execute(conn, f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    except Exception as exc:
        with contextlib.suppress(Exception):
            be.execute(conn, "ROLLBACK")
        if getattr(exc, "sqlstate", "") == "22023":
            raise SourceChangedError(_SNAPSHOT_GONE.format(where=where)) from None
        raise _translate(exc, be.db, None) from None


class _Reader:
    """This process's connection for one dataset, in the dataset's snapshot on PostgreSQL."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.conn = backend.connect()
        self.pid = os.getpid()
        self.snapshot: str | None = None
        # held for every statement; close() takes it too, so a connection is never closed
        # under a statement running on another thread (the fetch-ahead one). Reentrant: a failed
        # statement closes its own reader (a lost connection) while holding it.
        self.lock = threading.RLock()
        self.queries = 0  # statements run for batches: tests check one per batch
        self.cursors: dict[Any, Any] = {}

    def table(
        self,
        sql: str,
        params: list[Any],
        typing: _Typing,
        on_rows: Callable[[int], Any] | None = None,
    ) -> pa.Table:
        self.queries += 1
        if on_rows is not None:
            return self.backend.read_all(self.conn, sql, params, typing, on_rows)
        return self.backend.table(self.conn, sql, params, typing, self.cursors)

    def _close_cursors(self) -> None:
        cursors, self.cursors = self.cursors, {}
        for cur in cursors.values():
            if hasattr(cur, "close"):  # prepared cursors (PostgreSQL), not cached types
                with contextlib.suppress(Exception):
                    cur.close()

    def enter(self, snapshot: str | None, where: str) -> None:
        """Make sure this connection reads inside ``snapshot`` (PostgreSQL)."""
        if snapshot is None or snapshot == self.snapshot:
            return
        be = self.backend
        assert isinstance(be, _Postgres)
        if self.snapshot is not None:
            be.execute(self.conn, "ROLLBACK")
            self.snapshot = None
        enter_snapshot(be, self.conn, snapshot, where)
        self.snapshot = snapshot

    def reset(self) -> None:
        """After a failed statement the transaction is aborted: start again on next use."""
        self._close_cursors()
        if self.snapshot is not None and isinstance(self.backend, _Postgres):
            with contextlib.suppress(Exception):
                self.backend.execute(self.conn, "ROLLBACK")
        self.snapshot = None

    def setting(self, name: str) -> str | None:
        """A server setting read on this connection after a failed statement (see reset)."""
        return _show_setting(self.backend, self.conn, name)

    def close(self) -> None:
        if self.pid != os.getpid():
            _ABANDONED.append(self)  # cursors included: no destructor may touch the socket
            return
        with self.lock:  # wait for a statement running on another thread (see __init__)
            self._close_cursors()
            self.backend.close(self.conn)


def _close_idle(idle: dict[str, Any], backend: _Backend) -> None:
    conn, pid = idle.get("conn"), idle.get("pid")
    idle.update(conn=None, pid=None)
    if conn is not None:
        if pid == os.getpid():
            backend.close(conn)
        else:
            _ABANDONED.append(conn)


def _close_reader(holder: dict[str, _Reader | None]) -> None:
    r = holder.get("reader")
    if r is not None:
        holder["reader"] = None
        r.close()
