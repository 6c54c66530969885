"""SQL databases (PostgreSQL, SQLite) as a map-style dataset and as a sharded stream.

``SQLDataset(url, table= | query=, key=)`` has ``len()`` and a stable ``ds[i]`` over any SELECT
(joins included) with a unique key column; a batch is one query. ``SQLStream`` streams the same
result in Arrow batches with bounded memory, split across DataLoader workers and DDP ranks.

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

SQLite has no exportable snapshot. The key set is pinned at construction (an inserted row is not
part of the dataset until ``refresh()``; ``ds[i]`` always means the row with ``keys[i]``); each
batch is read by one statement, so it is internally consistent; a row deleted after construction
is a :class:`DataError` naming its key; an updated row is read as it is now.

Streams read each shard with ONE statement (PostgreSQL: one ``COPY``; with ``params=``, one
``DECLARE ... CURSOR`` in a ``REPEATABLE READ`` transaction; SQLite: one ``SELECT`` stepped in
chunks), so a shard is one consistent snapshot. Shards are ``key mod n`` for integer keys and a
stable hash of the key otherwise, pushed into the WHERE clause; order within a shard is
``ORDER BY key``, and a resumed shard skips with ``OFFSET``.

Failures keep their kind: a session the server ended mid-read (a restart, ``pg_terminate_backend``)
is a :class:`ConnectionLostError` and a statement cancelled by ``statement_timeout`` a
:class:`StatementTimeoutError`, both :class:`TransientError`. The connection that saw a loss is
dropped, so the same call tried again reconnects (into the same snapshot while its pin lives).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as _urlquote
from urllib.parse import unquote as _urlunquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._deps import require
from ..cache import _Gather, _without_owned
from ..columns import RowLocator, make_spec
from ..dataset import MapDataset, StreamDataset, _digest
from ..errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectionLostError,
    DataError,
    NotFoundError,
    SourceChangedError,
    StatementTimeoutError,
    TensorfeedError,
    TransientError,
)
from ..sampling import World

_OPTIONS = ("table", "query", "key", "columns", "features", "target")
_STREAM_INT_OPTIONS = ("shuffle_buffer", "seed", "chunk_rows")
_LIST_OPTIONS = ("columns", "features")
_ABANDONED: list[Any] = []  # connections inherited through fork: never used, never closed
_PINS: dict[str, _Pin] = {}  # dataset token -> the snapshot-holding transaction of this process
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f-]+$")
_PG_BATCH_BYTES = str(8 << 20)  # COPY record batches of ~8 MiB: a stream's memory bound
# SQLDataset(keep_in_memory=None) keeps the rows in RAM when they are estimated to take at most
# this much (see NOTE [ Rows kept in memory ]).
KEEP_IN_MEMORY_AUTO_BYTES = 1 << 30
_SIZE_SAMPLE_ROWS = 1000
# Library logging: silent unless the application configures the ``tensorfeed`` loggers.
log = logging.getLogger("tensorfeed.sql")
log.addHandler(logging.NullHandler())


def _auto_keep_budget() -> int:
    """KEEP_IN_MEMORY_AUTO_BYTES, or a quarter of the memory available now if that is less."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return KEEP_IN_MEMORY_AUTO_BYTES
    return int(min(KEEP_IN_MEMORY_AUTO_BYTES, available // 4))


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class Database:
    """Where to read: backend, connection URL (with its password, never shown) and a safe name."""

    backend: str
    url: str = field(repr=False)
    safe: str
    password: str = field(default="", repr=False)
    path: str | None = None
    settings: tuple[tuple[str, str], ...] = ()  # server settings the URL's options= sets

    def scrub(self, text: str) -> str:
        """``text`` with the password (plain or URL-quoted) replaced by ``***``."""
        if self.password:
            for form in {self.password, _urlquote(self.password), _urlquote(self.password, "")}:
                text = text.replace(form, "***")
        return text


_SECRET_OPTIONS = ("password", "sslpassword")
_ENCODE_HINT = (
    "percent-encode these characters in the user name and password: '@' as %40, ':' as %3A, "
    "'/' as %2F (urllib.parse.quote(password, safe=''))"
)


def _make_url(url: Any) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(
            "cannot parse the database URL; expected e.g. postgresql://user@host/db or "
            "sqlite:///path.db"
        ) from None


def _query_pairs(u: Any) -> list[tuple[str, str]]:
    """The URL's query options in order; a repeated option (``host=a&host=b``) once, joined by
    commas as libpq spells a list."""
    return [(k, ",".join(v) if isinstance(v, tuple) else str(v)) for k, v in u.query.items()]


def _socket_dir(u: Any) -> str | None:
    host = _urlunquote(u.host or "")
    return host if host.startswith("/") else None


def _render(u: Any, *, secret: bool, drivername: str | None = None) -> str:
    """``u`` as a URL that SQLAlchemy and libpq both read back the same: every part
    percent-encoded (a space as %20, never ``+``). With ``secret=False`` a non-empty password is
    ``***`` and a socket directory is shown as ``?host=/dir``, however the URL spelled it."""
    name = drivername or u.drivername
    if name.startswith("sqlite"):
        q = "&".join(f"{_urlquote(k, '')}={_urlquote(v, '/:,')}" for k, v in _query_pairs(u))
        path = (u.database or "").replace("%", "%25").replace("?", "%3F")  # as SQLAlchemy reads
        return f"{name}:///{path}" + (f"?{q}" if q else "")
    query = _query_pairs(u)
    host, hidden = u.host or "", bool(u.password)
    if "@" in host and not secret:  # part of an unencoded password (parse_url refuses it)
        host, hidden = host.rpartition("@")[2], True
    sock = _socket_dir(u)
    if sock is not None:
        if secret:
            host = _urlquote(sock, "")
        else:
            host = ""
            query.insert(0, ("host", sock))
    elif ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = ""
    if u.username:
        netloc = _urlquote(u.username, "")
    if hidden:
        netloc += ":" + (_urlquote(u.password, "") if secret else "***")
    if netloc:
        netloc += "@"
    netloc += host + (f":{u.port}" if u.port is not None else "")
    safe = "" if secret else "/:,*"
    if not secret:
        query = [(k, "***" if k in _SECRET_OPTIONS and v else v) for k, v in query]
    q = "&".join(f"{_urlquote(k, '')}={_urlquote(v, safe)}" for k, v in query)
    db = _urlquote(u.database, "") if u.database else ""
    return f"{name}://{netloc}/{db}" + (f"?{q}" if q else "")


def display_url(url: str) -> str:
    """The form of a SQL URL that is safe to show: a non-empty password (before the host or as
    ``password=``) reads ``***``, an empty one nothing; a socket directory reads ``?host=/dir``
    whether it was given that way or as ``%2Fdir`` in the host part. Never raises: text that
    cannot be parsed is shown with everything between ``://`` and its last ``@`` hidden."""
    try:
        u = _make_url(url)
    except ConfigError:
        text = str(url)
        scheme, sep, rest = text.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.rpartition('@')[2]}"
        return text
    return _render(u, secret=False)


def _check_userinfo(text: str, u: Any) -> None:
    """Refuse a user name or password whose ``@`` or ``/`` is not percent-encoded: SQLAlchemy
    and libpq split such a URL in different places (libpq ends the user part at the first ``@``
    or ``/``), so it has no single meaning. The password is never echoed."""
    rest = text.partition("://")[2]
    user, pw = u.username or "", u.password or ""
    if "@" in (u.host or "") or ("@" in user and rest.startswith(user)):
        raise ConfigError(f"the database URL has an unencoded '@' before the host; {_ENCODE_HINT}")
    if "/" in pw and f":{pw}@" in rest:
        raise ConfigError(f"the database URL has an unencoded '/' in its password; {_ENCODE_HINT}")


def _check_sqlite(u: Any) -> str:
    if u.host or u.port or u.username or u.password:
        raise ConfigError(
            f"a SQLite URL has no host: {u.drivername}://{_urlquote(u.host or '')}/... reads "
            f"{u.host!r} as a host name; write sqlite:///relative/x.db (three slashes) or "
            "sqlite:////abs/path/x.db (four)"
        )
    path = u.database
    if not path or path == ":memory:" or path.startswith("file::memory:"):
        raise ConfigError(
            "an in-memory SQLite database cannot be shared with DataLoader workers; "
            "write it to a file and use sqlite:///path/to/file.db"
        )
    return os.path.abspath(path)


def _pg_settings(options: str) -> tuple[tuple[str, str], ...]:
    """``-c name=value`` / ``--name=value`` pairs of a libpq ``options`` string."""
    found = re.findall(r"(?:-c\s*|--)([A-Za-z_.]+)=(\S+)", options)
    return tuple((k.replace("-", "_").lower(), v) for k, v in found)


def parse_url(url: Any) -> tuple[Database, dict[str, str]]:
    """A SQLAlchemy-style URL -> (Database, options from its query string such as ``table``)."""
    u = _make_url(url)
    backend = u.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in ("postgresql", "sqlite"):
        raise ConfigError(
            f"unsupported database URL scheme {u.drivername!r}: tensorfeed's SQL sources read "
            "postgresql:// (and postgresql+<driver>://) and sqlite:/// URLs"
        )
    _check_userinfo(str(url), u)
    names = (*_OPTIONS, *_STREAM_INT_OPTIONS)
    options = {k: str(v) for k, v in u.query.items() if k in names}
    u = u.difference_update_query(list(options))
    if backend == "sqlite":
        path = _check_sqlite(u)
        safe = _render(u.set(database=path), secret=False)
        return Database("sqlite", f"sqlite:///{path}", safe, "", path), options
    query = dict(_query_pairs(u))
    password = u.password or query.get("password", "")
    conn = _render(u, secret=True, drivername="postgresql")
    settings = _pg_settings(query.get("options", ""))
    safe = _render(u, secret=False)
    return Database("postgresql", conn, safe, password, None, settings), options


def _url_options(options: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k in _LIST_OPTIONS:
            out[k] = [c.strip() for c in v.split(",") if c.strip()]
        elif k in _STREAM_INT_OPTIONS:
            try:
                out[k] = int(v)
            except ValueError:
                raise ConfigError(f"URL option {k}={v!r} must be an integer") from None
        else:
            out[k] = v
    out.update(overrides)
    return out


# --------------------------------------------------------------------------- SQL text


@dataclass(frozen=True)
class SqlSource:
    """What to read: a table or a SELECT, with named ``:params``, and the dialect to quote with."""

    backend: str
    table: str | None
    query: str | None
    params: tuple[tuple[str, Any], ...] | None = None  # None: the query is sent verbatim

    @classmethod
    def make(
        cls, backend: str, table: str | None, query: str | None, params: Mapping[str, Any] | None
    ) -> SqlSource:
        if (table is None) == (query is None):
            raise ConfigError("give exactly one of table= (a table name) or query= (a SELECT)")
        if table is not None and (not isinstance(table, str) or not table):
            raise ConfigError(f"table must be a non-empty string, got {table!r}")
        if query is not None:
            if not isinstance(query, str) or not query.strip():
                raise ConfigError("query must be a non-empty SELECT statement")
            query = query.strip().rstrip(";").strip()
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(
                "params must be a dict of named parameters used as :name in the query, "
                f"not {type(params).__name__}"
            )
        if params and query is None:
            raise ConfigError("params= only applies to query= (a table has no parameters)")
        return cls(backend, table, query, None if params is None else tuple(sorted(params.items())))

    # -- quoting and parameters -------------------------------------------------------------
    def _dialect(self) -> Any:
        if self.backend == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.dialect(paramstyle="numeric_dollar")
        from sqlalchemy.dialects import sqlite

        return sqlite.dialect(paramstyle="qmark")

    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier by the dialect (always quoted, quotes doubled)."""
        return str(self._dialect().identifier_preparer.quote_identifier(name))

    def from_clause(self) -> tuple[str, list[Any]]:
        """``<table> AS tfd_src`` or ``(<query>) AS tfd_src``, and the query's positional values."""
        if self.table is not None:
            return f"{self.quote(self.table)} AS tfd_src", []
        if self.params is None:
            return f"({self.query}) AS tfd_src", []
        from sqlalchemy import text
        from sqlalchemy.exc import ArgumentError, CompileError

        given = dict(self.params)
        try:
            compiled = text(self.query or "").compile(dialect=self._dialect())
        except (ArgumentError, CompileError) as exc:
            raise ConfigError(f"cannot read the :name parameters of the query: {exc}") from None
        names = list(compiled.positiontup or [])
        missing = sorted({n for n in names if n not in given})
        if missing:
            raise ConfigError(f"the query uses :{missing[0]} but params= does not give it")
        unused = sorted(set(given) - set(names))
        if unused:
            raise ConfigError(f"params= gives {unused[0]!r}, which the query does not use")
        return f"({compiled.string}) AS tfd_src", [given[n] for n in names]

    def placeholder(self, n_before: int) -> str:
        return f"${n_before + 1}" if self.backend == "postgresql" else "?"

    def describe(self) -> str:
        if self.table is not None:
            return f"table {self.table!r}"
        q = " ".join(self.query.split()) if self.query else ""
        return f"query {q[:80] + ('...' if len(q) > 80 else '')!r}"


# --------------------------------------------------------------------------- errors


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"(?:ERROR|FATAL|PANIC):\s+(.*)", text)
    if m:
        text = m.group(1)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# SQLSTATEs of a session the server ended: admin shutdown (pg_terminate_backend, a fast
# restart), crash shutdown, database dropped, idle-session and idle-in-transaction timeouts.
_LOST_STATES = ("57P01", "57P02", "57P04", "57P05", "25P03")
# ... and what libpq, ADBC and Arrow say when the socket went away (often with no SQLSTATE).
_LOST_TEXTS = (
    "server closed the connection unexpectedly",
    "terminating connection",
    "pqgetcopydata() failed",
    "connection to server was lost",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
    "lost synchronization with server",
    "connection is closed",
    "connection already closed",
    "server conn crashed",
    "ssl syscall error",
    "eof detected",
)
# settings whose limit cancels a statement: SQLSTATE -> (words in the message, setting)
_TIMEOUTS = {
    "57014": ("statement timeout", "statement_timeout"),
    "55P03": ("lock timeout", "lock_timeout"),
}


# what a cancelled statement says when the error carries no SQLSTATE (Arrow's error from an ADBC
# COPY stream): message -> SQLSTATE
_CANCEL_TEXTS = {
    "canceling statement due to statement timeout": "57014",
    "canceling statement due to lock timeout": "55P03",
    "canceling statement due to user request": "57014",
}


def _sqlstate(exc: BaseException) -> str:
    """The error's SQLSTATE: an attribute (ADBC, psycopg), the ``SQLSTATE: xxxxx`` ADBC appends to
    its message, or inferred from the words of a cancelled statement."""
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    text = str(exc)
    if not state:
        m = re.search(r"SQLSTATE[:=\s]+([0-9A-Z]{5})", text)
        state = m.group(1) if m else ""
    if not state:
        low = text.lower()
        state = next((s for t, s in _CANCEL_TEXTS.items() if t in low), "")
    return str(state)


def _is_lost(exc: BaseException, state: str, low: str) -> bool:
    if state in _LOST_STATES or state in ("08000", "08003", "08006"):
        return True
    if any(t in low for t in _LOST_TEXTS):
        return True
    status = getattr(getattr(exc, "status_code", None), "name", "")
    return status == "IO" and not state and "error:" not in low  # ADBC: I/O, no server error


def _translate(
    exc: BaseException,
    db: Database,
    src: SqlSource | None,
    setting: Callable[[str], str | None] | None = None,
) -> TensorfeedError:
    """A driver error -> the tensorfeed error naming the culprit, with no password in it.
    ``setting(name)`` reads a server setting (a statement timeout's value) when one is asked."""
    if isinstance(exc, TensorfeedError):
        return exc
    msg = db.scrub(_first_line(exc))
    state = _sqlstate(exc)
    where = f"{src.describe()} of {db.safe}" if src else db.safe
    low = db.scrub(str(exc).split("Query was:")[0]).lower()  # the words, not the SQL they quote
    if state == "42P01" or "no such table" in low:
        if src is not None and src.table is not None:
            return NotFoundError(f"table {src.table!r} does not exist in {db.safe}")
        return NotFoundError(f"{where}: {msg}")
    if state == "42703" or "no such column" in low:
        return NotFoundError(f"{where}: {msg}")
    if _is_lost(exc, state, low):
        return ConnectionLostError(
            f"lost the connection to {db.safe} while reading "
            f"{src.describe() if src else 'from it'} (the server restarted or ended the "
            f"session); a retry opens a new connection: {msg}"
        )
    if state.startswith("08") or state in ("28000", "28P01", "3D000", "57P03"):
        return ConnectionFailedError(f"cannot connect to {db.safe}: {msg}")
    if state in _TIMEOUTS and _TIMEOUTS[state][0] in low:
        name = _TIMEOUTS[state][1]
        value = dict(db.settings).get(name) or (setting(name) if setting else None)
        limit = f"{name}={value}{'ms' if value and value.isdigit() else ''}" if value else name
        return StatementTimeoutError(
            f"{where}: the server cancelled the query when it ran past {limit}: {msg}"
        )
    if state == "57014":  # pg_cancel_backend, or a cancel request from the client
        return TransientError(f"{where}: the server cancelled the query: {msg}")
    if state == "22023" and "snapshot" in low:
        return SourceChangedError(_SNAPSHOT_GONE.format(where=where))
    if state.startswith("42") or "syntax error" in low:  # the SQL itself (or a permission)
        return ConfigError(f"{where}: the database refused the query: {msg}")
    return DataError(f"{where}: the database refused the query: {msg}")


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


_SNAPSHOT_GONE = (
    "the PostgreSQL snapshot that {where} was pinned to no longer exists: the dataset that "
    "exported it was closed or garbage-collected, the process that built it ended, or the "
    "server ended its transaction (idle_in_transaction_session_timeout). Keep the dataset "
    "alive while its loaders run, or build it again (or call refresh() in the process that "
    "built it)"
)


# --------------------------------------------------------------------------- connections


class _Backend:
    """Driver calls for one kind of database. Connections are plain DB-API/ADBC objects."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def connect(self) -> Any:
        raise NotImplementedError

    def table(
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        typing: _Typing = None,
        cursors: dict[Any, Any] | None = None,
    ) -> pa.Table:
        """Run ``sql`` and return its rows; ``cursors`` is the reader's per-SQL state (a prepared
        statement, inferred column types) kept from one batch to the next."""
        raise NotImplementedError

    def schema(self, conn: Any, sql: str, params: list[Any]) -> list[str]:
        raise NotImplementedError

    def read_all(
        self, conn: Any, sql: str, params: list[Any], typing: _Typing, on_rows: Callable[[int], Any]
    ) -> pa.Table:
        """Like ``table`` (one statement), reporting the rows received to ``on_rows`` as they
        arrive: a long read into memory can show progress."""
        t = self.table(conn, sql, params, typing)
        on_rows(t.num_rows)
        return t

    def stream(
        self, conn: Any, sql: str, params: list[Any], chunk_rows: int, typing: _Typing
    ) -> Iterator[pa.Table]:
        raise NotImplementedError

    def keys_param(self, keys: np.ndarray | pa.Array) -> Any:
        raise NotImplementedError

    def in_keys(self, column: str, placeholder: str) -> str:
        raise NotImplementedError

    def shard_predicate(self, column: str, key_is_int: bool | None, n: int, shard: int) -> str:
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


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
        self, conn: Any, sql: str, params: list[Any], chunk_rows: int, typing: _Typing
    ) -> Iterator[pa.Table]:
        if params:  # COPY cannot take bound values: a server-side cursor in one snapshot
            yield from self._cursor_stream(conn, sql, params, chunk_rows)
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
        self, conn: Any, sql: str, params: list[Any], chunk_rows: int
    ) -> Iterator[pa.Table]:
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
        finally:
            with contextlib.suppress(Exception):
                self.execute(conn, "ROLLBACK")

    def keys_param(self, keys: np.ndarray | pa.Array) -> Any:
        values = keys if isinstance(keys, pa.Array) else pa.array(keys)
        if pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)

    def in_keys(self, column: str, placeholder: str) -> str:
        return f"{column} = ANY({placeholder})"

    def shard_predicate(self, column: str, key_is_int: bool | None, n: int, shard: int) -> str:
        if key_is_int:
            return f"((({column}) % {n}) + {n}) % {n} = {shard}"
        return f"(((hashtextextended(({column})::text, 0)) % {n}) + {n}) % {n} = {shard}"


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


class _SQLite(_Backend):
    def connect(self) -> Any:
        import sqlite3

        path = self.db.path or ""
        if not os.path.exists(path):
            raise NotFoundError(f"the SQLite database file {path!r} does not exist")
        try:
            conn = sqlite3.connect(
                f"file:{_urlquote(path)}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConnectionFailedError(f"cannot open {self.db.safe}: {exc}") from None
        conn.create_function("tfd_hash", 1, _stable_hash, deterministic=True)
        return conn

    def _rows(self, conn: Any, sql: str, params: list[Any]) -> tuple[list[str], Any]:
        cur = conn.execute(sql, params)
        return [d[0] for d in cur.description or ()], cur

    def table(
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        typing: _Typing = None,
        cursors: dict[Any, Any] | None = None,
    ) -> pa.Table:
        names, cur = self._rows(conn, sql, params)  # sqlite3 caches prepared statements itself
        types = None if cursors is None else cursors.setdefault(("types", sql), {})
        try:
            return _rows_to_arrow(names, cur.fetchall(), typing, types)
        finally:
            cur.close()

    def schema(self, conn: Any, sql: str, params: list[Any]) -> list[str]:
        names, cur = self._rows(conn, sql, params)
        cur.close()
        return names

    def read_all(
        self, conn: Any, sql: str, params: list[Any], typing: _Typing, on_rows: Callable[[int], Any]
    ) -> pa.Table:
        names, cur = self._rows(conn, sql, params)
        rows: list[tuple[Any, ...]] = []
        try:
            while chunk := cur.fetchmany(65536):
                rows.extend(chunk)
                on_rows(len(chunk))
        finally:
            cur.close()
        return _rows_to_arrow(names, rows, typing)

    def stream(
        self, conn: Any, sql: str, params: list[Any], chunk_rows: int, typing: _Typing
    ) -> Iterator[pa.Table]:
        names, cur = self._rows(conn, sql, params)
        types: dict[str, pa.DataType] = {}
        try:
            while True:
                rows = cur.fetchmany(chunk_rows)
                if not rows:
                    break
                yield _rows_to_arrow(names, rows, typing, types)
        finally:
            cur.close()

    def keys_param(self, keys: np.ndarray | pa.Array) -> Any:
        values = keys.to_pylist() if isinstance(keys, pa.Array) else keys.tolist()
        return json.dumps(values)

    def in_keys(self, column: str, placeholder: str) -> str:
        return f"{column} IN (SELECT value FROM json_each({placeholder}))"

    def shard_predicate(self, column: str, key_is_int: bool | None, n: int, shard: int) -> str:
        mod = f"((({column}) % {n}) + {n}) % {n}"
        hashed = f"((tfd_hash({column}) % {n}) + {n}) % {n}"
        return f"(CASE WHEN typeof({column}) = 'integer' THEN {mod} ELSE {hashed} END) = {shard}"


def _stable_hash(value: Any) -> int:
    """The same on every process and run (Python's ``hash`` of a str is salted per process)."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return zlib.crc32(data)


_Typing = tuple[Sequence[str], str | None] | None  # (numeric columns, key column) for SQLite


def _rows_to_arrow(
    names: list[str],
    rows: list[tuple[Any, ...]],
    typing: _Typing,
    types: dict[str, pa.DataType] | None = None,
) -> pa.Table:
    """SQLite rows -> Arrow. SQLite types values per row, so one column can mix text and numbers:
    in a numeric (feature/target) column that is a DataError naming the row's key; elsewhere the
    column becomes text. ``types`` remembers each column's type from earlier batches (building
    with a known type is several times faster than inferring it)."""
    numeric, key = typing or ((), None)
    if not rows:
        return pa.table({n: pa.array([], pa.null()) for n in names})
    cols = list(zip(*rows))
    arrays = []
    for name, values in zip(names, cols):
        known = types.get(name) if types is not None else None
        if known is not None:
            try:
                arrays.append(pa.array(values, type=known))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass  # this batch differs: infer again
        try:
            arr = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = _mixed_column(name, values, numeric, key, names, rows)
        if types is not None and not pa.types.is_null(arr.type):
            types[name] = arr.type
        arrays.append(arr)
    return pa.table(arrays, names=names)


def _mixed_column(
    name: str,
    values: tuple[Any, ...],
    numeric: Sequence[str],
    key: str | None,
    names: list[str],
    rows: list[tuple[Any, ...]],
) -> pa.Array:
    if name in numeric:
        bad = next(
            i for i, v in enumerate(values) if v is not None and not isinstance(v, int | float)
        )
        row = f"row {bad} of the batch"
        if key is not None and key in names:
            row = f"the row with {key}={rows[bad][names.index(key)]!r}"
        raise _MixedTypes(f"feature column {name!r} has non-numeric value {values[bad]!r} at {row}")
    return pa.array([None if v is None else str(v) for v in values], pa.string())


class _MixedTypes(Exception):
    """Raised inside a backend call; re-raised as a DataError naming the source."""


def _backend(db: Database) -> _Backend:
    return _Postgres(db) if db.backend == "postgresql" else _SQLite(db)


# --------------------------------------------------------------------------- pins and readers


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
        if not _SNAPSHOT_ID.match(snapshot):
            raise ConfigError(f"{snapshot!r} is not a PostgreSQL snapshot id")
        be.execute(self.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            be.execute(self.conn, f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        except Exception as exc:
            with contextlib.suppress(Exception):
                be.execute(self.conn, "ROLLBACK")
            if getattr(exc, "sqlstate", "") == "22023":
                raise SourceChangedError(_SNAPSHOT_GONE.format(where=where)) from None
            raise _translate(exc, be.db, None) from None
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


# --------------------------------------------------------------------------- locating rows


@dataclass(frozen=True)
class _KeyLocator(RowLocator):
    """Names the row of a batch by its key even when the key column is not in the batch."""

    key_name: str = ""
    keys: Any = None

    def describe(self, table: pa.Table, i: int) -> str:
        k = self.keys[i]
        k = k.as_py() if isinstance(k, pa.Scalar) else k.item() if hasattr(k, "item") else k
        return f"the row with {self.key_name}={k!r} of {self.source}"


# --------------------------------------------------------------------------- common setup


def _check_names(
    available: Sequence[str], wanted: Sequence[str], where: str, what: str = "column"
) -> None:
    seen: set[str] = set()
    for name in available:
        if name in seen:
            raise ConfigError(
                f"{where} returns two columns named {name!r}; give one of them an alias (AS ...)"
            )
        seen.add(name)
    for name in wanted:
        if name not in seen:
            raise NotFoundError(
                f"{what} {name!r} is not in {where}; available columns: {sorted(seen)}"
            )


def _column_list(columns: Sequence[str] | str | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    cols = [str(c) for c in columns]
    if not cols:
        raise ConfigError("columns must name at least one column (or be None for all)")
    return cols


class _SQLCommon:
    """Configuration shared by SQLDataset and SQLStream (all picklable)."""

    db: Database
    src: SqlSource
    key: str | None
    columns: list[str] | None

    def _setup(
        self,
        url: Any,
        table: str | None,
        query: str | None,
        key: str | None,
        columns: Sequence[str] | str | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        self.db, url_opts = parse_url(url)
        if url_opts:
            raise ConfigError(
                f"URL options {sorted(url_opts)} are read by {type(self).__name__}.from_url() "
                "(or tfd.open()); pass them as arguments here"
            )
        self.src = SqlSource.make(self.db.backend, table, query, params)
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigError(f"key must be a column name, got {key!r}")
        self.key = key
        self.columns = _column_list(columns)
        if self.db.backend == "postgresql":
            require("adbc_driver_postgresql.dbapi", "postgres", "reading PostgreSQL")

    def _backend(self) -> _Backend:
        return _backend(self.db)

    def _needed(self) -> list[str]:
        """Columns to select: the requested ones, features, target and the key."""
        spec = self.spec  # type: ignore[attr-defined]
        cols = list(self.columns) if self.columns is not None else []
        for c in [*spec.needed_columns(), *([self.key] if self.key else [])]:
            if c not in cols:
                cols.append(c)
        return cols

    def _select_list(self) -> str:
        if self.columns is None:
            return "tfd_src.*"
        return ", ".join(f"tfd_src.{self.src.quote(c)}" for c in self._needed())

    def _validate(self, names: Sequence[str]) -> None:
        where = f"{self.src.describe()} of {self.db.safe}"
        _check_names(names, [self.key] if self.key else [], where, "key column")
        _check_names(names, self.columns or [], where)
        self.spec.check_columns(names, where)  # type: ignore[attr-defined]

    def _visible(self, t: pa.Table) -> pa.Table:
        """Drop the columns fetched only for the key/features when the user asked for others."""
        if self.columns is None or self.spec.supervised:  # type: ignore[attr-defined]
            return t
        return t.select(self.columns)

    def _typing(self) -> _Typing:
        return (self.spec.needed_columns(), self.key)  # type: ignore[attr-defined]

    def describe(self) -> str:
        # asked for every batch (locators, checkpoints): built once per process
        text = self.__dict__.get("_describe")
        if text is None:
            key = f", key={self.key!r}" if self.key else ""
            text = self.__dict__["_describe"] = f"{self.src.describe()} of {self.db.safe}{key}"
        return text

    def _sql(self, name: str, build: Callable[[], tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
        """The SQL text of ``name`` (and the query's values), built once per process."""
        cache = self.__dict__.setdefault("_sql_cache", {})
        if name not in cache:
            cache[name] = build()
        return cache[name]  # type: ignore[no-any-return]


def _mixed(exc: _MixedTypes, where: str) -> DataError:
    return DataError(f"{exc} of {where}")


class _MemoryReadProgress:
    """Progress of reading a whole result into memory: an INFO line on the ``tensorfeed.sql``
    logger at the start and the end (rows, seconds, rows/s), and a tqdm bar on stderr when the
    read has taken a couple of seconds and stderr is a terminal."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.rows, self.bar = total, what, 0, None

    def __enter__(self) -> _MemoryReadProgress:
        from tqdm import tqdm

        log.info("reading %s rows of %s into memory", f"{self.total:,}", self.what)
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=self.total,
            desc="reading into memory",
            unit="rows",
            unit_scale=True,
            disable=None,  # only on a terminal
            delay=2.0,
            leave=False,
        )
        return self

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if exc[0] is None:
            dt = time.perf_counter() - self.start
            log.info(
                "read %s rows of %s into memory in %.1f s (%s rows/s)",
                f"{self.rows:,}",
                self.what,
                dt,
                f"{self.rows / max(dt, 1e-9):,.0f}",
            )


# --------------------------------------------------------------------------- map-style


class SQLDataset(_SQLCommon, MapDataset):
    """A map-style dataset over a table or any SELECT with a unique ``key`` column.

    ``ds[i]`` is the row with the i-th smallest key, as a dict (or ``(x, y)`` with
    ``features``/``target``); ``ds.__getitems__(indices)`` is one query. On PostgreSQL every
    worker reads the snapshot the key index was built in; see docs/sql.md for SQLite.
    """

    def __init__(
        self,
        url: Any,
        table: str | None = None,
        query: str | None = None,
        key: str | None = None,
        columns: Sequence[str] | str | None = None,
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        keep_in_memory: bool | None = None,
    ) -> None:
        self._setup(url, table, query, key, columns, params)
        if keep_in_memory not in (None, True, False):
            raise ConfigError(f"keep_in_memory must be None, True or False, got {keep_in_memory!r}")
        self.keep_in_memory = keep_in_memory
        if self.key is None:
            raise ConfigError(
                "SQLDataset needs key= (a column unique in the result) to give every row a "
                "stable index; use SQLStream to read without one"
            )
        self.spec = make_spec(features, target, transform, target_transform)
        self._token = uuid.uuid4().hex
        self._owner_pid = os.getpid()
        self._conn_holder: dict[str, _Reader | None] = {"reader": None}
        self._snapshot: str | None = None
        self._keys: np.ndarray | pa.Array = np.empty(0, np.int64)
        self._row_ids: np.ndarray | None = None  # PostgreSQL tables: ctid of each row, packed
        self._build_index()
        weakref.finalize(self, _release_pin, self._token)
        weakref.finalize(self, _close_reader, self._conn_holder)

    @classmethod
    def from_url(cls, url: Any, **options: Any) -> SQLDataset:
        """``SQLDataset.from_url("postgresql://.../db?table=orders&key=order_id")``."""
        _, url_opts = parse_url(url)
        opts = _url_options(url_opts, options)
        for k in _STREAM_INT_OPTIONS:
            opts.pop(k, None)
        clean = _strip_options(url, url_opts)
        return cls(clean, **opts)

    # -- key index ------------------------------------------------------------------------
    def _index_sql(self, with_row_ids: bool) -> tuple[str, list[Any]]:
        frm, params = self.src.from_clause()
        qk = f"tfd_src.{self.src.quote(self.key or '')}"
        row_id = ", tfd_src.ctid" if with_row_ids else ""
        return f"SELECT {qk}{row_id} FROM {frm} ORDER BY 1", params

    def _probe_sql(self) -> tuple[str, list[Any]]:
        frm, params = self.src.from_clause()
        return f"SELECT tfd_src.* FROM {frm} LIMIT 0", params

    def _build_index(self) -> None:
        be = self._backend()
        conn = be.connect()
        snapshot, keep = None, False
        try:
            if isinstance(be, _Postgres):
                be.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snapshot = str(be.scalar(conn, "SELECT pg_export_snapshot()"))
            self._validate(be.schema(conn, *self._probe_sql()))
            by_row = isinstance(be, _Postgres) and self._is_heap_table(be, conn)
            index = be.table(conn, *self._index_sql(by_row))
            keys = self._compact_keys(index.column(0))
            row_ids = _packed_tids(index.column(1)) if by_row else None
            if isinstance(be, _Postgres):
                old = _PINS.pop(self._token, None)
                _PINS[self._token] = _Pin(be, conn, snapshot or "")
                keep = True
                if old is not None:
                    old.release()
        except Exception as exc:
            raise _translate(exc, self.db, self.src, lambda n: _show_setting(be, conn, n)) from None
        finally:
            if not keep:
                be.close(conn)
        self._keys, self._row_ids, self._snapshot = keys, row_ids, snapshot
        self.__dict__.pop("_sql_cache", None)  # the fetch SQL depends on whether ctids exist
        self.__dict__.pop("_mem", None)  # rows kept in memory belong to the old view

    def _is_heap_table(self, be: _Postgres, conn: Any) -> bool:
        """A plain table or materialised view: its rows can be fetched by physical location.

        NOTE: inside the pinned snapshot a row's ``ctid`` is stable: the row version the snapshot
        sees cannot be vacuumed away while the snapshot is held, and the share lock held by the
        pin keeps out ``VACUUM FULL``/``CLUSTER``, which move rows. A TID scan of the batch's
        ctids then costs about a third of an index probe per key."""
        if self.src.table is None:
            return False
        t = be.table(
            conn,
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
            [self.src.quote(self.src.table)],
        )
        return t.num_rows == 1 and t.column(0)[0].as_py() in ("r", "m")

    def _compact_keys(self, col: pa.ChunkedArray) -> np.ndarray | pa.Array:
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        where = f"{self.src.describe()} of {self.db.safe}"
        if arr.null_count:
            raise DataError(
                f"key column {self.key!r} of {where} has NULL values; keys must be unique"
            )
        if pa.types.is_null(arr.type):  # an empty SQLite result
            return np.empty(0, np.int64)
        if pa.types.is_integer(arr.type):
            keys = arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if dup.size:
                raise self._duplicate(keys[dup[0]].item(), where)
            return keys
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.large_string())
            if len(arr) > 1 and pc.count_distinct(arr).as_py() != len(arr):
                counts = pc.value_counts(arr)
                dup_at = pc.index(pc.greater(counts.field("counts"), 1), True).as_py()
                raise self._duplicate(counts.field("values")[dup_at].as_py(), where)
            return arr
        raise ConfigError(
            f"key column {self.key!r} of {where} is {arr.type}; a key must be an integer or text "
            "column (cast it in the query, e.g. id::text AS key)"
        )

    def _duplicate(self, value: Any, where: str) -> DataError:
        return DataError(
            f"key column {self.key!r} is not unique in {where}: {value!r} appears more than once "
            "(a key must identify exactly one row)"
        )

    def refresh(self) -> None:
        """Pick up changes for the next epoch: PostgreSQL exports a new snapshot, both databases
        rebuild the key index (``len`` may change). Call it in the process that built the dataset,
        between epochs; workers started afterwards (``persistent_workers=False``) read the new
        view."""
        if os.getpid() != self._owner_pid:
            raise ConfigError(
                "refresh() must be called in the process that built the dataset, not in a worker"
            )
        self._build_index()

    def close(self) -> None:
        """Release this process's connection and, in the process that built the dataset, the
        pinned snapshot (readers that have not yet imported it then raise SourceChangedError)."""
        ahead = self.__dict__.get("_ahead")
        if ahead is not None and ahead.get("pid") == os.getpid() and ahead["pool"] is not None:
            ahead["job"] = None
            ahead["pool"].shutdown(wait=True)  # a fetch ahead in flight finishes first
            ahead["pool"] = None
        _close_reader(self._conn_holder)
        _release_pin(self._token)

    # -- pickling -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_conn_holder"] = {"reader": None}  # connections never cross processes
        state.pop("_ahead", None)  # nor threads and fetched-ahead batches
        state.pop("_mem", None)  # nor rows kept in memory (a fork child shares them instead)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        weakref.finalize(self, _close_reader, self._conn_holder)

    # -- reading --------------------------------------------------------------------------
    def _reader(self) -> _Reader:
        holder = self._conn_holder
        r = holder["reader"]
        if r is not None and r.pid != os.getpid():  # inherited through fork: not ours
            _ABANDONED.append(r)
            r = holder["reader"] = None
        if r is None:
            try:
                r = _Reader(self._backend())
            except Exception as exc:
                raise _translate(exc, self.db, self.src) from None
            holder["reader"] = r
        return r

    def _num_rows(self) -> int:
        return len(self._keys)

    def key_index(self) -> np.ndarray | pa.Array:
        """The key of every row, in index order (numpy for integer keys, Arrow for text)."""
        return self._keys

    def _keys_at(self, indices: np.ndarray) -> np.ndarray | pa.Array:
        if isinstance(self._keys, pa.Array):
            return self._keys.take(pa.array(indices))
        return self._keys[indices]

    def _fetch_sql(self) -> tuple[str, list[Any]]:
        return self._sql("fetch", self._build_fetch_sql)

    def _build_fetch_sql(self) -> tuple[str, list[Any]]:
        frm, params = self.src.from_clause()
        be = self._backend()
        ph = self.src.placeholder(len(params))
        if self._row_ids is not None:  # see _is_heap_table; bound as text "(block,offset)"
            where = f"tfd_src.ctid = ANY(CAST({ph} AS text[])::tid[])"
        else:
            where = be.in_keys(f"tfd_src.{self.src.quote(self.key or '')}", ph)
        return f"SELECT {self._select_list()} FROM {frm} WHERE {where}", params

    # NOTE [ Fetching the next batch ahead ]
    # With num_workers=0, tfd.DataLoader's batch sampler tells the dataset which indices come
    # next (prefetch_hint). When a batch has been fetched, the hinted one is queried on a
    # background thread (the driver waits for the server without the GIL), so the next round
    # trip overlaps the conversion and the training step. A fetched-ahead table is used only for
    # exactly the indices it was fetched for, through the same reader (same snapshot), so what
    # a batch contains never depends on the hint. Nothing of this crosses into another process.
    def prefetch_hint(self, indices: np.ndarray) -> None:
        ahead = self._ahead_state()
        ahead["hint"] = np.asarray(indices)

    def _ahead_state(self) -> dict[str, Any]:
        ahead = self.__dict__.get("_ahead")
        if ahead is None or ahead.get("pid") != os.getpid():
            ahead = self.__dict__["_ahead"] = {
                "pid": os.getpid(),
                "pool": None,
                "hint": None,
                "job": None,
            }
        return ahead

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        kept = self._kept_rows()
        if kept is not None:
            return self._visible(kept.take(indices))
        ahead = self._ahead_state()
        job, ahead["job"] = ahead["job"], None
        table = None
        if job is not None:
            done_for, future = job
            try:
                result = future.result()
            except Exception:  # fetched again below, where the error is raised and named
                result = None
            if np.array_equal(done_for, indices):
                table = result
        if table is None:
            table = self._fetch_now(indices)
        hint, ahead["hint"] = ahead["hint"], None
        if hint is not None and len(hint):
            if ahead["pool"] is None:
                from concurrent.futures import ThreadPoolExecutor

                ahead["pool"] = ThreadPoolExecutor(1, thread_name_prefix="tensorfeed-sql-ahead")
            ahead["job"] = (hint, ahead["pool"].submit(self._fetch_now, hint))
        return table

    def _fetch_now(self, indices: np.ndarray) -> pa.Table:
        wanted = self._keys_at(indices)
        if len(wanted) == 0:
            return self._visible(self._empty())
        if _is_run(indices):  # a sequential loader, a cache being filled: a key range scan
            sql, params = self._range_sql()
            ends = self._keys_at(indices[[0, -1]])
            lo, hi = ends.to_pylist() if isinstance(ends, pa.Array) else ends.tolist()
            table = self._run_locked(sql, [*params, lo, hi], self._typing())
        else:
            sql, params = self._fetch_sql()
            ids = wanted if self._row_ids is None else _tid_texts(self._row_ids[indices])
            table = self._run_locked(sql, [*params, self._backend_keys_param(ids)], self._typing())
        return self._visible(self._reorder(table, wanted))

    # NOTE [ Rows kept in memory ]
    # A dataset that fits in memory is fastest read once, in one sequential statement (COPY on
    # PostgreSQL), and then gathered from RAM: every later batch and epoch costs no round trip.
    # keep_in_memory=None ("auto") does that when the rows are estimated (from a 1,000-row
    # sample) to take at most KEEP_IN_MEMORY_AUTO_BYTES, in the process that built the dataset,
    # at its first batch; tfd.DataLoader also loads them there before it forks workers, which
    # then share the pages (Arrow buffers: no copy-on-read growth). True always keeps them (each
    # process that reads loads its own copy if it did not inherit one); False never does.
    # The rows are read inside the pinned snapshot on PostgreSQL, so they are exactly what
    # per-batch queries would return. On SQLite they are the rows as they were at that first
    # read (one statement: a consistent copy), until refresh().
    def _kept_rows(self) -> _Gather | None:
        mem = self.__dict__.get("_mem")
        if mem is None:
            mem = self.__dict__["_mem"] = {"rows": None, "decided": False}
        if mem["rows"] is not None or mem["decided"]:
            return mem["rows"]  # type: ignore[no-any-return]
        if self.keep_in_memory is False:
            mem["decided"] = True
            return None
        if self.keep_in_memory is None:
            if os.getpid() != self._owner_pid:
                return None  # a worker that did not inherit the rows: one query per batch
            if self._estimated_bytes() > _auto_keep_budget():
                mem["decided"] = True
                return None
        mem["rows"] = _Gather(self._read_all_rows())
        mem["decided"] = True
        _close_reader(self._conn_holder)  # every batch is served from memory from now on
        return mem["rows"]  # type: ignore[no-any-return]

    def _before_workers(self) -> None:
        """Called by tfd.DataLoader before it forks workers: load kept rows here, once, so the
        workers share them instead of each querying (or loading) on its own. The connection
        that read them (or the size sample) is closed before the fork: workers open their own."""
        if os.getpid() == self._owner_pid:
            self._kept_rows()
            _close_reader(self._conn_holder)

    @property
    def in_memory(self) -> bool:
        """Whether this process serves batches from rows kept in memory (see keep_in_memory)."""
        mem = self.__dict__.get("_mem")
        return bool(mem and mem["rows"] is not None)

    def _estimated_bytes(self) -> float:
        if len(self) == 0:
            return 0.0
        frm, params = self.src.from_clause()
        sample = self._run_locked(
            f"SELECT {self._select_list()} FROM {frm} LIMIT {_SIZE_SAMPLE_ROWS}",
            params,
            self._typing(),
        )
        return sample.nbytes / max(1, sample.num_rows) * len(self)

    def _read_all_rows(self) -> pa.Table:
        frm, params = self.src.from_clause()
        sql = f"SELECT {self._select_list()} FROM {frm}"
        with _MemoryReadProgress(len(self), self.describe()) as progress:
            table = self._run_locked(sql, params, self._typing(), progress.update)
        return _without_owned(self._reorder(table, self._keys).combine_chunks())

    def _range_sql(self) -> tuple[str, list[Any]]:
        return self._sql("range", self._build_range_sql)

    def _build_range_sql(self) -> tuple[str, list[Any]]:
        frm, params = self.src.from_clause()
        qk = f"tfd_src.{self.src.quote(self.key or '')}"
        lo, hi = self.src.placeholder(len(params)), self.src.placeholder(len(params) + 1)
        return (
            f"SELECT {self._select_list()} FROM {frm} WHERE {qk} >= {lo} AND {qk} <= {hi}",
            params,
        )

    def _empty(self) -> pa.Table:
        return pa.table({c: pa.array([], pa.null()) for c in self._needed()})

    def _backend_keys_param(self, wanted: np.ndarray | pa.Array) -> Any:
        return self._backend().keys_param(wanted)

    def _reorder(
        self, table: pa.Table, wanted: np.ndarray | pa.Array, key_col: str | None = None
    ) -> pa.Table:
        """Rows in the order asked (the database returns them in its own order)."""
        want = wanted if isinstance(wanted, pa.Array) else pa.array(wanted)
        got = table.column(key_col or self.key)
        if got.type != want.type:
            got = got.cast(want.type)
        pos = pc.index_in(want, value_set=got)
        if pos.null_count:
            missing = want[pc.index(pc.is_null(pos), True).as_py()].as_py()
            raise DataError(
                f"the row with {self.key}={missing!r} is no longer in {self.describe()}: it was "
                "deleted after the dataset's key index was built (SQLite has no snapshot to pin; "
                "call refresh() between epochs to pick up deletions)"
            )
        return table.take(pos)

    def _locator(self, indices: np.ndarray) -> RowLocator:
        return _KeyLocator(
            self.describe(), key_name=self.key or "", keys=self._keys_at(np.asarray(indices))
        )

    def column(self, name: str) -> np.ndarray:
        """One column for every row, in index order (one ordered query)."""
        kept = self.__dict__.get("_mem", {}).get("rows")
        if kept is not None and name in kept.schema.names:  # already in index order
            return pa.Table.from_batches(kept.batches).column(name).to_numpy(zero_copy_only=False)
        _check_names(self._all_names(), [name], self.describe())
        frm, params = self.src.from_clause()
        qk = f"tfd_src.{self.src.quote(self.key or '')}"
        sql = f"SELECT {qk} AS tfd_key, tfd_src.{self.src.quote(name)} AS tfd_value FROM {frm}"
        t = self._run_locked(sql, params, None)
        return (
            self._reorder(t, self._keys, "tfd_key")
            .column("tfd_value")
            .to_numpy(zero_copy_only=False)
        )

    def _run_locked(
        self,
        sql: str,
        params: list[Any],
        typing: _Typing,
        on_rows: Callable[[int], Any] | None = None,
    ) -> pa.Table:
        r = self._reader()
        with r.lock:
            try:
                r.enter(self._snapshot, self.describe())
                return r.table(sql, params, typing, on_rows)
            except _MixedTypes as exc:
                raise _mixed(exc, self.describe()) from None
            except TensorfeedError as exc:
                if isinstance(exc, ConnectionLostError):  # from enter(): a retry reconnects
                    _close_reader(self._conn_holder)
                raise
            except Exception as exc:
                r.reset()
                err = _translate(exc, self.db, self.src, lambda n: r.setting(n))
                if isinstance(err, ConnectionLostError):  # a retry reconnects
                    _close_reader(self._conn_holder)
                raise err from None

    def _all_names(self) -> list[str]:
        return self._run_locked(*self._probe_sql(), None).column_names

    def fingerprint(self) -> str:
        params = _digest([repr(v) for v in self.src.params or ()])
        return _digest(["SQLDataset", self.describe(), self.columns, params, len(self)])


def _packed_tids(col: pa.ChunkedArray) -> np.ndarray:
    """PostgreSQL ``tid`` values (6 bytes, big-endian block then offset) -> ``block << 16 | off``."""
    arr = col.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    if arr.null_count or not np.all(np.diff(offsets) == 6):
        raise DataError("unexpected ctid values from PostgreSQL")
    raw = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    b = raw.reshape(-1, 6).astype(np.int64)
    block = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
    return (block << 16) | (b[:, 4] << 8) | b[:, 5]


def _tid_texts(packed: np.ndarray) -> pa.Array:
    """Packed ctids -> their text form ``(block,offset)``, which PostgreSQL casts to ``tid``."""
    blocks = pa.array(packed >> 16).cast(pa.string())
    offsets = pa.array(packed & 0xFFFF).cast(pa.string())
    # vectorised: a Python f-string per row was a quarter of a batch's client-side time
    return pc.binary_join_element_wise("(", blocks, ",", offsets, ")", "")


def _is_run(indices: np.ndarray) -> bool:
    """``indices`` are i, i+1, ..., i+n-1 (n >= 2): the keys between two bounds, no others."""
    n = len(indices)
    return (
        n >= 2
        and int(indices[-1]) - int(indices[0]) == n - 1
        and bool(np.all(np.diff(indices) == 1))
    )


def _strip_options(url: Any, options: Mapping[str, str]) -> str:
    return _render(_make_url(url).difference_update_query(list(options)), secret=True)


# --------------------------------------------------------------------------- stream


class SQLStream(_SQLCommon, StreamDataset):
    """An iterable dataset streaming a table or SELECT in Arrow batches with bounded memory.

    Rows are split across DataLoader workers and DDP ranks by ``key`` (``key mod n`` for integer
    keys, a stable hash otherwise), so each row is delivered exactly once per epoch; within a
    shard rows come in ``key`` order. Without ``key`` the stream cannot be split: it runs as
    one shard (``num_workers=0``, one rank) and raises otherwise. Nothing connects until the
    stream is iterated.
    """

    def __init__(
        self,
        url: Any,
        table: str | None = None,
        query: str | None = None,
        key: str | None = None,
        columns: Sequence[str] | str | None = None,
        params: Mapping[str, Any] | None = None,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        chunk_rows: int = 65536,
    ) -> None:
        self._setup(url, table, query, key, columns, params)
        self.spec = make_spec(features, target, None, None)
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be a non-negative int, got {shuffle_buffer!r}")
        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
        self.shuffle_buffer, self.seed, self.chunk_rows = shuffle_buffer, int(seed), chunk_rows
        self._idle: dict[str, Any] = {}  # {"conn", "pid"}: kept between epochs, never pickled
        weakref.finalize(self, _close_idle, self._idle, self._backend())

    @classmethod
    def from_url(cls, url: Any, **options: Any) -> SQLStream:
        """``SQLStream.from_url("sqlite:///shop.db?table=orders&key=order_id&shuffle_buffer=8192")``."""
        _, url_opts = parse_url(url)
        opts = _url_options(url_opts, options)
        return cls(_strip_options(url, url_opts), **opts)

    def _key_is_int(self, be: _Backend, conn: Any, frm: str, params: list[Any]) -> bool | None:
        if not isinstance(be, _Postgres):
            return None  # decided per row in SQL (typeof)
        qk = f"tfd_src.{self.src.quote(self.key or '')}"
        t = be.table(conn, f"SELECT {qk} FROM {frm} LIMIT 0", params)
        return bool(pa.types.is_integer(t.schema.field(0).type))

    def _iter_tables(self, world: World, epoch: int, position: int) -> Iterator[pa.Table]:
        if world.num_shards > 1 and self.key is None:
            raise ConfigError(
                f"SQLStream over {self.src.describe()} has no key= and cannot be split across "
                f"{world.num_shards} workers/ranks without duplicating rows; give key= (a unique "
                "column) or read it with num_workers=0 on one rank"
            )
        be = self._backend()
        pid = os.getpid()
        conn = self._idle_connection(be)
        done = False
        try:
            yield from self._shard_tables(be, conn, world, position)
            done = True
        finally:
            if os.getpid() != pid:
                _ABANDONED.append(conn)
            elif done and self._idle.get("conn") is None:  # kept for the next epoch
                self._idle.update(conn=conn, pid=pid)
            else:  # stopped mid-statement (or another iteration kept one): not reusable
                be.close(conn)

    def _idle_connection(self, be: _Backend) -> Any:
        """This process's idle connection from a finished epoch, or a new one."""
        idle = self._idle
        conn, owner = idle.get("conn"), idle.get("pid")
        idle.update(conn=None, pid=None)
        if conn is not None and owner == os.getpid():
            return conn
        if conn is not None:  # inherited through fork
            _ABANDONED.append(conn)
        try:
            return be.connect()
        except Exception as exc:
            raise _translate(exc, self.db, self.src) from None

    def close(self) -> None:
        """Close the connection this process keeps between epochs (also done when the stream is
        garbage-collected)."""
        _close_idle(self._idle, self._backend())

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_idle"] = {}  # connections never cross processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        weakref.finalize(self, _close_idle, self._idle, self._backend())

    def _shard_tables(
        self, be: _Backend, conn: Any, world: World, position: int
    ) -> Iterator[pa.Table]:
        frm, params = self.src.from_clause()
        where = f"{self.src.describe()} of {self.db.safe}"
        try:
            names = be.schema(conn, f"SELECT tfd_src.* FROM {frm} LIMIT 0", params)
            self._validate(names)
            sql = f"SELECT {self._select_list()} FROM {frm}"
            if self.key is not None:
                qk = f"tfd_src.{self.src.quote(self.key)}"
                if world.num_shards > 1:
                    is_int = self._key_is_int(be, conn, frm, params)
                    sql += " WHERE " + be.shard_predicate(qk, is_int, world.num_shards, world.shard)
                sql += f" ORDER BY {qk}"
            if position:
                sql += f"{' LIMIT -1' if isinstance(be, _SQLite) else ''} OFFSET {int(position)}"
            for t in be.stream(conn, sql, params, self.chunk_rows, self._typing()):
                yield self._visible(t)
        except _MixedTypes as exc:
            raise _mixed(exc, where) from None
        except (TensorfeedError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc, self.db, self.src, lambda n: _show_setting(be, conn, n)) from None

    def __repr__(self) -> str:
        return f"SQLStream({self.describe()})"

    def _locator(self, table: pa.Table) -> RowLocator:
        if self.key is not None and self.key in table.column_names:
            return RowLocator(self.describe(), key=self.key)
        return RowLocator(self.describe())
