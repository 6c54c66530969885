"""The contract of a database backend: the driver calls the SQL datasets make.

One module per database implements it (``postgres.py``, ``sqlite.py``); ``snapshot._backend``
picks one for a :class:`~tensorfeed.sources.sql.url.Database`. Connections are plain DB-API/ADBC
objects; a backend returns Arrow tables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .url import Database


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
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        chunk_rows: int,
        typing: _Typing,
        in_transaction: bool = False,
    ) -> Iterator[pa.Table]:
        """The rows of ``sql`` in tables of at most ``chunk_rows``; ``in_transaction``: ``conn``
        is inside a transaction already (a SQL stream's epoch snapshot)."""
        raise NotImplementedError

    def keys_param(self, keys: np.ndarray | pa.Array) -> Any:
        raise NotImplementedError

    def in_keys(self, column: str, placeholder: str) -> str:
        raise NotImplementedError

    def bucket(self, column: str, key_is_int: bool | None, buckets: int) -> str:
        """SQL for the key bucket of a row, in ``[0, buckets)``: the key mod ``buckets`` for an
        integer key, a stable hash of it otherwise (the same in every process and run)."""
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()


_Typing = tuple[Sequence[str], str | None] | None  # (numeric columns, key column) for SQLite


class _MixedTypes(Exception):
    """Raised inside a backend call; re-raised as a DataError naming the source."""
