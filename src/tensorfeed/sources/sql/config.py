"""What an SQL dataset reads, as picklable configuration shared by SQLDataset and SQLStream:
the database, the table or query, the key and columns, and the SELECT list built from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from ..._deps import require
from ...errors import ConfigError, DataError, NotFoundError
from .backend import _Backend, _MixedTypes, _Typing
from .query import SqlSource
from .snapshot import _backend
from .url import Database, parse_url


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
