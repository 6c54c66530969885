"""The locality-aware shuffle of a lake: shuffle row groups, then rows inside a window of them.

NOTE [ How random is the locality shuffle ]
An epoch's order is built from ``(seed, epoch)`` only:
1. the row groups are put in a uniformly random order;
2. consecutive runs of ``window`` row groups (in that order) form windows;
3. the rows of each window are put in a uniformly random order, and windows follow each other.
Every row appears exactly once per epoch, and every row group is decoded once per epoch (per
process) as long as the dataset's row-group cache holds ``window`` decoded row groups.

Compared with an exact uniform shuffle (``EpochSampler(len(ds), shuffle=True)``):
- a batch of B rows is a uniform sample of one window (``window * rows_per_group`` rows), not of
  the whole lake: batches mix ``window`` row groups instead of all of them;
- two rows of the same row group are never more than one window apart in the order (uniform:
  anywhere), so what was written together stays close: sort or cluster the lake by an arbitrary
  key (not by the label or time) if that matters, or raise ``window``;
- which row groups share a window changes every epoch, and the order of the row groups is itself
  uniform, so over epochs every pair of rows can meet.
With ``window`` >= the number of row groups this *is* an exact uniform shuffle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from ...errors import ConfigError
from ...sampling import check_state, resolve_rank_world


def locality_order(unit_rows: np.ndarray, seed: int, epoch: int, window: int) -> np.ndarray:
    """The epoch's order of dataset indices (see NOTE [ How random is the locality shuffle ])."""
    rows = np.asarray(unit_rows, dtype=np.int64)
    starts = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(rows, out=starts[1:])
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x10CA1])
    groups = rng.permutation(len(rows))
    out = np.empty(int(starts[-1]), np.int64)
    pos = 0
    for w in range(0, len(groups), window):
        us = groups[w : w + window]
        idx = (
            np.concatenate([np.arange(starts[u], starts[u + 1]) for u in us])
            if len(us)
            else np.zeros(0, np.int64)
        )
        out[pos : pos + len(idx)] = idx[rng.permutation(len(idx))]
        pos += len(idx)
    return out


class LocalitySampler(Sampler[int]):
    """A checkpointable sampler over a :class:`~tensorfeed.LakeDataset` that shuffles row groups,
    then rows inside a window of ``window`` row groups (see NOTE above).

    Use it as ``tfd.DataLoader(ds, batch_size=..., sampler=ds.locality_sampler(seed=0))``; call
    :meth:`set_epoch` each epoch (``tfd.DataLoader`` does). With ``batch_size`` it is a batch
    sampler yielding numpy arrays of indices: ``tfd.DataLoader(ds, batch_sampler=...)`` then
    skips per-index Python work entirely (the fastest way to read a shuffled lake). Under DDP each rank takes a contiguous
    share of the epoch's order (so ranks read different windows), evened out by ``ddp``
    ("pad" repeats indices from the start, "drop" drops the tail).
    """

    def __init__(
        self,
        unit_rows: np.ndarray,
        seed: int = 0,
        window: int = 8,
        *,
        batch_size: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        ddp: str = "pad",
    ) -> None:
        if not isinstance(window, int | np.integer) or window < 1:
            raise ConfigError(f"window must be a positive number of row groups, got {window!r}")
        if ddp not in ("pad", "drop"):
            raise ConfigError(f"ddp policy must be 'pad' or 'drop', got {ddp!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.unit_rows = np.asarray(unit_rows, dtype=np.int64)
        self.num_items = int(self.unit_rows.sum())
        self.seed = int(seed)
        self.window = int(window)
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.ddp = ddp
        self.epoch = 0
        self._resume_at = 0
        self._start = 0
        self._live: Any = None  # the running epoch's iterator (counts what it handed out)
        self._total = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _share(self) -> np.ndarray:
        order = locality_order(self.unit_rows, self.seed, self.epoch, self.window)
        n, w = len(order), self.world_size
        if w == 1:
            return order
        if self.ddp == "pad":
            per = -(-n // w)
            extra = per * w - n
            if extra:
                order = np.concatenate([order, np.resize(order, extra)]) if n else order
        else:
            per = n // w
        return order[self.rank * per : (self.rank + 1) * per]

    def _share_len(self) -> int:
        n, w = self.num_items, self.world_size
        if w == 1:
            return n
        return -(-n // w) if self.ddp == "pad" else n // w

    def __len__(self) -> int:
        n = self._share_len()
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = self._share()
        start, self._resume_at = self._resume_at, 0
        rest = order[start:]
        if self.batch_size is not None:
            bs = self.batch_size
            stop = len(rest) - len(rest) % bs if self.drop_last else len(rest)
            items: list[Any] = [rest[i : i + bs] for i in range(0, stop, bs)]
            self._start, self._total = start, len(items)
        else:
            items = rest.tolist()
            self._start, self._total = start, len(items)
        # a list iterator runs at C speed and knows how much is left: no per-index Python code
        self._live = iter(items)
        return self._live  # type: ignore[no-any-return]

    @property
    def _yielded(self) -> int:
        if self._live is None:
            return self._resume_at
        done = self._total - self._live.__length_hint__()
        return self._start + (done * self.batch_size if self.batch_size is not None else done)

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items,
            "seed": self.seed,
            "window": self.window,
            "epoch": self.epoch,
            "yielded": self._yielded,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = ("num_items", "seed", "window", "world_size")
        check_state(state, {k: getattr(self, k) for k in keys}, "lake or config")
        self.epoch = int(state["epoch"])
        self._resume_at = int(state["yielded"])
        self._live = None
