"""What a ``tfd.DataLoader`` epoch counts (``loader.stats``) and the iterators that count it and
keep DDP ranks in step on streams."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .collate_fn import batch_size_of
from .errors import ConfigError


@dataclass
class LoaderStats:
    """Throughput of the current (or last) epoch, and how long the training loop waited."""

    batches: int = 0
    rows: int = 0
    wait_s: float = 0.0
    wall_s: float = 0.0
    ddp_padded: int = 0  # batches repeated so this rank kept step with the others (ddp="pad")
    ddp_dropped: int = 0  # batches left out so no rank got more than another (ddp="drop")
    # a resumed epoch that continued over changed data (on_change="continue"): rows_then/now,
    # done_then (delivered at the checkpoint), done_now (rows now on the delivered side of the
    # cut, counted done: done_now - done_then > 0 were added there and are skipped this epoch),
    # ahead_gone (rows delivered past the cut since deleted); for KafkaStream, the partitions
    # moved on ({"topic:p": {"change", "then", "now"}}) and messages_skipped
    source_changes: dict[str, Any] | None = None
    _t0: float | None = field(default=None, repr=False)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def wait_fraction(self) -> float:
        """Share of wall time the training loop spent waiting for the next batch."""
        return self.wait_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "rows_per_s": self.rows_per_s,
            "wait_s": self.wait_s,
            "wall_s": self.wall_s,
            "wait_fraction": self.wait_fraction,
            "ddp_padded": self.ddp_padded,
            "ddp_dropped": self.ddp_dropped,
        }


class _EvenRanksIterator:
    """Keeps DDP ranks in step on streams, whose shards can hold different numbers of rows:
    before each batch the ranks agree (one all_reduce of a flag) whether every rank has one.
    "drop" stops all ranks when the first runs out (the others' extra batches are counted in
    ``stats.ddp_dropped``); "pad" lets a finished rank repeat its last batch until all are done
    (``stats.ddp_padded``). Either way no rank waits forever in a collective."""

    def __init__(self, it: Iterator[Any], policy: str, stats: LoaderStats) -> None:
        self._it, self._policy, self._stats = it, policy, stats
        self._last: Any = None
        self._done = False

    def __iter__(self) -> _EvenRanksIterator:
        return self

    def __next__(self) -> Any:
        import torch.distributed as dist

        batch: Any = None
        if not self._done:
            try:
                batch = next(self._it)
            except StopIteration:
                self._done = True
        # [ranks that have a batch now, ranks that finished without ever having one]
        flags = torch.tensor([0 if self._done else 1, int(self._done and self._last is None)])
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        have, empty = int(flags[0]), int(flags[1])
        world = dist.get_world_size()
        if have == 0 or (self._policy == "drop" and have < world):
            if not self._done:
                self._stats.ddp_dropped += 1 + sum(1 for _ in self._it)
                self._done = True
            raise StopIteration
        if empty:  # "pad" with a rank that has nothing to repeat: fail on every rank alike
            raise ConfigError(
                f"{empty} DDP rank(s) received no data this epoch (more ranks x workers than "
                "partitions or files?) so ddp='pad' has nothing to repeat; use ddp='drop' or "
                "fewer workers"
            )
        if self._done:  # "pad": others still have batches; repeat ours
            self._stats.ddp_padded += 1
            return self._last
        self._last = batch
        return batch


class _StatsIterator:
    def __init__(self, it: Iterator[Any], stats: LoaderStats) -> None:
        self._it = it
        self._stats = stats

    def __iter__(self) -> _StatsIterator:
        return self

    def __next__(self) -> Any:
        st = self._stats
        t = time.perf_counter()
        if st._t0 is None:
            st._t0 = t
        try:
            batch = next(self._it)
        finally:
            now = time.perf_counter()
            st.wait_s += now - t
            st.wall_s = now - st._t0
        st.batches += 1
        st.rows += batch_size_of(batch)
        return batch

    def __len__(self) -> int:
        return len(self._it)  # type: ignore[arg-type]
