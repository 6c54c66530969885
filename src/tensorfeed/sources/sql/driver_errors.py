"""Driver errors -> tensorfeed errors that name the culprit and never the password.

Streams read each shard with ONE statement (PostgreSQL: one ``COPY``; with ``params=``, one
``DECLARE ... CURSOR`` in a ``REPEATABLE READ`` transaction; SQLite: one ``SELECT`` stepped in
chunks), so a shard is one consistent snapshot. Shards are ``key mod n`` for integer keys and a
stable hash of the key otherwise, pushed into the WHERE clause; order within a shard is
``ORDER BY key``, and a resumed shard skips with ``OFFSET``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ...errors import (
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
from .query import SqlSource
from .url import Database


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


_SNAPSHOT_GONE = (
    "the PostgreSQL snapshot that {where} was pinned to no longer exists: the dataset that "
    "exported it was closed or garbage-collected, the process that built it ended, or the "
    "server ended its transaction (idle_in_transaction_session_timeout). Keep the dataset "
    "alive while its loaders run, or build it again (or call refresh() in the process that "
    "built it)"
)
