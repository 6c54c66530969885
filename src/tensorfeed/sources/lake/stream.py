"""``LakeStream``: the lake as an iterable dataset, split by row group across workers and ranks,
one row group at a time with read-ahead (NOTE [ A consistent epoch ] in ``plan.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ... import stream_splits
from ...columns import make_spec
from ...dataset import StreamDataset
from ...errors import ConfigError, StateError
from ...sampling import World
from . import manifest
from .index import FactsCache, build_plan
from .plan import Plan, _lake_spec, _options_from_url
from .pruning import row_positions
from .read import ReadAhead, check_nulls, read_unit_table


class LakeStream(StreamDataset):
    """The lake as an iterable dataset: row groups split across DataLoader workers and DDP ranks
    (every row once per epoch), streamed one row group at a time with ``read_ahead`` row groups
    read in the background, and an optional ``shuffle_buffer`` (the row-group order is shuffled
    per epoch too when it is set, NOTE [ A shuffle buffer that regroups ]). Memory stays
    bounded by (1 + read_ahead) decoded row groups plus the shuffle buffer and the row groups it
    draws from, whatever the size of the lake.

    The file list is pinned at construction for the first epoch and listed again at the start
    of each later one, so new files join the next epoch (NOTE [ A consistent epoch ]); a
    resumed epoch reads the files its checkpoint names.
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
        needed = self.spec.needed_columns()
        self.lake = _lake_spec(
            uri, format, partitioning, columns, filter, storage_options, filesystem, needed
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

    def _build(self, epoch: int, checkpoint: Any = None) -> Plan:
        cache = self._facts_cache()
        fs, plan = build_plan(
            self.lake,
            resolve_partial=False,
            cache=cache,
            epoch=epoch,
            threads=self.threads,
            checkpoint=checkpoint,
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

    # -- a checkpoint's epoch reads its own files (manifest.py) ----------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        return {"epoch": self._plan.epoch, **manifest.manifest(self._plan.files)}

    def _restore_checkpoint_state(self, state: Any) -> None:
        """List the lake for the checkpoint's epoch, keeping only the files it read (a removed
        or replaced one is a SourceChangedError naming it)."""
        if state is None:
            return
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise StateError(
                f"the checkpoint's file list of {self.describe()} must be {{'epoch': int, "
                f"'files': [...]}}, got {state!r}"
            )
        self._plan = self._build(epoch, checkpoint=state)

    def _job_view(self) -> Plan:
        """The plan rank 0 listed for the epoch (NOTE [ One view of the source for the job ])."""
        return self._plan

    def _adopt_job_view(self, view: Plan) -> None:
        self._plan = view

    @property
    def files(self) -> list[str]:
        return self._plan.used_files()

    @property
    def schema(self) -> pa.Schema:
        return self._plan.schema

    def _fs(self) -> Any:
        self._facts_cache()
        if self._local.get("fs") is None:
            self._local["fs"] = self.lake.open_filesystem()
        return self._local["fs"]

    # -- the StreamDataset contract ---------------------------------------------------------
    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        plan = self._plan_for(epoch)
        mine = self._splits_of(epoch, world.shard, world.num_shards)
        skip, done = stream_splits.parse(position, f"a checkpoint position of {self.describe()}")
        units = list(stream_splits.starts(mine, done, lambda u: self._count(plan, u)))
        tables = self._tables(plan, units, skip)
        if self.read_ahead > 0 and len(units) > 1:
            return iter(ReadAhead(tables, self.read_ahead))
        return tables

    # -- fixed splits: row groups (units); with a shuffle buffer in an order of (seed, epoch) --
    def _splits_of(self, epoch: int, shard: int, num_shards: int) -> list[int]:
        n = self._plan_for(epoch).num_units
        order = np.arange(n)
        if self.shuffle_buffer > 0:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), 0x5EED])
            order = rng.permutation(n)
        return [int(u) for u in order[shard::num_shards]]

    def _split_rows(self, epoch: int, split: int) -> int:
        return self._count(self._plan_for(epoch), split)

    def _read_splits(self, epoch: int, splits: list[int]) -> Iterator[pa.Table]:
        plan = self._plan_for(epoch)
        tables = (self._unit(plan, u) for u in splits)
        if self.read_ahead > 0 and len(splits) > 1:
            return iter(ReadAhead(tables, self.read_ahead))
        return tables

    def _advance(self, position: Any, table: pa.Table) -> Any:
        return stream_splits.advance(position, table.num_rows)

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        return self._regroup_splits(epoch, positions, num_shards)

    def _tensor_columns(self, plan: Plan) -> list[str]:
        if self.spec.supervised:
            return self.spec.needed_columns()
        return list(plan.schema.names)

    def _tables(self, plan: Plan, units: list[tuple[int, int]], skip: int) -> Iterator[pa.Table]:
        """The rows of ``units`` (``(unit, first row)``), less the first ``skip`` of them."""
        for u, first in units:
            if skip > 0:
                n = self._count(plan, u) - first
                if skip >= n:
                    skip -= n
                    continue
            table = self._unit(plan, u)
            if first or skip:
                table, skip = table.slice(first + skip), 0
            if table.num_rows:
                yield table

    def _unit(self, plan: Plan, u: int) -> pa.Table:
        """The rows of one unit that pass the filter, checked for nulls."""
        fs = self._fs()
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
        table = table.select(plan.schema.names)
        check_nulls(table, self._tensor_columns(plan), plan, u, rows)
        return table

    def _count(self, plan: Plan, u: int) -> int:
        if not plan.unit_partial[u]:
            return int(plan.unit_total[u])
        table = read_unit_table(self._fs(), self.lake, plan, u, plan.filter_columns)
        return len(row_positions(table, plan.row_filter))
