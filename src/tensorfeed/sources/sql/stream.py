"""``SQLStream``: a table or SELECT streamed in Arrow batches, sharded across workers and ranks.

NOTE [ One snapshot for a SQL stream's epoch ]
Each shard reads its rows with one statement, so a shard is consistent in itself; but shards
start at different moments (workers, ranks on other nodes, a shard resumed later), and on their
own they would see different commits. So on PostgreSQL ``set_epoch`` (which ``tfd.DataLoader``
calls in the main process when an epoch starts or a checkpoint loads) exports a snapshot from a
``REPEATABLE READ`` transaction that touches no table (so it holds no lock: a ``DROP TABLE``
never waits for it) and holds it until the next epoch or ``close()``. Under ``torch.distributed``
rank 0's snapshot is broadcast (NOTE [ One view of the source for the job ] in ``job_view.py``).
Every shard of that epoch imports it (``SET TRANSACTION SNAPSHOT``) before its statement, so the
epoch reads one state of the database whatever writers do. The shard's transaction ends with its
read. A shard of an epoch without a pin (a plain ``torch`` DataLoader, a persistent worker's later
epoch) reads as of its own statement, as before. SQLite has no exportable snapshot: each shard's
statement is its own view there.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from ... import stream_splits
from ...columns import RowLocator, make_spec
from ...dataset import StreamDataset
from ...errors import ConfigError, TensorfeedError
from ...sampling import World
from . import buckets, keyset
from .backend import _Backend, _MixedTypes
from .config import _mixed, _SQLCommon
from .driver_errors import _translate
from .postgres import _Postgres, _show_setting
from .snapshot import _ABANDONED, _PINS, _close_idle, _Pin, _release_pin, enter_snapshot
from .sqlite import _SQLite
from .url import _strip_options, _url_options, parse_url


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
        self._token = uuid.uuid4().hex
        self._snapshot: tuple[int, str] | None = None  # (epoch, PostgreSQL snapshot id)
        self._counts: tuple[int, dict[int, int]] | None = None  # (epoch, rows per bucket)
        self._then: tuple[int, dict[int, int]] | None = None  # a loaded checkpoint's counts
        weakref.finalize(self, _close_idle, self._idle, self._backend())
        weakref.finalize(self, _release_pin, self._token)

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

    # -- positions: keyset and key buckets (NOTE [ Resuming a SQL stream by key ] in keyset.py)
    def _keyset(self) -> bool:
        return self.key is not None and self.shuffle_buffer == 0

    def _start_position(self) -> Any:
        return keyset.start() if self._keyset() else 0

    def _advance(self, position: Any, table: pa.Table) -> Any:
        if self._keyset():
            return keyset.advance(position, table, self.key)
        return stream_splits.advance(position, table.num_rows)  # rows through the buffer

    def _visible(self, t: pa.Table) -> pa.Table:
        out = super()._visible(t)
        if self._keyset() and self.key not in out.column_names and self.key in t.column_names:
            out = out.append_column(self.key, t.column(self.key))
        return out

    def _check_position(self, position: Any) -> None:
        keyset.check(position, f"a checkpoint position of {self.describe()}")

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        if self.key is None:
            return super()._regroup(epoch, positions, num_shards)
        if self.shuffle_buffer > 0:
            return self._regroup_splits(epoch, positions, num_shards)
        return keyset.regroup(positions, num_shards, self.describe())

    # -- a shuffle buffer over key buckets (NOTE [ Shuffling a SQL stream by bucket ]) ---------
    def _splits_of(self, epoch: int, shard: int, num_shards: int) -> list[int] | None:
        if self.key is None:
            return None  # one shard, replayed
        return list(range(shard, keyset.BUCKETS, num_shards))

    def _split_rows(self, epoch: int, split: int) -> int:
        return self._bucket_counts(epoch).get(split, 0)

    def _read_splits(self, epoch: int, splits: list[int]) -> Iterator[pa.Table]:
        if not splits:  # every bucket of the shard was delivered
            return iter(())

        def tables(be: _Backend, conn: Any, in_snapshot: bool) -> Iterator[pa.Table]:
            frm, params = self.src.from_clause()
            bucket = self._bucket_sql(be, conn)
            sql = (
                f"SELECT {self._select_list()}, {bucket} AS {buckets.COLUMN} FROM {frm} "
                f"WHERE {bucket} IN ({', '.join(map(str, splits))}) "
                f"ORDER BY {bucket}, tfd_src.{self.src.quote(self.key or '')}"
            )
            got = be.stream(conn, sql, params, self.chunk_rows, self._typing(), in_snapshot)
            for t in buckets.per_bucket(got, splits, self.describe()):
                yield self._visible(t) if t.num_columns else t

        return self._guarded(epoch, tables)

    def _bucket_counts(self, epoch: int, fresh: bool = False) -> dict[int, int]:
        """Rows per key bucket (all in bucket 0 without a key) as of the epoch's snapshot: one
        GROUP BY, once per epoch; ``fresh``: count again (a resume compares today's rows)."""
        cached = self._counts
        if cached is not None and cached[0] == epoch and not fresh:
            return cached[1]

        def tables(be: _Backend, conn: Any, in_snapshot: bool) -> Iterator[pa.Table]:
            frm, params = self.src.from_clause()
            bucket = self._bucket_sql(be, conn)
            yield be.table(
                conn, f"SELECT {bucket} AS b, COUNT(*) AS n FROM {frm} GROUP BY 1", params
            )

        got = pa.concat_tables(list(self._guarded(epoch, tables, pinned=not fresh)))
        counts = dict(zip(got.column(0).to_pylist(), got.column(1).to_pylist(), strict=True))
        self._counts = (epoch, {int(b): int(n) for b, n in counts.items()})
        return self._counts[1]

    def _bucket_sql(self, be: _Backend, conn: Any) -> str:
        frm, params = self.src.from_clause()
        names = be.schema(conn, f"SELECT tfd_src.* FROM {frm} LIMIT 0", params)
        self._validate(names)
        if self.key is None:
            return "0"
        qk = f"tfd_src.{self.src.quote(self.key)}"
        return be.bucket(qk, self._key_is_int(be, conn, frm, params), keyset.BUCKETS)

    def _guarded(
        self, epoch: int, tables: Callable[..., Iterator[pa.Table]], pinned: bool = True
    ) -> Iterator[pa.Table]:
        """``tables`` through ``_statement``, with driver errors translated."""
        where = f"{self.src.describe()} of {self.db.safe}"

        def run(be: _Backend, conn: Any, in_snapshot: bool) -> Iterator[pa.Table]:
            try:
                yield from tables(be, conn, in_snapshot)
            except _MixedTypes as exc:
                raise _mixed(exc, where) from None
            except (TensorfeedError, GeneratorExit):
                raise
            except Exception as exc:
                raise _translate(exc, self.db, self.src) from None

        return self._statement(epoch, run, pinned)

    # -- a changed table (NOTE [ Shuffling a SQL stream by bucket ] in buckets.py) ------------
    def _checkpoint_state(self) -> dict[str, Any]:
        """The epoch's rows per key bucket: a resume over other rows is named, never mixed."""
        return {"epoch": self.epoch, "rows": buckets.as_list(self._bucket_counts(self.epoch))}

    def _restore_checkpoint_state(self, state: Any) -> None:
        """A shuffled or keyless stream's positions mean the checkpoint's rows: other counts are
        a SourceChangedError. A keyset stream's are compared in ``_check_resume``, where the
        loader says whether the epoch may go on by key (``on_change``)."""
        self._then = None
        if state is None:  # a checkpoint of an earlier tensorfeed: nothing to compare
            return
        epoch, then = buckets.parse_state(state, self.describe())
        if self._keyset():
            self._then = (epoch, then)
            return
        buckets.check_unchanged(then, self._bucket_counts(epoch, fresh=True), self.describe())

    @property
    def _continues_over_changes(self) -> bool:
        return self._keyset()  # on_change="continue": the keyset positions go on by key

    def _check_resume(
        self, positions: list[Any], continuing: bool = False
    ) -> dict[str, Any] | None:
        """A keyset stream's rows per bucket against today's: raise, or (``continuing``) go on
        after each bucket's last key delivered, returning what changed for
        ``loader.stats.source_changes``."""
        then, self._then = self._then, None
        if then is None:
            return None
        now = self._bucket_counts(then[0], fresh=True)
        if continuing:
            changed = buckets.changed(then[1], now)
            if not changed:
                return None
            return {
                "rows_then": sum(then[1].values()),
                "rows_now": sum(now.values()),
                "buckets_changed": len(changed),
            }
        buckets.check_unchanged(
            then[1],
            now,
            self.describe(),
            "on_change='continue' goes on after the last key delivered",
        )
        return None

    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        if world.num_shards > 1 and self.key is None:
            raise ConfigError(
                f"SQLStream over {self.src.describe()} has no key= and cannot be split across "
                f"{world.num_shards} workers/ranks without duplicating rows; give key= (a unique "
                "column) or read it with num_workers=0 on one rank"
            )
        self._check_position(position)
        return self._statement(
            epoch, lambda be, conn, snap: self._shard_tables(be, conn, world, position, snap)
        )

    def _statement(
        self, epoch: int, tables: Callable[..., Iterator[pa.Table]], pinned: bool = True
    ) -> Iterator[pa.Table]:
        """``tables(backend, connection, in_snapshot)`` on this process's connection, in the
        epoch's snapshot when one is pinned (and ``pinned``: False reads today's rows); the
        connection is kept for the next statement."""
        be = self._backend()
        pid = os.getpid()
        conn = self._idle_connection(be)
        done = False
        try:
            in_snapshot = pinned and self._enter_snapshot(be, conn, epoch)
            yield from tables(be, conn, in_snapshot)
            if in_snapshot and isinstance(be, _Postgres):
                be.execute(conn, "ROLLBACK")  # the read is done: hold nothing until the next
            done = True
        finally:
            if os.getpid() != pid:
                _ABANDONED.append(conn)
            elif done and self._idle.get("conn") is None:  # kept for the next epoch
                self._idle.update(conn=conn, pid=pid)
            else:  # stopped mid-statement (or another iteration kept one): not reusable
                be.close(conn)

    # -- one snapshot per epoch (NOTE [ One snapshot for a SQL stream's epoch ]) ---------------
    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        from torch.utils.data import get_worker_info

        be = self._backend()
        if not isinstance(be, _Postgres) or get_worker_info() is not None:
            return
        conn = None
        try:
            conn = be.connect()
            be.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = str(be.scalar(conn, "SELECT pg_export_snapshot()"))
        except Exception as exc:
            if conn is not None:
                be.close(conn)
            raise _translate(exc, self.db, self.src) from None
        old = _PINS.pop(self._token, None)
        _PINS[self._token] = _Pin(be, conn, snapshot)
        if old is not None:
            old.release()
        self._snapshot = (self.epoch, snapshot)

    def _job_view(self) -> tuple[int, str] | None:
        """The snapshot rank 0 pinned for the epoch (NOTE [ One view of the source for the job ])."""
        return self._snapshot

    def _adopt_job_view(self, view: tuple[int, str] | None) -> None:
        _release_pin(self._token)  # our shards import rank 0's snapshot instead of ours
        self._snapshot = view

    def _enter_snapshot(self, be: _Backend, conn: Any, epoch: int) -> bool:
        """Start this shard's transaction in the epoch's snapshot, if one is pinned for it."""
        pin = self._snapshot
        if pin is None or pin[0] != epoch or not isinstance(be, _Postgres):
            return False
        enter_snapshot(be, conn, pin[1], self.describe())
        return True

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
        """Close the connection this process keeps between epochs and release the epoch's
        snapshot (also done when the stream is garbage-collected)."""
        _close_idle(self._idle, self._backend())
        _release_pin(self._token)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_idle"] = {}  # connections never cross processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        weakref.finalize(self, _close_idle, self._idle, self._backend())

    def _shard_tables(
        self, be: _Backend, conn: Any, world: World, position: Any, in_snapshot: bool = False
    ) -> Iterator[pa.Table]:
        frm, params = self.src.from_clause()
        where = f"{self.src.describe()} of {self.db.safe}"
        try:
            names = be.schema(conn, f"SELECT tfd_src.* FROM {frm} LIMIT 0", params)
            self._validate(names)
            sql = f"SELECT {self._select_list()} FROM {frm}"
            offset = position if isinstance(position, int) else 0
            if self.key is not None:
                qk = f"tfd_src.{self.src.quote(self.key)}"
                where_parts = []
                resumed = isinstance(position, dict) and position.get("from")
                bucket = ""
                if world.num_shards > 1 or resumed:
                    is_int = self._key_is_int(be, conn, frm, params)
                    bucket = be.bucket(qk, is_int, keyset.BUCKETS)
                if world.num_shards > 1:
                    where_parts.append(f"{bucket} % {world.num_shards} = {world.shard}")
                where_parts += keyset.not_delivered(position, qk, bucket)
                if where_parts:
                    sql += " WHERE " + " AND ".join(f"({w})" for w in where_parts)
                sql += f" ORDER BY {qk}"
            if offset:
                sql += f"{' LIMIT -1' if isinstance(be, _SQLite) else ''} OFFSET {int(offset)}"
            tables = be.stream(conn, sql, params, self.chunk_rows, self._typing(), in_snapshot)
            for t in tables:
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
