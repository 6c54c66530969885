"""PostgreSQL through ADBC (``tensorfeed[postgres]``): rows arrive as Arrow.

A batch is one prepared statement; a stream reads a shard with one ``COPY ... TO STDOUT (FORMAT
binary)`` (with ``params=``: a server-side cursor in one ``REPEATABLE READ`` transaction), decoded
on a read-ahead thread while the consumer converts the previous batch.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..._deps import require
from ...errors import ConnectionFailedError
from .backend import _Backend, _Typing
from .driver_errors import _first_line

_PG_BATCH_BYTES = str(8 << 20)  # COPY record batches of ~8 MiB: a stream's memory bound


def _show_setting(be: _Backend, conn: Any, name: str) -> str | None:
    """Setting ``name`` read on ``conn`` after a failed statement (its transaction rolled back
    first; ADBC sends a query through COPY, which cannot run SHOW), or None if that fails too."""
    if not isinstance(be, _Postgres) or not re.fullmatch(r"[a-z_]+", name):
        return None
    with contextlib.suppress(Exception):
        be.execute(conn, "ROLLBACK")
    try:
        return str(be.scalar(conn, f"SELECT current_setting('{name}')"))
    except Exception:
        return None


class _Postgres(_Backend):
    def connect(self) -> Any:
        dbapi = require("adbc_driver_postgresql.dbapi", "postgres", "reading PostgreSQL")
        try:
            return dbapi.connect(self.db.url, autocommit=True)
        except Exception as exc:
            raise ConnectionFailedError(
                f"cannot connect to {self.db.safe}: {self.db.scrub(_first_line(exc))}"
            ) from None

    def _run(self, conn: Any, sql: str, params: list[Any]) -> Any:
        cur = conn.cursor()
        try:
            cur.execute(sql, _pg_params(params) if params else None)
        except Exception:
            cur.close()
            raise
        return cur

    def execute(self, conn: Any, sql: str) -> None:
        self._run(conn, sql, []).close()

    def scalar(self, conn: Any, sql: str) -> Any:
        cur = self._run(conn, sql, [])
        try:
            return cur.fetchone()[0]
        finally:
            cur.close()

    def table(
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        typing: _Typing = None,
        cursors: dict[Any, Any] | None = None,
    ) -> pa.Table:
        if cursors is None:
            cur = self._run(conn, sql, params)
            try:
                return _pg_normalise(cur.fetch_arrow_table())
            finally:
                cur.close()
        cur = cursors.get(sql)
        if cur is None:  # the same cursor re-executes its prepared statement: no re-planning
            cur = cursors[sql] = conn.cursor()
        cur.execute(sql, _pg_params(params) if params else None)
        return _pg_normalise(cur.fetch_arrow_table())

    def schema(self, conn: Any, sql: str, params: list[Any]) -> list[str]:
        return self.table(conn, sql, params).column_names

    def read_all(
        self, conn: Any, sql: str, params: list[Any], typing: _Typing, on_rows: Callable[[int], Any]
    ) -> pa.Table:
        cur = conn.cursor()
        try:
            cur.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": _PG_BATCH_BYTES}
            )
            cur.execute(sql, _pg_params(params) if params else None)
            reader = cur.fetch_record_batch()
            batches = []
            for batch in reader:  # the same COPY as fetch_arrow_table, counted as it arrives
                batches.append(batch)
                on_rows(batch.num_rows)
            return _pg_normalise(pa.Table.from_batches(batches, reader.schema))
        finally:
            cur.close()

    def stream(
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        chunk_rows: int,
        typing: _Typing,
        in_transaction: bool = False,
    ) -> Iterator[pa.Table]:
        if params:  # COPY cannot take bound values: a server-side cursor in one snapshot
            yield from self._cursor_stream(conn, sql, params, chunk_rows, in_transaction)
            return
        cur = conn.cursor()
        try:
            cur.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": _PG_BATCH_BYTES}
            )
            cur.execute(sql)
            # Decoding COPY data runs in C++ without the GIL: read ahead on a thread while the
            # consumer turns the previous batch into tensors (at most _READ_AHEAD batches held).
            for batch in _read_ahead(iter(cur.fetch_record_batch()), _READ_AHEAD):
                yield from _slices(_pg_normalise(pa.Table.from_batches([batch])), chunk_rows)
        finally:
            cur.close()

    def _cursor_stream(
        self, conn: Any, sql: str, params: list[Any], chunk_rows: int, in_transaction: bool
    ) -> Iterator[pa.Table]:
        if not in_transaction:
            self.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            self._run(conn, f"DECLARE tfd_cursor NO SCROLL CURSOR FOR {sql}", params).close()
            cur = conn.cursor()
            cur.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
            try:
                while True:
                    cur.execute(f"FETCH FORWARD {int(chunk_rows)} FROM tfd_cursor")
                    t = _pg_normalise(cur.fetch_arrow_table())
                    if t.num_rows == 0:
                        break
                    yield t
            finally:
                cur.close()
            if in_transaction:  # the caller's transaction goes on: close the cursor only
                self.execute(conn, "CLOSE tfd_cursor")
        finally:
            if not in_transaction:
                with contextlib.suppress(Exception):
                    self.execute(conn, "ROLLBACK")

    def keys_param(self, keys: np.ndarray | pa.Array) -> Any:
        values = keys if isinstance(keys, pa.Array) else pa.array(keys)
        if pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)

    def in_keys(self, column: str, placeholder: str) -> str:
        return f"{column} = ANY({placeholder})"

    def bucket(self, column: str, key_is_int: bool | None, buckets: int) -> str:
        b = buckets
        if key_is_int:
            return f"((({column}) % {b}) + {b}) % {b}"
        return f"(((hashtextextended(({column})::text, 0)) % {b}) + {b}) % {b}"


def _pg_params(values: list[Any]) -> pa.RecordBatch:
    arrays = [v if isinstance(v, pa.Array) else pa.array([v]) for v in values]
    return pa.RecordBatch.from_arrays(arrays, names=[f"p{i}" for i in range(len(arrays))])


def _pg_normalise(t: pa.Table) -> pa.Table:
    """NUMERIC arrives as an opaque string extension: make it float64; other opaque types become
    their storage (text). Everything else is already the Arrow type columns.py converts."""
    cols, changed = [], False
    for col, fld in zip(t.columns, t.schema):
        if isinstance(fld.type, pa.BaseExtensionType) and not isinstance(fld.type, pa.UuidType):
            storage = pa.chunked_array([c.storage for c in col.chunks], fld.type.storage_type)
            is_numeric = getattr(fld.type, "type_name", "") == "numeric"
            col = pc.cast(storage, pa.float64()) if is_numeric else storage
            changed = True
        cols.append(col)
    if not changed:
        return t.replace_schema_metadata(None)
    return pa.table(cols, names=t.column_names)


_READ_AHEAD = 2
_DONE = object()

# NOTE [ Read-ahead threads and interpreter exit ]
# A read-ahead thread spends most of its time inside the driver (ADBC's C++ COPY decoder, without
# the GIL). It is a daemon thread, so a script that ends mid-epoch does not wait for it; but a
# daemon thread still running when the interpreter finalises is killed when it next takes the GIL,
# from inside those C++ frames (a forced unwind: abort or segfault at exit), and the connection
# it reads from may be closed under it by a finalizer. So every running producer is registered
# here, and an exit hook (registered after the datasets' weakref finalizers, so it runs before
# them) stops and joins them while the interpreter is whole. A generator that is stopped early
# or garbage-collected stops its thread itself, before its cursor is closed.
_PRODUCERS: dict[int, tuple[threading.Event, threading.Thread]] = {}
_EXIT_HOOK: list[int] = []  # pids that registered _stop_producers_at_exit


def _stop_producers_at_exit(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for stop, _thread in list(_PRODUCERS.values()):
        stop.set()
    for _stop, thread in list(_PRODUCERS.values()):
        thread.join(max(0.0, deadline - time.monotonic()))


def _read_ahead(it: Iterator[Any], depth: int) -> Iterator[Any]:
    """Items of ``it``, produced by a background thread at most ``depth`` items ahead. Errors are
    re-raised here; stopping early stops the thread before this generator returns."""
    q: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()
    if os.getpid() not in _EXIT_HOOK:
        _EXIT_HOOK.append(os.getpid())
        atexit.register(_stop_producers_at_exit)

    def produce() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(_Raised(exc))

    thread = threading.Thread(target=produce, name="tensorfeed-sql-read-ahead", daemon=True)
    thread.start()
    _PRODUCERS[id(thread)] = (stop, thread)
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.05)
        thread.join()
        _PRODUCERS.pop(id(thread), None)


@dataclass(frozen=True)
class _Raised:
    exc: BaseException


def _slices(t: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, t.num_rows, rows):
        yield t.slice(start, rows)
