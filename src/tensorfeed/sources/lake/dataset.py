"""Data lakes: Parquet (first class), CSV and newline-delimited JSON, on local disk or S3.

``tfd.LakeDataset("s3://lake/patients/", filter=[("year", ">=", 2022)])`` is a map-style dataset
whose ``len()`` and ``ds[i]`` come from file and row-group metadata; ``tfd.LakeStream(...)`` is the
same lake as an iterable dataset, split by row group across DataLoader workers and DDP ranks.

How it fits together (each NOTE is in the module named):
- ``_lake_fs``: URIs, ``storage_options`` -> ``pyarrow.fs.S3FileSystem``, listings, the identity
  pinned per file, bounded retries (NOTE [ S3 retries are bounded in time ]).
- ``_lake_index``: the plan of an epoch as numpy arrays (NOTE [ How the lake index is built ],
  NOTE [ Schema unification ]).
- ``_lake_read``: reading one row group, checked against the pinned identity; read-ahead.
- ``_lake_sampler``: the locality-aware shuffle (NOTE [ How random is the locality shuffle ]).

NOTE [ A consistent epoch ]
The file list (size, mtime, and on S3 the ETag) is pinned when an epoch starts: at construction
and :meth:`LakeDataset.refresh` for the map-style dataset, at the start of every epoch for the
stream. Every row-group read is checked against the pinned identity after the bytes arrive; a
replaced or deleted file is a :class:`~tensorfeed.errors.SourceChangedError` naming the object,
never a silent mix of versions. Files added during an epoch are picked up by the next one (stream)
or by ``refresh()`` (map-style; build a new DataLoader afterwards, since the length changed).
Stream processes (DataLoader workers, DDP ranks) each list the lake at the start of an epoch after
the first, so a file added at that very moment may be seen by some of them and not others.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pyarrow as pa
import torch

from ...columns import ColumnBatch, ConvertOptions, RowLocator, make_spec
from ...dataset import MapDataset, StreamDataset, _digest, normalize_indices
from ...errors import ConfigError
from ...sampling import EpochSampler, World
from .fs import display_uri, parse_location, parse_storage_options
from .index import (
    FORMATS,
    FactsCache,
    LakeSpec,
    Plan,
    build_plan,
    normalize_filter,
    row_positions,
)
from .read import ReadAhead, check_nulls, read_unit_table
from .sampler import LocalitySampler

_DEFAULT_CACHE_BYTES = 512 * 2**20
_CONVERT = ConvertOptions()


def _lake_spec(
    uri: Any,
    format: str,
    partitioning: str | None,
    columns: Sequence[str] | None,
    filter: Any,
    storage_options: Mapping[str, Any] | None,
    filesystem: Any,
    needed: Sequence[str],
) -> LakeSpec:
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if partitioning not in ("hive", None):
        raise ConfigError(f"partitioning must be 'hive' or None, got {partitioning!r}")
    items = [uri] if isinstance(uri, str | os.PathLike) else list(uri)
    if not items:
        raise ConfigError("uri must name at least one file, directory or glob")
    locations = tuple(parse_location(u) for u in items)
    if isinstance(columns, str):
        columns = [columns]
    if columns is not None and len(columns) == 0:
        raise ConfigError("columns must name at least one column (or be None for all)")
    expr, _ = normalize_filter(filter)
    s3 = parse_storage_options(storage_options)
    if storage_options and locations[0].scheme != "s3":
        raise ConfigError("storage_options apply to s3:// lakes only; this lake is on local disk")
    return LakeSpec(
        locations=locations,
        shown=display_uri(uri),
        format=format,
        partitioning=partitioning,
        columns=tuple(columns) if columns is not None else None,
        filter=filter if expr is not None else None,
        s3=s3,
        filesystem=filesystem,
        needed=tuple(needed),
    )


def _options_from_url(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``s3://bucket/prefix?format=csv&partitioning=none`` -> (uri, options)."""
    opts = dict(options)
    if "?" in url and not os.path.exists(url):
        url, _, query = url.partition("?")
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k in ("format", "shuffle_buffer", "seed"):
                opts.setdefault(k, int(v) if k != "format" else v)
            elif k == "partitioning":
                opts.setdefault(k, None if v.lower() in ("", "none") else v)
            elif k == "columns":
                opts.setdefault(k, [c for c in v.split(",") if c])
            elif k in ("endpoint_url", "region", "anon"):
                so = dict(opts.get("storage_options") or {})
                so.setdefault(k, v.lower() in ("1", "true") if k == "anon" else v)
                opts["storage_options"] = so
            else:
                raise ConfigError(
                    f"unknown lake URL option {k!r}; use format, partitioning, columns, "
                    "endpoint_url, region, anon (pass credentials as storage_options)"
                )
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "format" not in opts:
        low = url.lower()
        if low.endswith((".csv", ".csv.gz", ".tsv")):
            opts["format"] = "csv"
        elif low.endswith((".json", ".jsonl", ".ndjson")):
            opts["format"] = "json"
    return url, opts


# --------------------------------------------------------------------------- map-style


@dataclass(frozen=True)
class _LakeRowLocator(RowLocator):
    """Names a row of a batch by file, row group and row (for NULL and type errors)."""

    plan: Plan | None = None
    starts: np.ndarray | None = None

    def describe(self, table: pa.Table, i: int) -> str:
        if self.plan is None or self.starts is None or self.offsets is None:
            return super().describe(table, i)
        idx = int(self.offsets[i])
        return _describe_index(self.plan, self.starts, idx)


def _describe_index(plan: Plan, starts: np.ndarray, idx: int) -> str:
    u = int(np.searchsorted(starts, idx, side="right") - 1)
    local = idx - int(starts[u])
    sel = plan.selection(u)
    phys = int(sel[local]) if sel is not None else local
    rg = int(plan.unit_rg[u])
    entry = plan.files[int(plan.unit_file[u])]
    where = f", row group {rg}" if rg >= 0 else ""
    return f"row {int(plan.unit_base[u]) + phys} of {entry.display} (index {idx}{where})"


class _Decoded:
    """A decoded unit in the cache. Fixed-width numeric columns without NULLs are kept as one
    row-major ``[rows, columns]`` numpy matrix per dtype, so gathering a batch costs one numpy
    take per dtype per row group (a row's values share cache lines) instead of one per column;
    other columns stay Arrow arrays."""

    __slots__ = ("arrow", "groups", "layout", "nbytes")

    def __init__(self, table: pa.Table) -> None:
        by_dtype: dict[np.dtype[Any], list[tuple[int, np.ndarray]]] = {}
        self.arrow: dict[int, pa.Array] = {}
        for j, col in enumerate(table.columns):
            t = col.type
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            if (pa.types.is_integer(t) or pa.types.is_floating(t)) and arr.null_count == 0:
                view = arr.to_numpy(zero_copy_only=True)
                by_dtype.setdefault(view.dtype, []).append((j, view))
            else:
                self.arrow[j] = arr
        self.groups: list[tuple[list[int], np.ndarray]] = []
        for dtype, cols in by_dtype.items():
            mat = np.empty((table.num_rows, len(cols)), dtype=dtype)
            for i, (_, view) in enumerate(cols):
                mat[:, i] = view
            self.groups.append(([j for j, _ in cols], mat))
        self.layout = tuple((tuple(js), m.dtype.str) for js, m in self.groups)
        self.nbytes = sum(m.nbytes for _, m in self.groups) + sum(
            a.nbytes for a in self.arrow.values()
        )


class LakeDataset(MapDataset):
    """A map-style dataset over a lake of Parquet, CSV or newline-delimited JSON files.

    ``uri``: a file, a directory, a glob or a list of them, local or ``s3://``. ``columns`` is
    pushed down; ``filter`` (a pyarrow expression or DNF tuples) is pushed down to partitions and
    row-group statistics. ``storage_options`` follows s3fs (``key``, ``secret``, ``token``,
    ``endpoint_url``, ``client_kwargs``, ``anon`` ...); without it the standard AWS environment
    variables and credential chain apply. ``filesystem`` takes any ``pyarrow.fs.FileSystem``
    instead. ``cache_bytes`` bounds the per-process cache of decoded row groups.

    Batches fetched through ``__getitems__`` decode each row group once; for a fast shuffled
    epoch use ``sampler=ds.locality_sampler(seed=...)`` (see :meth:`sampler`).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        format: str = "parquet",
        partitioning: str | None = "hive",
        columns: Sequence[str] | None = None,
        filter: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        *,
        filesystem: Any = None,
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
        threads: int = 8,
    ) -> None:
        self.spec = make_spec(features, target, transform, target_transform)
        self.lake = _lake_spec(
            uri,
            format,
            partitioning,
            columns,
            filter,
            storage_options,
            filesystem,
            self.spec.needed_columns(),
        )
        self.cache_bytes = int(cache_bytes)
        self.threads = int(threads)
        self._local: dict[str, Any] = {}
        self._plan: Plan
        self._starts: np.ndarray
        self.refresh()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LakeDataset:
        """``tfd.open("s3://bucket/lake/?format=parquet", storage_options={...})``."""
        uri, opts = _options_from_url(url, options)
        for k in ("shuffle_buffer", "seed"):
            if k in opts:
                raise ConfigError(f"{k} applies to tfd.LakeStream, not to a map-style LakeDataset")
        return cls(uri, **opts)

    # -- the epoch --------------------------------------------------------------------------
    def refresh(self) -> LakeDataset:
        """List the lake again and pin the new file list (new files appear, len may change)."""
        fs, plan = build_plan(self.lake, resolve_partial=True, threads=self.threads)
        self._plan = plan
        self._starts = plan.starts()
        self._local = {"pid": os.getpid(), "fs": fs, "cache": OrderedDict(), "bytes": 0}
        return self

    @property
    def files(self) -> list[str]:
        """The pinned files of this epoch (credential-free display names)."""
        used = set(self._plan.unit_file.tolist())
        return [f.display for i, f in enumerate(self._plan.files) if i in used]

    @property
    def schema(self) -> pa.Schema:
        return self._plan.schema

    @property
    def num_row_groups(self) -> int:
        return self._plan.num_units

    def row_group_sizes(self) -> np.ndarray:
        """Rows of each row group (after the filter), in index order."""
        return self._plan.unit_rows.copy()

    # -- process-local state (never crosses into a worker) ---------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_local"] = {}
        return state

    def _state(self) -> dict[str, Any]:
        loc = self._local
        if loc.get("pid") != os.getpid():
            loc.clear()
            loc.update(pid=os.getpid(), fs=None, cache=OrderedDict(), bytes=0)
        if loc["fs"] is None:
            loc["fs"] = self._filesystem()
        return loc

    def _filesystem(self) -> Any:
        from .fs import filesystem_for

        if self.lake.filesystem is not None:
            return self.lake.filesystem
        loc = self.lake.locations[0]
        return filesystem_for(loc.scheme, self.lake.s3, loc.path.split("/", 1)[0])

    def _unit(self, u: int) -> _Decoded:
        st = self._state()
        cache: OrderedDict[int, _Decoded] = st["cache"]
        hit = cache.get(u)
        if hit is not None:
            cache.move_to_end(u)
            return hit
        table = read_unit_table(st["fs"], self.lake, self._plan, u, self._plan.read_columns)
        dec = _Decoded(table.select(self._plan.schema.names))
        cache[u] = dec
        st["bytes"] += dec.nbytes
        while st["bytes"] > self.cache_bytes and len(cache) > 1:
            _, old = cache.popitem(last=False)
            st["bytes"] -= old.nbytes
        return dec

    # -- the MapDataset contract ------------------------------------------------------------
    def _num_rows(self) -> int:
        return int(self._starts[-1])

    def describe(self) -> str:
        return f"lake {self.lake.shown} ({self.lake.format})"

    def _locator(self, indices: np.ndarray) -> RowLocator:
        return _LakeRowLocator(self.describe(), None, indices, self._plan, self._starts)

    def _physical(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        units = np.searchsorted(self._starts, indices, side="right") - 1
        phys = indices - self._starts[units]
        partial = self._plan.sel_off[units] >= 0
        if partial.any():
            phys[partial] = self._plan.sel[self._plan.sel_off[units[partial]] + phys[partial]]
        return units, phys

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        """Rows in the order asked; each row group decoded once (and cached, LRU)."""
        return self._gather_batch(np.asarray(indices, dtype=np.int64))[0]

    def __getitems__(self, indices: Sequence[int]) -> ColumnBatch:
        """A batch in one pass: gathered with numpy from the cached row groups and converted
        to tensors straight from those arrays (see :class:`_LakeBatch`)."""
        idx = normalize_indices(indices, len(self))
        table, numeric = self._gather_batch(idx)
        return _LakeBatch(table, self.spec, self._locator(idx), numeric)

    def _gather_batch(self, indices: np.ndarray) -> tuple[pa.Table, dict[str, np.ndarray] | None]:
        if len(indices) == 0:
            return self._plan.schema.empty_table(), None
        units, phys = self._physical(indices)
        segments: list[tuple[_Decoded, np.ndarray | None, np.ndarray]]
        if len(units) == 1 or units.min() == units.max():
            segments = [(self._unit(int(units[0])), None, phys)]
        else:
            order = np.argsort(units, kind="stable")
            bounds = np.flatnonzero(np.diff(units[order])) + 1
            segments = [
                (self._unit(int(units[pos[0]])), pos, phys[pos]) for pos in np.split(order, bounds)
            ]
        return _gather(self._plan.schema, segments, len(indices))

    def column(self, name: str) -> np.ndarray:
        """One column for every row in index order, reading only that column."""
        if name not in self._plan.schema.names:
            from ...errors import NotFoundError

            raise NotFoundError(
                f"column {name!r} is not in {self.describe()}; available: {self._plan.schema.names}"
            )
        plan, st = self._plan, self._state()
        if name in plan.part_schema.names:
            j = plan.part_schema.names.index(name)
            vals = pa.array(
                [plan.part_values[int(f)][j] for f in plan.unit_file],
                type=plan.part_schema.field(j).type,
            )
            return vals.take(
                pa.array(np.repeat(np.arange(plan.num_units), plan.unit_rows))
            ).to_numpy(zero_copy_only=False)
        parts = []
        for u in range(plan.num_units):
            t = read_unit_table(st["fs"], self.lake, plan, u, [name])
            col = t.column(name)
            sel = plan.selection(u)
            parts.append(col.take(pa.array(sel)) if sel is not None else col)
        if not parts:
            return np.empty(0)
        return pa.chunked_array(parts, type=plan.schema.field(name).type).to_numpy()

    def fingerprint(self) -> str:
        files = [(f.path, f.size, f.mtime_ns, f.etag) for f in self._plan.files]
        return _digest(
            [
                "LakeDataset",
                self.describe(),
                files,
                len(self),
                list(self._plan.schema.names),
                str(self.lake.filter),
            ]
        )

    # -- samplers ---------------------------------------------------------------------------
    def locality_sampler(
        self,
        seed: int = 0,
        window: int = 8,
        *,
        batch_size: int | None = None,
        drop_last: bool = False,
        ddp: str = "pad",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> LocalitySampler:
        """Shuffle row groups, then rows inside windows of ``window`` row groups (see
        NOTE [ How random is the locality shuffle ] in ``_lake_sampler``). Pass it as
        ``sampler=``; with ``batch_size`` it yields whole batches, for ``batch_sampler=``.
        Keep ``window`` row groups within ``cache_bytes`` so each is decoded once per epoch."""
        return LocalitySampler(
            self._plan.unit_rows,
            seed,
            window,
            batch_size=batch_size,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            ddp=ddp,
        )

    def sampler(
        self, shuffle: str | bool = "locality", seed: int = 0, window: int = 8, **kwargs: Any
    ) -> Any:
        """A sampler for ``tfd.DataLoader(ds, sampler=...)``: ``"locality"`` (fast, shuffles
        within windows of row groups), ``"uniform"`` (exact uniform shuffle, decodes a row group
        for nearly every row unless the whole lake fits in ``cache_bytes``) or ``False``."""
        if shuffle == "locality":
            return self.locality_sampler(seed, window, **kwargs)
        if shuffle in ("uniform", True):
            return EpochSampler(len(self), shuffle=True, seed=seed, **kwargs)
        if shuffle is False or shuffle == "none":
            return EpochSampler(len(self), shuffle=False, seed=seed, **kwargs)
        raise ConfigError(f"shuffle must be 'locality', 'uniform' or False, got {shuffle!r}")


def _gather(
    schema: pa.Schema, segments: list[tuple[_Decoded, np.ndarray | None, np.ndarray]], n: int
) -> tuple[pa.Table, dict[str, np.ndarray] | None]:
    """Rows from decoded units into one table in the batch's order. ``segments`` are
    (unit, positions in the batch or None for all, row numbers in the unit), grouped by unit."""
    cols: list[Any] = [None] * len(schema)
    numeric: dict[str, np.ndarray] | None = None
    first = segments[0][0]
    inverse = None
    if len(segments) > 1:
        concat_pos = np.concatenate([s[1] for s in segments])
        inverse = np.empty(n, np.int64)
        inverse[concat_pos] = np.arange(n)
    if all(s[0].layout == first.layout for s in segments):
        for g, (js, mat) in enumerate(first.groups):
            if inverse is None:
                rows = mat[segments[0][2]]
            else:
                rows = np.concatenate([dec.groups[g][1][r] for dec, _, r in segments])[inverse]
            by_col = np.ascontiguousarray(rows.T)  # [columns, n]: each column contiguous
            numeric = {} if numeric is None else numeric
            for i, j in enumerate(js):
                typ = schema.field(j).type
                cols[j] = pa.Array.from_buffers(typ, n, [None, pa.py_buffer(by_col[i])])
                numeric[schema.field(j).name] = by_col[i]
        rest = list(first.arrow)
    else:  # NULLs in some row groups only: every column through Arrow
        rest = list(range(len(schema)))
    for j in rest:
        pieces = [_arrow_column(s[0], j, schema).take(pa.array(s[2])) for s in segments]
        if inverse is None:
            cols[j] = pieces[0]
        else:
            merged = pa.concat_arrays([p.cast(schema.field(j).type) for p in pieces])
            cols[j] = merged.take(pa.array(inverse))
    return pa.Table.from_arrays(cols, schema=schema), numeric


class _LakeBatch(ColumnBatch):
    """A ColumnBatch that also holds its fixed-width numeric columns as the numpy arrays they
    were gathered into, so ``collate`` turns them into tensors without a round trip through
    Arrow. The dtype rules are tensorfeed's (integers -> int64, floats -> ``float_dtype``);
    anything else (transforms, strings, lists, NULLs) takes the general ColumnBatch path."""

    __slots__ = ("_numeric",)

    def __init__(
        self,
        table: pa.Table,
        spec: Any,
        locator: RowLocator,
        numeric: dict[str, np.ndarray] | None,
    ) -> None:
        super().__init__(table, spec, locator)
        self._numeric = numeric

    def to_batch(self, opts: ConvertOptions = _CONVERT) -> Any:
        num, spec = self._numeric, self.spec
        if num is None or spec.transform is not None or spec.target_transform is not None:
            return super().to_batch(opts)
        float_np = np.float64 if opts.float_dtype == torch.float64 else np.float32
        if spec.supervised:
            feats = list(spec.features or ())
            need = feats + ([spec.target] if spec.target is not None else [])
            if any(c not in num for c in need):
                return super().to_batch(opts)
            x = None
            if feats:
                out = np.empty((self.table.num_rows, len(feats)), dtype=float_np)
                for j, c in enumerate(feats):
                    out[:, j] = num[c]
                x = _as_float(torch.from_numpy(out), opts)
            y = _tensor(num[spec.target], float_np, opts) if spec.target is not None else None
            return spec.pack(x, y)
        if len(num) != self.table.num_columns:
            return super().to_batch(opts)
        return {c: _tensor(num[c], float_np, opts) for c in self.table.column_names}


def _as_float(t: torch.Tensor, opts: ConvertOptions) -> torch.Tensor:
    return t if t.dtype == opts.float_dtype else t.to(opts.float_dtype)


def _tensor(values: np.ndarray, float_np: Any, opts: ConvertOptions) -> torch.Tensor:
    """A gathered column (a fresh array owned by this batch) -> tensor, tensorfeed's rules."""
    if values.dtype.kind in "iu":
        return torch.from_numpy(values if values.dtype == np.int64 else values.astype(np.int64))
    return _as_float(torch.from_numpy(values.astype(float_np, copy=False)), opts)


def _arrow_column(dec: _Decoded, j: int, schema: pa.Schema) -> pa.Array:
    if j in dec.arrow:
        return dec.arrow[j]
    for js, mat in dec.groups:
        if j in js:
            return pa.array(mat[:, js.index(j)], type=schema.field(j).type)
    raise KeyError(j)  # pragma: no cover


# --------------------------------------------------------------------------- stream


class LakeStream(StreamDataset):
    """The lake as an iterable dataset: row groups split across DataLoader workers and DDP ranks
    (every row once per epoch), streamed one row group at a time with ``read_ahead`` row groups
    read in the background, and an optional ``shuffle_buffer`` (the row-group order is shuffled
    per epoch too when it is set). Memory stays bounded by (1 + read_ahead) decoded row groups
    plus the shuffle buffer, whatever the size of the lake.

    The file list is pinned at construction for the first epoch and listed again at the start
    of each later one, so new files join the next epoch (NOTE [ A consistent epoch ]).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        format: str = "parquet",
        partitioning: str | None = "hive",
        columns: Sequence[str] | None = None,
        filter: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        *,
        filesystem: Any = None,
        read_ahead: int = 1,
        threads: int = 8,
    ) -> None:
        if shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if read_ahead < 0:
            raise ConfigError(f"read_ahead must be >= 0, got {read_ahead}")
        self.spec = make_spec(features, target, transform, target_transform)
        self.lake = _lake_spec(
            uri,
            format,
            partitioning,
            columns,
            filter,
            storage_options,
            filesystem,
            self.spec.needed_columns(),
        )
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.read_ahead = int(read_ahead)
        self.threads = int(threads)
        self._local: dict[str, Any] = {}
        self._plan = self._build(0)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LakeStream:
        uri, opts = _options_from_url(url, options)
        return cls(uri, **opts)

    def describe(self) -> str:
        return f"lake stream {self.lake.shown} ({self.lake.format})"

    def __repr__(self) -> str:
        return (
            f"LakeStream({self.describe()}, shuffle_buffer={self.shuffle_buffer}, seed={self.seed})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_local"] = {}
        return state

    # -- epochs -----------------------------------------------------------------------------
    def _facts_cache(self) -> FactsCache:
        loc = self._local
        if loc.get("pid") != os.getpid():
            loc.clear()
            loc.update(pid=os.getpid(), facts=FactsCache(), fs=None)
        return loc["facts"]

    def _build(self, epoch: int) -> Plan:
        cache = self._facts_cache()
        fs, plan = build_plan(
            self.lake, resolve_partial=False, cache=cache, epoch=epoch, threads=self.threads
        )
        self._local["fs"] = fs
        return plan

    def _plan_for(self, epoch: int) -> Plan:
        if self._plan.epoch != epoch:
            self._plan = self._build(epoch)
        return self._plan

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: list the lake again (in this process, before workers start)."""
        super().set_epoch(epoch)
        self._plan_for(int(epoch))

    @property
    def files(self) -> list[str]:
        used = set(self._plan.unit_file.tolist())
        return [f.display for i, f in enumerate(self._plan.files) if i in used]

    @property
    def schema(self) -> pa.Schema:
        return self._plan.schema

    def _fs(self) -> Any:
        self._facts_cache()
        if self._local.get("fs") is None:
            from .fs import filesystem_for

            if self.lake.filesystem is not None:
                self._local["fs"] = self.lake.filesystem
            else:
                loc = self.lake.locations[0]
                self._local["fs"] = filesystem_for(
                    loc.scheme, self.lake.s3, loc.path.split("/", 1)[0]
                )
        return self._local["fs"]

    # -- the StreamDataset contract ---------------------------------------------------------
    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        plan = self._plan_for(epoch)
        order = np.arange(plan.num_units)
        if self.shuffle_buffer > 0:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), 0x5EED])
            order = rng.permutation(plan.num_units)
        mine = order[world.shard :: world.num_shards]
        tables = self._tables(plan, mine, int(position or 0))
        if self.read_ahead > 0 and len(mine) > 1:
            return iter(ReadAhead(tables, self.read_ahead))
        return tables

    def _tensor_columns(self, plan: Plan) -> list[str]:
        if self.spec.supervised:
            return self.spec.needed_columns()
        return list(plan.schema.names)

    def _tables(self, plan: Plan, units: np.ndarray, skip: int) -> Iterator[pa.Table]:
        fs = self._fs()
        check = self._tensor_columns(plan)
        names = plan.schema.names
        for u in units.tolist():
            if skip > 0:
                n = self._count(plan, u)
                if skip >= n:
                    skip -= n
                    continue
            rows = None
            if plan.unit_partial[u]:
                cols = list(plan.read_columns) + [
                    c for c in plan.filter_columns if c not in plan.read_columns
                ]
                table = read_unit_table(fs, self.lake, plan, u, cols)
                rows = row_positions(table, plan.row_filter)
                table = table.take(pa.array(rows))
            else:
                table = read_unit_table(fs, self.lake, plan, u, plan.read_columns)
            table = table.select(names)
            check_nulls(table, check, plan, u, rows)
            if skip:
                table, skip = table.slice(skip), 0
            if table.num_rows:
                yield table

    def _count(self, plan: Plan, u: int) -> int:
        if not plan.unit_partial[u]:
            return int(plan.unit_total[u])
        table = read_unit_table(self._fs(), self.lake, plan, u, plan.filter_columns)
        return len(row_positions(table, plan.row_filter))
