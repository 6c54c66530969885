"""What to read, as SQL text: a table or a SELECT with named ``:params``, quoted by dialect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError


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
