"""``LakeDataset``: a lake as a map-style dataset whose ``len()`` and ``ds[i]`` come from metadata.

The plan of the epoch (``plan.Plan``, built by ``index.build_plan``) maps index ``i`` to a row of a
row group; a batch decodes each row group it touches once (kept per process, LRU, within
``cache_bytes``) and is gathered from the decoded row groups with numpy (``gather.py``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ... import key_order
from ...columns import ColumnBatch, RowLocator, make_spec
from ...dataset import MapDataset, _digest, normalize_indices
from ...errors import ConfigError, DataError
from ...sampling import EpochSampler
from . import manifest
from .gather import _Decoded, _gather, _LakeBatch
from .index import build_plan
from .plan import Plan, _lake_spec, _options_from_url
from .read import read_unit_table
from .sampler import LocalitySampler

_DEFAULT_CACHE_BYTES = 512 * 2**20


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


class LakeDataset(MapDataset):
    """A map-style dataset over a lake of Parquet, CSV or newline-delimited JSON files.

    ``uri``: a file, a directory, a glob or a list of them, local or ``s3://``. ``columns`` is
    pushed down; ``filter`` (a pyarrow expression or DNF tuples) is pushed down to partitions and
    row-group statistics. ``storage_options`` follows s3fs (``key``, ``secret``, ``token``,
    ``endpoint_url``, ``client_kwargs``, ``anon`` ...); without it the standard AWS environment
    variables and credential chain apply. ``filesystem`` takes any ``pyarrow.fs.FileSystem``
    instead. ``cache_bytes`` bounds the per-process cache of decoded row groups. ``key`` names
    a column that identifies a row (unique, int or str): with it an epoch can resume over a
    changed lake, ``tfd.DataLoader(on_change="continue")`` (NOTE [ Continuing over changed
    data ] in ``key_order.py``).

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
        key: str | None = None,
    ) -> None:
        self.spec = make_spec(features, target, transform, target_transform)
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigError(f"key must name a column, got {key!r}")
        self.key = key
        needed = [*self.spec.needed_columns(), *([key] if key else [])]
        self.lake = _lake_spec(
            uri, format, partitioning, columns, filter, storage_options, filesystem, needed
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
        self._pin(plan, fs)
        return self

    def _pin(self, plan: Plan, fs: Any) -> None:
        self._plan = plan
        self._starts = plan.starts()
        self._local = {"pid": os.getpid(), "fs": fs, "cache": OrderedDict(), "bytes": 0}

    def _job_view(self) -> Plan:
        """The file list rank 0 pinned (NOTE [ One view of the source for the job ])."""
        return self._plan

    def _adopt_job_view(self, view: Plan) -> None:
        self._pin(view, self._local.get("fs"))

    @property
    def files(self) -> list[str]:
        """The pinned files of this epoch (credential-free display names)."""
        return self._plan.used_files()

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
        state.pop("_keys", None)  # the loader's, in this process
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
        return self.lake.open_filesystem()

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

    # -- what a checkpoint remembers (loader_state.raise_if_changed) -------------------------
    def key_index(self) -> np.ndarray:
        """The ``key`` of every row, in index order (read once per file list; only that column)."""
        if self.key is None:
            raise ConfigError(
                f"{self.describe()} has no key: pass LakeDataset(..., key=<a column that "
                "identifies a row>) to continue an epoch over a changed lake"
            )
        cached = self.__dict__.get("_keys")
        if cached is not None and cached[0] is self._plan:
            return cached[1]
        keys = key_order.as_keys(self.column(self.key), self.describe())  # int64 or str
        uniq, counts = np.unique(keys, return_counts=True)
        if len(uniq) != len(keys):
            twice = uniq[counts > 1]
            raise DataError(
                f"key {self.key!r} of {self.describe()} is not unique: {len(twice)} value(s) "
                f"appear more than once, e.g. {twice[:3].tolist()}"
            )
        self.__dict__["_keys"] = (self._plan, keys)
        return keys

    def _change_manifest(self) -> dict[str, Any]:
        return manifest.manifest(self._plan.files)

    def _describe_change(self, old: Any) -> str | None:
        return manifest.describe_change(old, self._plan.files)

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
        NOTE [ How random is the locality shuffle ] in ``sampler.py``). Pass it as
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
