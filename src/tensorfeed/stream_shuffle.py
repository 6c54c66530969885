"""The shuffle buffer of a stream that reads fixed splits, whose checkpoint moves to other numbers
of workers and ranks.

NOTE [ A shuffle buffer that regroups ]
A classic shuffle buffer hands out a random held row, so what a shard has delivered is a
scattered subset of its splits, and only a replay on the same topology can say which. Streams
that read fixed splits (MemoryStream chunks, lake row groups) shuffle in two steps instead:

1. Each split's rows are permuted by ``(seed, epoch, split)`` alone, never by the topology.
2. A shard opens its splits one after another and holds up to ``shuffle_buffer`` rows of them.
   Each time it holds more, it hands out the excess as a uniform random draw of the held rows,
   as the classic buffer does, except that a row drawn from split ``s`` is always ``s``'s *next*
   row in its permuted order. When the splits run out, the rest drains in random order.

So whatever a shard has handed out is, in each split, a prefix of that split's permuted order.
The shard's position stays a row count (a resume on the same topology replays the draws and
skips it, exactly as before), and which splits those rows came from follows from the splits'
sizes and the shard's RNG alone: ``regroup`` replays the draws as arithmetic, reading no data,
and turns each old shard's row count into rows done per split, the format that
``stream_splits`` moves between topologies. The new shards permute those splits the same way and
skip what is done. The shuffle within a split is a full permutation, so a buffer smaller than a
split still mixes the whole split; a shard holds its open splits whole while it reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from . import stream_splits
from .errors import SourceChangedError, StateError


class SplitSource(Protocol):
    """What a stream reading fixed splits gives the shuffle buffer."""

    shuffle_buffer: int
    seed: int

    def describe(self) -> str: ...

    def _splits_of(self, epoch: int, shard: int, num_shards: int) -> list[int] | None: ...

    def _split_rows(self, epoch: int, split: int) -> int: ...

    def _read_splits(self, epoch: int, splits: list[int]) -> Iterator[pa.Table]: ...


def split_order(seed: int, epoch: int, split: int, rows: int) -> np.ndarray:
    """The permuted order of one split's rows: a function of ``(seed, epoch, split)`` only."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(split), 0x5B17])
    return rng.permutation(rows)


def _draws_rng(seed: int, epoch: int, shard: int, num_shards: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), shard, num_shards, 0xD4A5])


class _Draws:
    """The buffer's arithmetic: which split each handed-out row comes from. Splits are numbered
    in the order they are opened; ``open`` returns the draws that opening a split of ``rows``
    rows causes, ``drain`` the rest. Iteration and ``regroup`` drive it the same way."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.live: list[int] = []  # opened splits with rows left
        self.left: dict[int, int] = {}
        self.opened = 0

    def _held(self) -> int:
        return sum(self.left[s] for s in self.live)

    def _draw(self, n: int, everything: bool) -> np.ndarray:
        held = np.repeat(np.array(self.live, dtype=np.int64), [self.left[s] for s in self.live])
        pick = (
            self.rng.permutation(len(held))
            if everything
            else self.rng.choice(len(held), size=n, replace=False)
        )
        labels = held[pick]
        for s, c in zip(*np.unique(labels, return_counts=True)):
            self.left[int(s)] -= int(c)
        self.live = [s for s in self.live if self.left[s]]
        return labels

    def open(self, rows: int) -> list[np.ndarray]:
        s = self.opened
        self.opened += 1
        if rows:
            self.live.append(s)
            self.left[s] = rows
        excess = self._held() - self.size
        return [self._draw(excess, False)] if excess > 0 else []

    def drain(self) -> list[np.ndarray]:
        return [self._draw(0, True)] if self.live else []


def _occurrence(labels: np.ndarray) -> np.ndarray:
    """For each label, how many times it occurred before it in ``labels``."""
    order = np.argsort(labels, kind="stable")
    ranks = np.empty(len(labels), dtype=np.int64)
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(labels)]))
    ranks[order] = np.arange(len(labels)) - group_start
    return ranks


def shuffled(
    src: SplitSource, epoch: int, shard: int, num_shards: int, position: Any
) -> Iterator[pa.Table]:
    """This shard's rows through the buffer, from ``position`` (rows handed out after the
    splits' ``done`` rows; NOTE [ A shuffle buffer that regroups ])."""
    skip, done = stream_splits.parse(position, f"a checkpoint position of {src.describe()}")
    splits = src._splits_of(epoch, shard, num_shards) or []
    todo = [(s, done.get(s, 0)) for s in splits if done.get(s, 0) != stream_splits.WHOLE]
    draws = _Draws(src.shuffle_buffer, _draws_rng(src.seed, epoch, shard, num_shards))
    tables: dict[int, pa.Table] = {}  # opened split number -> its rows, natural order
    orders: dict[int, np.ndarray] = {}  # -> its permuted order, less the rows done
    used: dict[int, int] = {}

    def hand_out(labels: np.ndarray) -> pa.Table:
        rows = np.empty(len(labels), dtype=np.int64)
        occ = _occurrence(labels)
        live = sorted(set(labels.tolist()))
        base, parts = 0, []
        for s in live:
            mask = labels == s
            rows[mask] = base + orders[s][used[s] + occ[mask]]
            used[s] += int(mask.sum())
            parts.append(tables[s])
            base += tables[s].num_rows
        out = (
            pa.concat_tables(parts).take(pa.array(rows))
            if len(parts) > 1
            else parts[0].take(pa.array(rows))
        )
        for s in live:
            if used[s] == len(orders[s]):
                del tables[s], orders[s], used[s]
        return out

    def emitted() -> Iterator[pa.Table]:
        reader = src._read_splits(epoch, [s for s, _ in todo])
        for (split, first), table in zip(todo, reader, strict=True):
            n = draws.opened
            if first > table.num_rows:
                raise SourceChangedError(
                    f"{src.describe()}: split {split} has {table.num_rows} rows, fewer than the "
                    f"{first} the checkpoint delivered of it"
                )
            order = split_order(src.seed, epoch, split, table.num_rows)[first:]
            if len(order):
                tables[n], orders[n], used[n] = table, order, 0
            for labels in draws.open(len(order)):
                yield hand_out(labels)
        for labels in draws.drain():
            yield hand_out(labels)

    yield from stream_splits.skip_rows(emitted(), skip)


def _rows_per_split(
    splits: list[tuple[int, int]],
    rows: int,
    size: int,
    rng: np.random.Generator,
    count: Callable[[int], int],
) -> dict[int, int]:
    """Which of ``splits`` (``(split, first)``) the first ``rows`` rows handed out came from."""
    draws = _Draws(size, rng)
    got: dict[int, int] = {}

    def take(labels: np.ndarray) -> bool:
        nonlocal rows
        labels = labels[:rows]
        for s, c in zip(*np.unique(labels, return_counts=True)):
            got[int(s)] = got.get(int(s), 0) + int(c)
        rows -= len(labels)
        return rows == 0

    for split, first in splits:
        if rows == 0:
            break
        for labels in draws.open(count(split) - first):
            if take(labels):
                break
    for labels in draws.drain():
        if rows == 0 or take(labels):
            break
    if rows:
        raise StateError(
            f"a shard's position is {rows} row(s) past the end of its splits (a checkpoint of "
            "other data?)"
        )
    return {splits[i][0]: c for i, c in got.items()}


def regroup(src: SplitSource, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
    """The positions of ``num_shards`` shards of a shuffled split stream covering what
    ``positions`` (one per old shard) had not delivered."""
    old = len(positions)
    where = src.describe()
    done: dict[int, int] = {}
    counts: dict[int, int] = {}

    def count(s: int) -> int:
        if s not in counts:  # a lake's filtered row group is read to count it: once
            counts[s] = src._split_rows(epoch, s)
        return counts[s]

    for k, pos in enumerate(positions):
        rows, base = stream_splits.parse(pos, f"{where}, shard {k} of {old}")
        done.update(base)
        splits = src._splits_of(epoch, k, old) or []
        todo = [(s, base.get(s, 0)) for s in splits if base.get(s, 0) != stream_splits.WHOLE]
        try:
            got = _rows_per_split(
                todo, rows, src.shuffle_buffer, _draws_rng(src.seed, epoch, k, old), count
            )
        except StateError as exc:
            raise StateError(f"{where}, shard {k} of {old}: {exc}") from None
        for s, first in todo:
            if s in got:
                d = first + got[s]
                done[s] = stream_splits.WHOLE if d >= count(s) else d
    out: list[Any] = []
    for k in range(num_shards):
        mine = src._splits_of(epoch, k, num_shards) or []
        out.append({"rows": 0, "done": {str(s): done[s] for s in mine if done.get(s, 0)}})
    return out
