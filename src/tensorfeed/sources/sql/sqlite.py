"""SQLite through the standard library's ``sqlite3``, read-only.

SQLite types values per row, so Arrow is built here, remembering each column's type from batch to
batch, and a stray text value in a numeric column is named by its row's key.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote as _urlquote

import numpy as np
import pyarrow as pa

from ...errors import ConnectionFailedError, NotFoundError
from .backend import _Backend, _MixedTypes, _Typing


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
        self,
        conn: Any,
        sql: str,
        params: list[Any],
        chunk_rows: int,
        typing: _Typing,
        in_transaction: bool = False,
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

    def bucket(self, column: str, key_is_int: bool | None, buckets: int) -> str:
        b = buckets
        mod = f"((({column}) % {b}) + {b}) % {b}"
        hashed = f"((tfd_hash({column}) % {b}) + {b}) % {b}"
        return f"(CASE WHEN typeof({column}) = 'integer' THEN {mod} ELSE {hashed} END)"


def _stable_hash(value: Any) -> int:
    """The same on every process and run (Python's ``hash`` of a str is salted per process)."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return zlib.crc32(data)


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
