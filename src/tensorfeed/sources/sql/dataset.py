"""``SQLDataset``: a map-style dataset over a table or any SELECT with a unique key column.

``ds[i]`` is the row with the i-th smallest key; a batch is one query (``WHERE key = ANY($1)``,
or a TID scan over a PostgreSQL table, or one key-range scan for a run of indices), or no query at
all once the rows are kept in memory (NOTE [ Rows kept in memory ]). The key index is built in the
constructor, inside a pinned snapshot on PostgreSQL (NOTE [ SQL snapshots and worker connections ]
in ``snapshot.py``); batches are read through this process's ``_Reader``.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...cache import _Gather, _without_owned
from ...columns import RowLocator, make_spec
from ...dataset import MapDataset, _digest
from ...errors import ConfigError, ConnectionLostError, DataError, TensorfeedError
from . import changes
from .backend import _MixedTypes, _Typing
from .config import _check_names, _mixed, _SQLCommon
from .driver_errors import _translate
from .postgres import _Postgres, _show_setting
from .read_progress import _MemoryReadProgress
from .snapshot import _ABANDONED, _PINS, _close_reader, _Pin, _Reader, _release_pin
from .url import _STREAM_INT_OPTIONS, _strip_options, _url_options, parse_url

# SQLDataset(keep_in_memory=None) keeps the rows in RAM when they are estimated to take at most
# this much (see NOTE [ Rows kept in memory ]).
KEEP_IN_MEMORY_AUTO_BYTES = 1 << 30
_SIZE_SAMPLE_ROWS = 1000


def _auto_keep_budget() -> int:
    """KEEP_IN_MEMORY_AUTO_BYTES, or a quarter of the memory available now if that is less."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return KEEP_IN_MEMORY_AUTO_BYTES
    return int(min(KEEP_IN_MEMORY_AUTO_BYTES, available // 4))


@dataclass(frozen=True)
class _KeyLocator(RowLocator):
    """Names the row of a batch by its key even when the key column is not in the batch."""

    key_name: str = ""
    keys: Any = None

    def describe(self, table: pa.Table, i: int) -> str:
        k = self.keys[i]
        k = k.as_py() if isinstance(k, pa.Scalar) else k.item() if hasattr(k, "item") else k
        return f"the row with {self.key_name}={k!r} of {self.source}"


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
        self._set_index(keys, row_ids, snapshot)

    def _job_view(self) -> tuple[Any, Any, str | None]:
        """The keys and snapshot rank 0 pinned (NOTE [ One view of the source for the job ])."""
        return self._keys, self._row_ids, self._snapshot

    def _adopt_job_view(self, view: tuple[Any, Any, str | None]) -> None:
        _release_pin(self._token)  # our workers import rank 0's snapshot instead of ours
        self._set_index(*view)

    def _set_index(self, keys: Any, row_ids: Any, snapshot: str | None) -> None:
        self._keys, self._row_ids, self._snapshot = keys, row_ids, snapshot
        self.__dict__.pop("_sql_cache", None)  # the fetch SQL depends on whether ctids exist
        self.__dict__.pop("_keys_digest", None)
        self.__dict__.pop("_manifest", None)
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
        """The query, columns and parameters, and a digest of the keys pinned at construction
        (or ``refresh()``): a cache or checkpoint of other rows is not this dataset's."""
        if "_keys_digest" not in self.__dict__:
            self.__dict__["_keys_digest"] = changes.keys_digest(self._keys)
        params = _digest([repr(v) for v in self.src.params or ()])
        return _digest(
            [
                "SQLDataset",
                self.describe(),
                self.columns,
                params,
                len(self),
                self.__dict__["_keys_digest"],
            ]
        )

    def _change_manifest(self) -> dict[str, Any]:
        if "_manifest" not in self.__dict__:  # the keys are pinned: once per dataset
            self.__dict__["_manifest"] = changes.manifest(self._keys, self.key)
        return dict(self.__dict__["_manifest"])

    def _describe_change(self, old: Any) -> str | None:
        return changes.describe_change(old, self._keys, self.key)


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
