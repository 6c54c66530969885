"""The two dataset contracts every source implements.

A map-style source subclasses :class:`MapDataset` and implements three methods:
``_num_rows()``, ``_fetch(indices) -> pyarrow.Table`` (the rows, in the order asked, one round trip)
and ``describe()`` (a credential-free name for messages). Everything else (list-like indexing,
``__getitems__``, ``(x, y)`` samples, transforms, label columns, fingerprints, caching) is here.

An iterable source subclasses :class:`StreamDataset` and implements ``_iter_tables(world, epoch,
position)``: the Arrow tables of one shard, in a deterministic order, from ``position``. The base
adds the shuffle buffer, row- and batch-level iteration and checkpointing.

``ds.cache()`` returns a :class:`CachedDataset`, itself a MapDataset, so it is defined here next to
the base that builds it; the storage it reads (an Arrow table in RAM or a memory-mapped file) is
``cache.py`` (NOTE [ Dataset caches ]).

NOTE [ Stream checkpoints ]
A stream's checkpoint is ``(epoch, position)`` of the rows already handed out. By default the
position is a row count: a shard is deterministic for its ``(seed, epoch, shard)``, so resuming
replays it and skips that many rows; without a shuffle buffer the skip is pushed down to the
source (``_iter_tables(..., position)``), with one the buffer is replayed so its contents are
exactly those of the uninterrupted run. A source with real positions (Kafka offsets) overrides
``_start_position()`` and ``_advance(position, table)`` (JSON-serialisable positions) and
receives its own position in ``_iter_tables``; it cannot use the replaying shuffle buffer. A
source that reads fixed splits also implements ``_splits_of``, ``_split_rows`` and
``_read_splits``: its checkpoint then moves to other numbers of workers and ranks (NOTE [ Elastic
stream checkpoints ] in ``stream_state.py``), and its shuffle buffer is the one of
``stream_shuffle.py``, which moves too (NOTE [ A shuffle buffer that regroups ]).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from torch.utils.data import Dataset, IterableDataset

from . import stream_shuffle, stream_splits
from .cache import (
    _cache_file,
    _Gather,
    _open_cache,
    _read_all,
    _remove_stale_siblings,
    _valid_cache,
    _write_cache,
)
from .columns import ColumnBatch, RowLocator, SampleSpec
from .errors import ConfigError, DataError, StateError
from .sampling import World, dist_rank_world, shard_seed


def normalize_indices(indices: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Indices as int64 numpy, negatives wrapped like a list; out of range is an IndexError.
    (Two reductions and no copy for the common case of in-range int64 indices.)"""
    idx = np.asarray(indices)
    if idx.dtype == np.bool_ or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(f"dataset indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    if not idx.size:
        return idx
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0:
        idx = np.where(idx < 0, idx + n, idx)
        lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= n:
        bad = (idx < 0) | (idx >= n)
        first = int(np.asarray(indices).reshape(-1)[int(np.argmax(bad))])
        raise IndexError(f"index {first} is out of range for a dataset of {n} rows")
    return idx


class MapDataset(Dataset[Any]):
    """Base class of tensorfeed's map-style datasets (see module docstring)."""

    spec: SampleSpec = SampleSpec()

    # -- the contract -----------------------------------------------------------------------
    def _num_rows(self) -> int:
        raise NotImplementedError

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def _locator(self, indices: np.ndarray) -> RowLocator:
        return RowLocator(self.describe(), offsets=indices)

    # -- list-like access -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_rows()

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int | np.integer):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        # the Arrow path, so a sample holds Python values even where batches take a fast path
        return MapDataset.__getitems__(self, [int(index)])[0]

    def __getitems__(self, indices: Sequence[int]) -> ColumnBatch:
        """Fetch a whole batch in one round trip; the result is a sequence of samples."""
        idx = normalize_indices(indices, len(self))
        return self._batch(self._fetch(idx), idx)

    def _batch(self, table: pa.Table, indices: np.ndarray) -> ColumnBatch:
        """Fetched rows -> the batch of samples. A source with its own sample shape (images)
        overrides this; a cache keeps ``_fetch``'s table and reuses the source's ``_batch``."""
        return ColumnBatch(table, self.spec, self._locator(indices))

    def __iter__(self) -> Iterator[Any]:
        n = len(self)
        for start in range(0, n, 4096):
            yield from self.__getitems__(range(start, min(n, start + 4096)))

    # -- helpers used by samplers, splits and caches ----------------------------------------
    def column(self, name: str) -> np.ndarray:
        """One column for every row, in index order (labels for samplers, stratified splits)."""
        n = len(self)
        parts = [
            self._fetch(np.arange(s, min(n, s + 65536))).column(name).to_numpy(zero_copy_only=False)
            for s in range(0, n, 65536)
        ]
        return np.concatenate(parts) if parts else np.empty(0)

    def fingerprint(self) -> str:
        """A stable id of what this dataset reads (not the data): for caches and state dicts."""
        return _digest([type(self).__name__, self.describe(), len(self)])

    def cache(self, where: str = "memory", *, rebuild: bool = False) -> MapDataset:
        """Keep decoded samples in RAM (``"memory"``) or in a memory-mapped file under ``where``
        (``rebuild``: write the file again even if it is there, e.g. after a checksum error)."""
        return cache_dataset(self, where, rebuild=rebuild)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, rows={len(self)})"


# --------------------------------------------------------------------------- caches
# (see NOTE [ Dataset caches ] in cache.py, which holds the storage)


def cache_dataset(
    dataset: MapDataset,
    where: str | os.PathLike[str] = "memory",
    *,
    chunk_rows: int | None = None,
    progress: bool | None = None,
    rebuild: bool = False,
) -> CachedDataset:
    """Cache ``dataset``'s rows in RAM (``"memory"``) or in a memory-mapped file under ``where``
    (see NOTE [ Dataset caches ]). ``progress``: show a progress bar (default: on a terminal)."""
    if not isinstance(dataset, MapDataset):
        raise ConfigError(
            f"only map-style datasets can be cached, not {type(dataset).__name__} "
            "(a stream has no stable index to cache by)"
        )
    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if isinstance(where, str) and where == "memory":
        table = _read_all(dataset, chunk_rows, progress)
        return CachedDataset(dataset, table, "memory")
    path = _cache_file(dataset, os.fspath(where))
    fingerprint = dataset.fingerprint()
    if rebuild or not _valid_cache(path, fingerprint, len(dataset)):
        _write_cache(dataset, path, fingerprint, chunk_rows, progress)
        _remove_stale_siblings(path)
    return CachedDataset(dataset, None, path)


class CachedDataset(MapDataset):
    """A map-style dataset serving another dataset's fetched rows from RAM or a file.

    Anything not defined here (``classes``, ``class_to_idx``, ``skipped`` ...) is read from
    the source dataset, :attr:`source`.
    """

    def __init__(self, source: MapDataset, table: pa.Table | None, where: str) -> None:
        self.source = source
        self.where = where
        self._table = table
        self._gather: _Gather | None = None
        self._rows = len(source)
        if table is not None and table.num_rows != self._rows:  # pragma: no cover
            raise DataError(f"cache holds {table.num_rows} rows, the source {self._rows}")

    @property
    def path(self) -> str | None:
        """The cache file, or None for a memory cache."""
        return None if self.where == "memory" else self.where

    @property
    def spec(self) -> Any:  # type: ignore[override]
        return self.source.spec

    @property
    def table(self) -> pa.Table:
        """The cached rows (memory-mapped for a file cache)."""
        if self._table is None:
            table = _open_cache(self.where)
            check = getattr(self.source, "_check_cached_rows", None)
            if callable(check):  # data only (NOTE [ Dataset caches ])
                check(table, self.where)
            self._table = table
        return self._table

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    def _num_rows(self) -> int:
        return self._rows

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        if self._gather is None:
            self._gather = _Gather(self.table)
        return self._gather.take(indices)

    def _batch(self, table: pa.Table, indices: np.ndarray) -> Any:
        return self.source._batch(table, indices)

    def _locator(self, indices: np.ndarray) -> Any:
        return self.source._locator(indices)

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int | np.integer):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        batch = self.__getitems__([int(index)])
        if len(batch) == 0:  # an image source under on_error="skip" left it out
            raise DataError(
                f"sample {index} of {self.describe()} is unreadable and on_error='skip' leaves "
                "it out; batched access (a DataLoader) skips it, a single index cannot"
            )
        return batch[0]

    def column(self, name: str) -> np.ndarray:
        if name in self.table.column_names:
            return self.table.column(name).to_numpy(zero_copy_only=False)
        return self.source.column(name)

    def describe(self) -> str:
        return f"{self.source.describe()} (cached in {self.where})"

    def fingerprint(self) -> str:
        # same rows, same indices: a loader checkpoint of the source resumes on its cache
        return self.source.fingerprint()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("source", "_table", "_gather", "where", "_rows"):
            raise AttributeError(name)
        return getattr(self.source, name)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_gather"] = None
        if self.where != "memory":
            state["_table"] = None  # memory-mapped again in the process that unpickles it
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"CachedDataset({self.describe()}, rows={self._rows})"


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class StreamDataset(IterableDataset[Any]):
    """Base class of tensorfeed's iterable datasets (see module docstring)."""

    spec: SampleSpec = SampleSpec()
    shuffle_buffer: int = 0
    seed: int = 0
    epoch: int = 0
    _parent_world: tuple[int, int] | None = None
    # the loader's timeout= when it runs without workers (a source that can wait applies it)
    loader_timeout: float = 0.0

    # -- the contract -----------------------------------------------------------------------
    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        """Tables of this shard in a deterministic order, starting at ``position`` (by default
        the number of rows of this shard to skip)."""
        raise NotImplementedError

    def _start_position(self) -> Any:
        """The position of a shard before any row was handed out (JSON-serialisable)."""
        return 0

    def _advance(self, position: Any, table: pa.Table) -> Any:
        """The position after ``table`` (rows just handed out) was delivered."""
        return position + table.num_rows

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        """The positions of ``num_shards`` shards that together resume exactly what the shards
        at ``positions`` had not delivered of ``epoch`` (NOTE [ Elastic stream checkpoints ] in
        ``stream_state.py``). A source that cannot says so."""
        raise StateError(
            f"{self.describe()} resumes on the same numbers of DataLoader workers and DDP ranks "
            f"only (this checkpoint has {len(positions)} shard(s), the loader {num_shards})"
        )

    # -- fixed splits (optional): a source reading them shuffles so that it can regroup ----
    def _splits_of(self, epoch: int, shard: int, num_shards: int) -> list[int] | None:
        """The splits shard ``shard`` of ``num_shards`` reads, in its order; None: this source
        does not read fixed splits (its shuffle buffer replays; NOTE [ Stream checkpoints ])."""
        return None

    def _split_rows(self, epoch: int, split: int) -> int:
        """The number of rows of one split."""
        raise NotImplementedError

    def _read_splits(self, epoch: int, splits: list[int]) -> Iterator[pa.Table]:
        """Each of ``splits`` whole, in its natural order, one table per split (empty ones too)."""
        raise NotImplementedError

    def _regroup_splits(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        """``_regroup`` of a source reading fixed splits, with or without a shuffle buffer."""
        if self.shuffle_buffer > 0:
            return stream_shuffle.regroup(self, epoch, positions, num_shards)
        return stream_splits.regroup(
            positions,
            num_shards,
            lambda k, n: self._splits_of(epoch, k, n) or [],
            lambda s: self._split_rows(epoch, s),
            self.describe(),
        )

    def describe(self) -> str:
        return type(self).__name__

    def _locator(self, table: pa.Table) -> RowLocator:
        return RowLocator(self.describe())

    # -- epochs and worlds ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def world(self) -> World:
        return World.current(self._parent_world)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # A spawn worker has no process group: carry the parent's (rank, world_size) with us.
        rank, size = dist_rank_world()
        if size > 1:
            state["_parent_world"] = (rank, size)
        return state

    # -- iteration --------------------------------------------------------------------------
    def iter_batches(self, epoch: int | None = None, position: Any = None) -> Iterator[ColumnBatch]:
        """This shard's rows as ColumnBatches (after the shuffle buffer), from ``position``."""
        return self._shard_batches(self.world(), self.epoch if epoch is None else epoch, position)

    def _shard_batches(self, world: World, ep: int, position: Any) -> Iterator[ColumnBatch]:
        """The rows of shard ``world.shard`` of ``world.num_shards`` (a filtered stream replays
        another topology's shard through this when it regroups)."""
        start = self._start_position()
        if position is None:
            position = start
        splits = self._splits_of(ep, world.shard, world.num_shards) if self.shuffle_buffer else None
        if splits is not None:  # NOTE [ A shuffle buffer that regroups ] (stream_shuffle.py)
            tables = stream_shuffle.shuffled(self, ep, world.shard, world.num_shards, position)
        elif self.shuffle_buffer > 0:
            if not isinstance(start, int):
                raise ConfigError(f"{self.describe()} does not support a shuffle buffer")
            rng = np.random.default_rng(shard_seed(self.seed, ep, world.rank, world.worker))
            tables = _shuffle_buffer(self._iter_tables(world, ep, start), self.shuffle_buffer, rng)
            tables = stream_splits.skip_rows(tables, position)
        else:
            tables = self._iter_tables(world, ep, position)
        for t in tables:
            if t.num_rows:
                yield ColumnBatch(t, self.spec, self._locator(t))

    def __iter__(self) -> Iterator[Any]:
        return _RowIterator(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def batches(self, batch_size: int, drop_last: bool = False) -> _BatchIterable:
        """An iterable dataset of whole ColumnBatches of ``batch_size`` rows (the fast path)."""
        return _BatchIterable(self, batch_size, drop_last)


def _shuffle_buffer(
    tables: Iterator[pa.Table], size: int, rng: np.random.Generator
) -> Iterator[pa.Table]:
    """A columnar shuffle buffer: each incoming chunk of c rows swaps c random rows out of the
    (size + c) held, like the classic per-row buffer but vectorised; the rest drains shuffled."""
    held: pa.Table | None = None
    for t in tables:
        held = t if held is None else pa.concat_tables([held, t], promote_options="default")
        excess = held.num_rows - size
        if excess > 0:
            pick = rng.choice(held.num_rows, size=excess, replace=False)
            keep = np.ones(held.num_rows, dtype=bool)
            keep[pick] = False
            out = held.take(pa.array(pick))
            held = held.filter(pa.array(keep))
            yield out
    if held is not None and held.num_rows:
        yield held.take(pa.array(rng.permutation(held.num_rows)))


def _rows(ds: StreamDataset, epoch: int, position: Any) -> Iterator[tuple[Any, pa.Table]]:
    """Each row of the stream from ``position``, with itself as a one-row table."""
    for batch in ds.iter_batches(epoch, position):
        for i, sample in enumerate(batch):
            yield sample, batch.table.slice(i, 1)


class _RowIterator:
    """Row-at-a-time iteration (for a plain torch DataLoader), checkpointable."""

    def __init__(self, ds: StreamDataset) -> None:
        self.ds = ds
        self.epoch = ds.epoch
        self.position = ds._start_position()
        self._it: Iterator[tuple[Any, pa.Table]] | None = None

    def __iter__(self) -> _RowIterator:
        return self

    def __next__(self) -> Any:
        if self._it is None:  # no reference back to self (see _chunks)
            self._it = _rows(self.ds, self.epoch, self.position)
        sample, row = next(self._it)
        self.position = self.ds._advance(self.position, row)  # handed out: delivered
        return sample

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "source": self.ds.describe()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_stream_state(self.ds, state)
        self.epoch, self.position, self._it = int(state["epoch"]), state["position"], None


def _check_stream_state(ds: StreamDataset, state: dict[str, Any]) -> None:
    if state.get("source") != ds.describe():
        raise StateError(
            f"this state dict belongs to {state.get('source')!r}, not to {ds.describe()!r}"
        )


class _BatchIterable(IterableDataset[Any]):
    """Whole batches of a stream, re-chunked to exactly ``batch_size`` rows (last may be short).

    ``tfd.DataLoader`` uses this with ``batch_size=None`` so a batch is sliced from Arrow columns
    and converted in the worker, not assembled from rows.
    """

    def __init__(self, ds: StreamDataset, batch_size: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.ds = ds
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = ds.epoch
        self._local_iters = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._local_iters = 0
        # pin the stream's own epoch in the main process too (a lake lists its files for the
        # epoch there, so every worker and rank reads the same list)
        self.ds.set_epoch(epoch)

    def __iter__(self) -> _BatchIterator:
        # A persistent worker keeps its copy across epochs: count the epochs it has started.
        epoch = self.epoch + self._local_iters
        self._local_iters += 1
        return _BatchIterator(self, epoch)


def _chunks(
    ds: StreamDataset, bs: int, drop_last: bool, epoch: int, position: Any
) -> Iterator[ColumnBatch]:
    """The stream's tables from ``position`` re-chunked into batches of ``bs`` rows. A function,
    not a method: a generator holding its iterator would be a reference cycle, and an abandoned
    epoch would then keep its source's connection and transaction until the garbage collector
    ran (a PostgreSQL shard's snapshot holds a table lock until then)."""
    pending: list[pa.Table] = []
    n_pending = 0
    for cb in ds.iter_batches(epoch, position):
        pending.append(cb.table)
        n_pending += cb.table.num_rows
        while n_pending >= bs:
            t = (
                pa.concat_tables(pending, promote_options="default")
                if len(pending) > 1
                else pending[0]
            )
            out, rest = t.slice(0, bs), t.slice(bs)
            pending, n_pending = ([rest] if rest.num_rows else []), rest.num_rows
            yield ColumnBatch(out, ds.spec, ds._locator(out))
    if n_pending and not drop_last:
        t = pa.concat_tables(pending, promote_options="default") if len(pending) > 1 else pending[0]
        yield ColumnBatch(t, ds.spec, ds._locator(t))


class _BatchIterator:
    def __init__(self, owner: _BatchIterable, epoch: int) -> None:
        self.owner = owner
        self.epoch = epoch
        self.position = owner.ds._start_position()
        self._it: Iterator[ColumnBatch] | None = None

    def __iter__(self) -> _BatchIterator:
        return self

    def __next__(self) -> ColumnBatch:
        if self._it is None:  # no reference back to self: see _chunks
            owner = self.owner
            self._it = _chunks(
                owner.ds, owner.batch_size, owner.drop_last, self.epoch, self.position
            )
        batch = next(self._it)
        self.position = self.owner.ds._advance(self.position, batch.table)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "source": self.owner.ds.describe()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_stream_state(self.owner.ds, state)
        self.epoch, self.position, self._it = int(state["epoch"]), state["position"], None
