"""Splits (train/val/test) derived from a stable hash of each row's key, and filtered streams.

NOTE [ How a row finds its split ]
Every row gets ``u = hash(key, seed) / 2**64`` in [0, 1): splitmix64 of the key's 64-bit
pattern for integers, floats and timestamps, BLAKE2b of the encoded value for strings and bytes
(never Python's salted ``hash()``), so the same key lands in the same split on every run and
machine, whatever the row order. The key is ``key=``, else the dataset's own ``key`` attribute
(SQL datasets have one), else the row position (in-memory data; then the split follows the
position, not the content). ``group=`` hashes the group column instead, so all rows of a group
share ``u`` and therefore a split.

* Without ``stratify`` a row goes to split j when ``u`` falls in ``[c_j, c_{j+1})`` (the
  cumulative fractions). Each row's split depends on its own key only: rows added later never
  move others, and the rule is a per-row predicate a source could push down into a query. The
  split sizes are binomial around the fractions (exact in expectation).
* With ``stratify`` the units (rows, or groups) of each class are ranked by ``u`` and cut at the
  fractions of the class's row count, so every split gets the class proportions to within one
  unit. A group with rows of several classes is stratified by its most frequent class.

For map-style datasets only ``dataset.column(...)`` of the key/group/label column is read (no
row is materialised); each split is a :class:`Subset` holding a numpy index array. For streams
each split is a stream that filters every table by the same rule.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .columns import RowLocator
from .dataset import MapDataset, StreamDataset, _digest, normalize_indices
from .errors import ConfigError, NotFoundError, StateError
from .sampling import World, _digest_array, _unique_labels, read_column

# --------------------------------------------------------------------------- stable hashing

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN  # uint64 arithmetic wraps, as splitmix64 wants
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _value_bits(values: np.ndarray) -> np.ndarray:
    """Each value as 64 stable bits (uint64): the number itself, or a digest of its bytes."""
    v = np.asarray(values)
    if v.dtype == np.bool_ or np.issubdtype(v.dtype, np.integer):
        return v.astype(np.int64).view(np.uint64) if v.dtype != np.uint64 else v
    if np.issubdtype(v.dtype, np.floating):
        f = v.astype(np.float64) + 0.0  # -0.0 -> 0.0
        return f.view(np.uint64)
    if np.issubdtype(v.dtype, np.datetime64) or np.issubdtype(v.dtype, np.timedelta64):
        return v.view(np.int64).view(np.uint64)
    items = v.tolist()
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        return np.asarray(items, dtype=np.int64).view(np.uint64)
    return np.fromiter((_digest_value(x) for x in items), dtype=np.uint64, count=len(items))


def _digest_value(x: Any) -> int:
    if x is None:
        data = b"n"
    elif isinstance(x, str):
        data = b"s" + x.encode("utf-8")
    elif isinstance(x, bytes | bytearray | memoryview):
        data = b"b" + bytes(x)
    else:
        data = b"r" + repr(x).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def stable_hash(values: Any, seed: int = 0) -> np.ndarray:
    """A uint64 per value, the same on every run and machine for the same ``(value, seed)``."""
    bits = _value_bits(np.asarray(values))
    salt = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return _splitmix64(_splitmix64(bits) ^ salt)


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes -> floats in [0, 1) (top 53 bits)."""
    return (hashes >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


# --------------------------------------------------------------------------- fractions


def _check_fractions(fractions: Any) -> tuple[list[str], np.ndarray]:
    if not isinstance(fractions, Mapping) or not fractions:
        raise ConfigError(
            "fractions must be a non-empty dict of split name -> fraction, e.g. "
            '{"train": 0.8, "val": 0.1, "test": 0.1}'
        )
    names = [str(k) for k in fractions]
    values = []
    for name, f in fractions.items():
        if isinstance(f, bool) or not isinstance(f, int | float | np.integer | np.floating):
            raise ConfigError(f"fraction of split {name!r} must be a number, got {f!r}")
        if not math.isfinite(f) or f < 0:
            raise ConfigError(f"fraction of split {name!r} is {f!r}; fractions must be >= 0")
        values.append(float(f))
    total = math.fsum(values)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1, but {dict(fractions)} sum to {total!r}")
    return names, np.asarray(values, dtype=np.float64)


def _cuts(fr: np.ndarray) -> np.ndarray:
    """Inner cut points of the cumulative fractions (k - 1 of them for k splits)."""
    return np.cumsum(fr)[:-1]


# --------------------------------------------------------------------------- assignment


def assign_splits(
    keys: np.ndarray,
    fractions: np.ndarray,
    seed: int = 0,
    labels: np.ndarray | None = None,
    grouped: bool = False,
) -> np.ndarray:
    """The split number of each row (see NOTE [ How a row finds its split ]).

    ``keys`` are the hashed values (row keys, or group values when ``grouped``); ``labels``
    turns on stratification."""
    u = unit_interval(stable_hash(keys, seed))
    cuts = _cuts(fractions)
    if labels is None:
        return np.searchsorted(cuts, u, side="right").astype(np.int64)
    if grouped:
        return _stratified_groups(keys, u, labels, cuts)
    _, codes = _unique_labels(np.asarray(labels))
    return _stratified_units(u, codes, np.ones(len(u)), cuts)


def _stratified_units(
    u: np.ndarray, codes: np.ndarray, sizes: np.ndarray, cuts: np.ndarray
) -> np.ndarray:
    """Rank units by u within each class; a unit's split is where the midpoint of its rows
    falls in the class's cumulative row count (exact proportions to within one unit)."""
    n = len(u)
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    order = np.lexsort((u, codes))
    sc, ss = codes[order], sizes[order]
    cum = np.cumsum(ss)
    starts = np.searchsorted(sc, sc, side="left")  # first position of each unit's class
    ends = np.searchsorted(sc, sc, side="right")
    before = np.where(starts > 0, cum[starts - 1], 0.0)
    class_total = cum[ends - 1] - before
    mid = (cum - before - ss / 2.0) / class_total
    out[order] = np.searchsorted(cuts, mid, side="right")
    return out


def _stratified_groups(
    groups: np.ndarray, u: np.ndarray, labels: np.ndarray, cuts: np.ndarray
) -> np.ndarray:
    _, gcodes = _unique_labels(np.asarray(groups))
    _, lcodes = _unique_labels(np.asarray(labels))
    n_groups = int(gcodes.max()) + 1 if len(gcodes) else 0
    n_labels = int(lcodes.max()) + 1 if len(lcodes) else 0
    # most frequent label of each group (ties: the smallest label)
    pair = gcodes * n_labels + lcodes
    counts = np.bincount(pair, minlength=n_groups * n_labels).reshape(n_groups, n_labels)
    group_label = counts.argmax(axis=1)
    sizes = counts.sum(axis=1).astype(np.float64)
    group_u = np.empty(n_groups)
    group_u[gcodes] = u
    group_split = _stratified_units(group_u, group_label, sizes, cuts)
    return group_split[gcodes]


# --------------------------------------------------------------------------- Subset


class Subset(MapDataset):
    """The rows ``indices`` of a tensorfeed map-style dataset, as a dataset of its own.

    Batches are still fetched in one round trip by the parent (``__getitems__``), with the
    parent's sample shape, transforms and error messages (rows named by their parent index);
    ``column()`` reads the parent's column; ``fingerprint()`` covers the parent and the indices.
    """

    def __init__(self, dataset: MapDataset, indices: Sequence[int] | np.ndarray) -> None:
        if not isinstance(dataset, MapDataset):
            raise ConfigError(
                f"Subset needs a tensorfeed map-style dataset, not {type(dataset).__name__} "
                "(use torch.utils.data.Subset for other datasets)"
            )
        self.dataset = dataset
        self.indices = normalize_indices(np.asarray(indices, dtype=np.int64), len(dataset))
        self.spec = dataset.spec

    @property
    def key(self) -> str | None:
        return getattr(self.dataset, "key", None)

    def _num_rows(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: Sequence[int]) -> Any:
        # the parent's own batch path (one round trip; in-memory data keeps its tensor fast path)
        return self.dataset.__getitems__(self.indices[normalize_indices(indices, len(self))])

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        return self.dataset._fetch(self.indices[indices])

    def _batch(self, table: pa.Table, indices: np.ndarray) -> Any:
        return self.dataset._batch(table, self.indices[indices])

    def _locator(self, indices: np.ndarray) -> RowLocator:
        return self.dataset._locator(self.indices[indices])

    def _before_workers(self) -> None:
        hook = getattr(self.dataset, "_before_workers", None)
        if callable(hook):
            hook()

    def describe(self) -> str:
        return self.dataset.describe()

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.dataset.column(name))[self.indices]

    def fingerprint(self) -> str:
        return _digest(["Subset", self.dataset.fingerprint(), _digest_array(self.indices)])

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, rows={len(self)})"


def _subset(dataset: Any, indices: np.ndarray) -> Any:
    if isinstance(dataset, MapDataset):
        return Subset(dataset, indices)
    return torch.utils.data.Subset(dataset, indices.tolist())


# --------------------------------------------------------------------------- split()


def split(
    dataset: Any,
    fractions: Mapping[str, float],
    seed: int = 0,
    stratify: str | None = None,
    group: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Split ``dataset`` into named parts, e.g. ``{"train": 0.8, "val": 0.1, "test": 0.1}``.

    ``stratify="label"`` keeps each class's proportion in every split; ``group="user_id"``
    keeps all rows of a group in one split; ``key`` names the column that identifies a row
    (default: the dataset's ``key`` attribute, else the row position). The assignment is a hash
    of the key (see NOTE [ How a row finds its split ]): the same on every run and machine and
    independent of row order. Map-style datasets give :class:`Subset` s (only the key, group
    and label columns are read); streams give filtered streams (``stratify`` is not available
    there). Returns ``{name: dataset}`` in the order of ``fractions``.
    """
    names, fr = _check_fractions(fractions)
    if isinstance(dataset, StreamDataset):
        if stratify is not None:
            raise ConfigError(
                "stratify= needs every label before assigning a split, which a stream cannot "
                "give; split a stream by key or group (the hash keeps class proportions in "
                "expectation), or split a map-style dataset"
            )
        column = group or key or _key_attribute(dataset)
        if column is None:
            raise ConfigError(
                f"splitting the stream {dataset.describe()} needs key= (a column that identifies "
                "a row) or group=: a stream has no stable row position"
            )
        return {
            name: SplitStream(dataset, column, fr, j, seed, name) for j, name in enumerate(names)
        }
    n = len(dataset)
    if group is not None:
        keys = read_column(dataset, group, "split group")
    else:
        key = key or _key_attribute(dataset)
        keys = read_column(dataset, key, "split key") if key else np.arange(n, dtype=np.int64)
    labels = read_column(dataset, stratify, "split stratify") if stratify is not None else None
    assignment = assign_splits(keys, fr, seed, labels, grouped=group is not None)
    return {name: _subset(dataset, np.flatnonzero(assignment == j)) for j, name in enumerate(names)}


def _key_attribute(dataset: Any) -> str | None:
    key = getattr(dataset, "key", None)
    return key if isinstance(key, str) else None


def random_split(
    dataset: Any,
    lengths: Sequence[int | float],
    generator: torch.Generator | None = None,
) -> list[Any]:
    """Like ``torch.utils.data.random_split``: ``lengths`` are counts summing to ``len(dataset)``
    or fractions summing to 1 (the remainder is spread round-robin, as torch does). With the
    same ``generator`` the parts hold the same indices as torch's; without one the split is
    deterministic (seed 0) instead of using the global RNG. Map-style tensorfeed datasets give
    :class:`Subset` s; other datasets give ``torch.utils.data.Subset`` s."""
    if isinstance(dataset, StreamDataset):
        raise ConfigError(
            "random_split needs len(dataset); split a stream with tfd.split(stream, ..., key=...)"
        )
    n = len(dataset)
    counts = _lengths_to_counts(list(lengths), n)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=gen).numpy()
    bounds = list(itertools.accumulate(counts))
    return [_subset(dataset, order[end - c : end]) for end, c in zip(bounds, counts)]


def _lengths_to_counts(lengths: list[int | float], n: int) -> list[int]:
    for i, x in enumerate(lengths):
        if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
            raise ConfigError(f"lengths[{i}] must be a number, got {x!r}")
        if not math.isfinite(x) or x < 0:
            raise ConfigError(f"lengths[{i}] is {x!r}; lengths must be >= 0")
    if all(isinstance(x, int | np.integer) for x in lengths) and sum(lengths) == n:
        return [int(x) for x in lengths]
    total = math.fsum(float(x) for x in lengths)
    if abs(total - 1.0) <= 1e-6 and all(x <= 1 for x in lengths):
        counts = [math.floor(n * float(f)) for f in lengths]
        for i in range(n - sum(counts)):  # torch spreads the remainder round-robin
            counts[i % len(counts)] += 1
        return counts
    raise ConfigError(
        f"lengths {lengths} must be counts summing to the dataset's {n} rows "
        "or fractions summing to 1"
    )


# --------------------------------------------------------------------------- filtered streams


_CARRYING = {"inner", "kept", "carry"}  # a regrouped position of a replayed filtered stream


class FilteredStream(StreamDataset):
    """Base of streams that keep some rows of another stream (splits, class balancing).

    NOTE [ Checkpoints of filtered streams ]
    When the inner stream's position is a row count, a filtered stream's position counts the
    rows *it* delivered: a resume replays the shard of the inner stream from its start (same
    ``(seed, epoch, shard)``, so the same tables and the same filter decisions) and skips that
    many kept rows. When the inner stream has its own positions (Kafka offsets), the position
    is the inner one, advanced over the delivered rows; that is exact only for filters that are
    a pure function of the row (the split filter), so :class:`BalancedStream` refuses it.

    On other numbers of workers and ranks (NOTE [ Elastic stream checkpoints ]) an inner
    position regroups as the inner stream's does; so does a count of kept rows: each old shard
    of the inner stream is replayed with the filter up to its last kept row, giving the inner
    position there, and the inner stream regroups those. A new shard's position is ``{"inner":
    its inner position, "kept": rows kept since, "carry": the filter's state to start from}``
    (BalancedStream carries the class counts seen so far, summed over the old shards; its new
    shards then draw on their own). That reads again what the old shards delivered, once per move.
    """

    def __init__(self, stream: StreamDataset) -> None:
        if not isinstance(stream, StreamDataset):
            raise ConfigError(f"expected a tensorfeed stream, got {type(stream).__name__}")
        self.inner = stream
        self.spec = stream.spec
        self.seed = stream.seed
        self.epoch = stream.epoch
        self.shuffle_buffer = 0  # the inner stream shuffles; filtering keeps its order

    @property
    def key(self) -> str | None:
        return _key_attribute(self.inner)

    def _replays(self) -> bool:
        return isinstance(self.inner._start_position(), int)

    def _start_position(self) -> Any:
        return 0 if self._replays() else self.inner._start_position()

    def _advance(self, position: Any, table: pa.Table) -> Any:
        if not self._replays():
            return self.inner._advance(position, table)
        if isinstance(position, dict):
            return {**position, "kept": position["kept"] + table.num_rows}
        return position + table.num_rows

    def _replay_position(self, position: Any) -> tuple[Any, int, Any]:
        """``(inner position to replay from (None: the start), kept rows to skip, the filter's
        carried state)``, checked."""
        if isinstance(position, int) and not isinstance(position, bool) and position >= 0:
            return None, position, None
        if isinstance(position, dict) and set(position) in ({"inner", "kept"}, _CARRYING):
            kept = position["kept"]
            if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0:
                return position["inner"], kept, position.get("carry")
        raise StateError(
            f"a checkpoint position of {self.describe()} must be a count of rows >= 0 or "
            f"{{'inner': position, 'kept': int >= 0, 'carry': ...}}, got {position!r}"
        )

    def _locator(self, table: pa.Table) -> RowLocator:
        return self.inner._locator(table)

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        """NOTE [ Checkpoints of filtered streams ]: the inner stream's positions regroup as its
        own; counts of kept rows through a replay of each old shard."""
        if not self._replays():
            return self.inner._regroup(epoch, positions, num_shards)
        old = len(positions)
        replayed = [self._inner_position(epoch, k, old, p) for k, p in enumerate(positions)]
        carry = self._merge_carried([c for _, c in replayed])
        moved = self.inner._regroup(epoch, [p for p, _ in replayed], num_shards)
        return [{"inner": p, "kept": 0, "carry": carry} for p in moved]

    def _inner_position(
        self, epoch: int, shard: int, num_shards: int, position: Any
    ) -> tuple[Any, Any]:
        """The inner position of old shard ``shard`` just after its last kept row, and what its
        filter carries from there."""
        start, kept, carry = self._replay_position(position)
        inner_pos = self.inner._start_position() if start is None else start
        world = World(0, 1, shard, num_shards)
        state = self._shard_state(world, epoch, carry)
        if kept == 0:
            return inner_pos, self._carried(state)
        for cb in self.inner._shard_batches(world, epoch, start):
            t = cb.table
            mask = self._keep(t, state)
            n = int(mask.sum())
            if n < kept:
                kept -= n
                inner_pos = self.inner._advance(inner_pos, t)
                continue
            last = int(np.flatnonzero(mask)[kept - 1])  # the shard's last kept row
            return self.inner._advance(inner_pos, t.slice(0, last + 1)), self._carried(state)
        raise StateError(
            f"{self.describe()}: shard {shard} of {num_shards} has a position {kept} kept "
            "row(s) past the end of its rows (a checkpoint of other data?)"
        )

    def _carried(self, state: Any) -> Any:
        """What a shard's filter state carries to the shards that take over its splits."""
        return None

    def _merge_carried(self, carried: list[Any]) -> Any:
        return None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.inner.set_epoch(epoch)

    def _keep(self, table: pa.Table, state: Any) -> np.ndarray:
        """A boolean mask of the rows of ``table`` to keep."""
        raise NotImplementedError

    def _shard_state(self, world: World, epoch: int, carry: Any = None) -> Any:
        """Per-shard, per-epoch state of the filter (an RNG, running counts), made fresh from
        what a regroup carried (``_carried``)."""
        return None

    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        inner_position, skip, carry = (
            self._replay_position(position) if self._replays() else (position, 0, None)
        )
        state = self._shard_state(world, epoch, carry)
        for cb in self.inner._shard_batches(world, epoch, inner_position):
            t = cb.table
            mask = self._keep(t, state)
            kept = t if mask.all() else t.filter(pa.array(mask))
            if skip >= kept.num_rows:
                skip -= kept.num_rows
                continue
            yield kept.slice(skip) if skip else kept
            skip = 0


def _table_column(table: pa.Table, name: str, source: str, purpose: str) -> np.ndarray:
    if name not in table.column_names:
        raise NotFoundError(
            f"{purpose}: column {name!r} is not in {source}; available: {sorted(table.column_names)}"
        )
    return table.column(name).to_numpy(zero_copy_only=False)


class SplitStream(FilteredStream):
    """One split of a stream: the rows whose ``column`` hashes into split ``index``."""

    def __init__(
        self,
        stream: StreamDataset,
        column: str,
        fractions: np.ndarray,
        index: int,
        seed: int,
        name: str,
    ) -> None:
        super().__init__(stream)
        self.column_name = column
        self.fractions = np.asarray(fractions, dtype=np.float64)
        self.index = int(index)
        self.split_seed = int(seed)
        self.name = name

    def describe(self) -> str:
        return f"{self.inner.describe()} [split {self.name!r}]"

    def _keep(self, table: pa.Table, state: Any) -> np.ndarray:
        keys = _table_column(table, self.column_name, self.inner.describe(), "split")
        return assign_splits(keys, self.fractions, self.split_seed) == self.index
