"""Fixtures for the SQL tests: the same checks run against a SQLite file and a real PostgreSQL
server (``pg_url`` from tests/conftest.py: pgserver, or ``TENSORFEED_PG_URL``)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

N_ROWS = 2000


@dataclass
class DB:
    """A database to test against, with a plain writer connection of its own (not ours)."""

    kind: str
    url: str
    path: Path | None = None
    _conn: Any = field(default=None, repr=False)

    @property
    def ph(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def connect(self) -> Any:
        if self.kind == "sqlite":
            c = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            c.execute("PRAGMA journal_mode=WAL")
            return c
        psycopg = pytest.importorskip("psycopg")
        return psycopg.connect(self.url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn().execute(sql, params)
        try:
            return list(cur.fetchall())
        except Exception:  # statements without a result
            return []

    def settled(self, sql: str, expected: int, timeout: float = 10.0) -> int:
        """``sql``'s count once it equals ``expected`` (or after ``timeout``): a closed session
        leaves pg_stat_activity a moment after the client has let go of it."""
        deadline = time.monotonic() + timeout
        while True:
            got = int(self.execute(sql)[0][0])
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.kind == "sqlite":
            c = self.conn()
            c.execute("BEGIN")
            c.executemany(sql, rows)
            c.execute("COMMIT")
        else:
            with self.conn().cursor() as cur:
                cur.executemany(sql, rows)

    def make_items(self, n: int = N_ROWS, name: str | None = None) -> str:
        """Table ``name`` with id 0..n-1 (primary key), v = id / 2, label = id % 2, s = 's<id>'."""
        name = name or f"items_{uuid.uuid4().hex[:8]}"
        real = "REAL" if self.kind == "sqlite" else "DOUBLE PRECISION"
        self.execute(
            f'CREATE TABLE "{name}" (id BIGINT PRIMARY KEY, v {real}, label INTEGER, s TEXT)'
            if self.kind == "postgres"
            else f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, v REAL, label INTEGER, s TEXT)'
        )
        rows = [(i, i / 2, i % 2, f"s{i}") for i in range(n)]
        ph = self.ph
        self.executemany(f'INSERT INTO "{name}" VALUES ({ph}, {ph}, {ph}, {ph})', rows)
        return name

    def tables(self) -> set[str]:
        if self.kind == "sqlite":
            return {r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            r[0]
            for r in self.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DB]:
    path = tmp_path_factory.mktemp("sql") / "test.db"
    sqlite3.connect(path).close()
    db = DB("sqlite", f"sqlite:///{path}", path)
    yield db
    if db._conn is not None:
        db._conn.close()


@pytest.fixture(scope="session")
def pg_db(pg_url: str) -> Iterator[DB]:
    db = DB("postgres", pg_url)
    yield db
    if db._conn is not None:
        db._conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> DB:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")  # type: ignore[no-any-return]


@pytest.fixture
def items(db: DB) -> tuple[DB, str]:
    """A fresh 2,000-row table in ``db`` (a test may write to it)."""
    return db, db.make_items()
