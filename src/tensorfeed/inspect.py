"""``tensorfeed inspect URL``: the schema, row count and first rows of a source, as text.

SQL URLs are read directly (a table, a query, or, with neither, the list of tables); other URLs
are opened with ``tfd.open`` and described from their first rows. The password in a URL is never
part of the output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .errors import ConfigError

_MAX_CELL = 32


def inspect_url(url: str, table: str | None = None, query: str | None = None, rows: int = 5) -> str:
    """A text report: source, column names and types, row count and the first ``rows`` rows."""
    if rows < 0:
        raise ConfigError(f"rows must be >= 0, got {rows}")
    from .registry import scheme_of

    if scheme_of(url) in ("sqlite", "postgresql", "postgres"):
        return _inspect_sql(url, table, query, rows)
    return _inspect_other(url, table, query, rows)


def _inspect_sql(url: str, table: str | None, query: str | None, rows: int) -> str:
    from .sources.sql.driver_errors import _translate
    from .sources.sql.query import SqlSource
    from .sources.sql.snapshot import _backend
    from .sources.sql.url import parse_url

    db, options = parse_url(url)
    table = table if table is not None else options.get("table")
    query = query if query is not None else options.get("query")
    be = _backend(db)
    try:
        conn = be.connect()
    except Exception as exc:
        raise _translate(exc, db, None) from None
    try:
        if table is None and query is None:
            try:
                return _list_tables(db, be, conn)
            except Exception as exc:  # not a database file, no permission ...
                raise _translate(exc, db, None) from None
        src = SqlSource.make(db.backend, table, query, None)
        frm, params = src.from_clause()
        try:
            count = be.table(conn, f"SELECT count(*) AS n FROM {frm}", params).column(0)[0]
            # at least one row, so SQLite (typed per value) has something to infer types from
            head = be.table(conn, f"SELECT tfd_src.* FROM {frm} LIMIT {max(rows, 1)}", params)
        except Exception as exc:
            raise _translate(exc, db, src) from None
        declared = _declared_types(be, conn, table) if db.backend == "sqlite" and table else {}
        lines = [f"source: {src.describe()} of {db.safe}", f"rows: {count.as_py():,}", "columns:"]
        lines += _schema_lines(head.schema, declared)
        if rows:
            head = head.slice(0, rows)
            lines += [f"first {head.num_rows} rows:", *_table_lines(head)]
        return "\n".join(lines)
    finally:
        be.close(conn)


def _list_tables(db: Any, be: Any, conn: Any) -> str:
    if db.backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    names = be.table(conn, sql, []).column(0).to_pylist()
    lines = [f"source: {db.safe}", f"tables ({len(names)}):", *[f"  {n}" for n in names]]
    lines.append("give --table NAME or --query SELECT... to see a schema and rows")
    return "\n".join(lines)


def _declared_types(be: Any, conn: Any, table: str) -> dict[str, str]:
    t = be.table(conn, "SELECT name, type FROM pragma_table_info(?)", [table])
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist())) if t.num_rows else {}


def _schema_lines(schema: pa.Schema, declared: dict[str, str]) -> list[str]:
    width = max((len(f.name) for f in schema), default=0)
    out = []
    for f in schema:
        arrow = "(no rows to infer from)" if pa.types.is_null(f.type) else str(f.type)
        extra = f"  [declared {declared[f.name]}]" if declared.get(f.name) else ""
        out.append(f"  {f.name.ljust(width)}  {arrow}{extra}")
    return out


def _cell(v: Any) -> str:
    s = "NULL" if v is None else str(v)
    return s if len(s) <= _MAX_CELL else s[: _MAX_CELL - 3] + "..."


def _table_lines(t: pa.Table) -> list[str]:
    names = t.column_names
    rows = [[_cell(v) for v in r.values()] for r in t.to_pylist()]
    widths = [max([len(n)] + [len(r[j]) for r in rows]) for j, n in enumerate(names)]
    fmt = lambda cells: ("  " + " | ".join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()  # noqa: E731
    return [fmt(names), "  " + "-+-".join("-" * w for w in widths), *[fmt(r) for r in rows]]


def _inspect_other(url: str, table: str | None, query: str | None, rows: int) -> str:
    from .dataset import MapDataset, StreamDataset
    from .registry import open as open_url

    opts = {k: v for k, v in (("table", table), ("query", query)) if v is not None}
    ds = open_url(url, **opts)
    describe = ds.describe() if hasattr(ds, "describe") else type(ds).__name__
    if isinstance(ds, MapDataset):
        n = len(ds)
        head = ds._fetch(np.arange(min(rows, n)))
        count = f"{n:,}"
    elif isinstance(ds, StreamDataset):
        head = next((b.table for b in ds.iter_batches()), pa.table({}))
        head, count = head.slice(0, rows), "unknown (a stream)"
    else:
        raise ConfigError(f"cannot inspect {type(ds).__name__}")
    lines = [f"source: {describe}", f"rows: {count}", "columns:", *_schema_lines(head.schema, {})]
    if rows:
        lines += [f"first {head.num_rows} rows:", *_table_lines(head)]
    return "\n".join(lines)
