"""Samplers and the shard plan, all derived from explicit ``(seed, epoch, rank, worker)``.

NOTE [ Where randomness and shards come from ]
Nothing here touches the global RNGs. A shuffle is ``numpy.random.default_rng([seed, epoch])``;
a stream's shard is ``World.shard`` of ``World.num_shards`` (ranks x workers). The rank and world
size are read from ``torch.distributed`` in the process that owns the dataset; DataLoader workers
do not have a process group, so a dataset pickled for a ``spawn`` worker carries the values it saw
in its parent (see ``World.current``), and a ``fork`` worker inherits the initialised module state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

from . import key_order
from .epoch_progress import Done, merge_ranks, share_positions
from .errors import ConfigError, StateError


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` from ``torch.distributed`` when a process group is up, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except (RuntimeError, ValueError):  # pragma: no cover - torch built without distributed
        pass
    return 0, 1


def resolve_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit (rank, world_size) where given, else torch.distributed's; validated."""
    r, w = dist_rank_world()
    rank = r if rank is None else int(rank)
    world_size = w if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in range for world_size {world_size}")
    return rank, world_size


@dataclass(frozen=True)
class World:
    """Where this process sits: DDP rank of world_size, DataLoader worker of num_workers."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def shard(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def num_shards(self) -> int:
        return self.world_size * self.num_workers

    @classmethod
    def current(cls, fallback: tuple[int, int] | None = None) -> World:
        """The world of the calling process. ``fallback`` is the (rank, world_size) captured in the
        parent, used inside a worker where torch.distributed is not initialised."""
        rank, size = dist_rank_world()
        if size == 1 and fallback is not None:
            rank, size = fallback
        info = get_worker_info()
        if info is None:
            return cls(rank, size, 0, 1)
        return cls(rank, size, info.id, info.num_workers)


def shard_seed(seed: int, epoch: int, rank: int = 0, worker: int = 0) -> int:
    """A 63-bit seed derived from (seed, epoch, rank, worker) through numpy's SeedSequence."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(rank), int(worker)])
    return int(
        ss.generate_state(2, dtype=np.uint32).astype(np.uint64).view(np.uint64)[0] >> np.uint64(1)
    )


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` items for ``(seed, epoch)``: same on every machine."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)]).permutation(n)


def split_for_ranks(
    indices: np.ndarray, rank: int, world_size: int, policy: str
) -> tuple[np.ndarray, int]:
    """This rank's share of ``indices`` so every rank gets the same count. ``policy`` "pad"
    repeats indices from the start; "drop" drops the tail. Returns (share, padded-or-dropped)."""
    if world_size == 1:
        return indices, 0
    n = len(indices)
    if policy == "pad":
        total = -(-n // world_size) * world_size
        extra = total - n
        if extra:
            reps = -(-extra // max(n, 1))
            indices = np.concatenate([indices, np.tile(indices, reps)[:extra]])
        return indices[rank::world_size], extra
    if policy == "drop":
        total = (n // world_size) * world_size
        return indices[:total][rank::world_size], n - total
    raise ConfigError(f"ddp policy must be 'pad' or 'drop', got {policy!r}")


class EpochSampler(Sampler[int]):
    """tensorfeed's default map-style sampler: sequential or shuffled from ``(seed, epoch)``,
    split across DDP ranks (pad or drop, counted in ``uneven``), and checkpointable.

    Call :meth:`set_epoch` each epoch (``tfd.DataLoader`` does) for a new order.
    """

    def __init__(
        self,
        num_items: int,
        shuffle: bool = False,
        seed: int = 0,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        ddp: str = "pad",
    ) -> None:
        if num_items < 0:
            raise ConfigError(f"num_items must be >= 0, got {num_items}")
        self.num_items = num_items
        self._start(shuffle, seed, rank, world_size, ddp)

    def _start(
        self, shuffle: bool, seed: int, rank: int | None, world_size: int | None, ddp: str
    ) -> None:
        """The state of a sampler before its first epoch (also the drawing samplers')."""
        if ddp not in ("pad", "drop"):
            raise ConfigError(f"ddp policy must be 'pad' or 'drop', got {ddp!r}")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.ddp = ddp
        self.epoch = 0
        self.uneven = 0  # indices padded (ddp="pad") or dropped (ddp="drop") this epoch
        self._yielded = 0  # positions of the current segment handed out
        self._resume_at = 0  # where the next iter() starts in its segment (a loaded state)
        self._segment = Done()  # what the current segment started from
        self._next_segment = Done()  # what the next iter() starts from (a loaded state)
        self._share_size = 0  # this rank's indices in the current segment
        self._loaded = False  # load_state_dict() ran and no iteration has begun since

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -- the epoch's sequence (NOTE [ Elastic map-style checkpoints ] in epoch_progress.py) -------
    def _sequence_length(self) -> int:
        return self.num_items

    # the rows' keys when the epoch is ordered by key (NOTE [ Continuing over changed data ])
    order_keys: np.ndarray | None = None

    def _epoch_sequence(self) -> np.ndarray:
        """Every rank's indices of this epoch, in order: a function of (seed, epoch) only (and
        of the keys, when ordered by them)."""
        if self.order_keys is not None:
            return key_order.sequence(self.order_keys, self.shuffle, self.seed, self.epoch)
        if self.shuffle:
            return epoch_permutation(self.num_items, self.seed, self.epoch)
        return np.arange(self.num_items)

    def _resuming(self) -> bool:
        return self._resume_at > 0 or self._next_segment.count() > 0

    def _order(self) -> np.ndarray:
        """This rank's indices in the segment the next iteration runs."""
        seq = self._epoch_sequence()
        positions, self.uneven = share_positions(
            len(seq), self._next_segment, self.rank, self.world_size, self.ddp
        )
        return seq[positions]

    def _begin_epoch(self) -> tuple[np.ndarray, int]:
        """Start an iteration: this rank's order and the position in it to start at."""
        order = self._order()
        self._segment, self._next_segment = self._next_segment, Done()
        start, self._resume_at, self._loaded = self._resume_at, 0, False
        self._yielded, self._share_size = start, len(order)
        return order, start

    def epoch_over(self) -> bool:
        """Whether the current iteration has handed out its whole share."""
        return self._yielded >= self._share_size

    def __len__(self) -> int:
        n, w = self._sequence_length(), self.world_size
        if w == 1:
            return n
        return -(-n // w) if self.ddp == "pad" else n // w

    def __iter__(self) -> Iterator[int]:
        order, start = self._begin_epoch()
        for i in order[start:].tolist():
            self._yielded += 1
            yield i

    # -- checkpoints --------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What a state dict must agree on to be loadable here."""
        return {"num_items": self.num_items, "shuffle": self.shuffle}

    def _full_identity(self) -> dict[str, Any]:
        return {**self._identity(), "seed": self.seed, "ddp": self.ddp}

    def state_dict(self) -> dict[str, Any]:
        """This rank's state: the segment it is in and how far into its share it got."""
        loaded = self._loaded  # a state loaded and not yet iterated: still where it said
        return {
            **self._full_identity(),
            "epoch": self.epoch,
            "world_size": self.world_size,
            "rank": self.rank,
            "segment": (self._next_segment if loaded else self._segment).as_dict(),
            "yielded": self._resume_at if loaded else self._yielded,
        }

    def merge_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """The job's state from every rank's :meth:`state_dict` (``states[r]`` from rank r): what
        is done, loadable on any number of ranks."""
        if not states:
            raise StateError("no rank states to merge")
        # a rank that loaded the job's state and has handed out nothing since reports that
        # state: it is rank r at the start of the segment that state begins
        states = [
            {
                **{k: v for k, v in st.items() if k != "done"},
                "segment": st["done"],
                "yielded": 0,
                "rank": r,
                "world_size": len(states),
            }
            if isinstance(st, dict) and "done" in st
            else st
            for r, st in enumerate(states)
        ]
        first = states[0]
        length = self._sequence_length()
        for r, st in enumerate(states):
            self._check_identity(st)
            for k in ("epoch", "segment"):
                if st.get(k) != first.get(k):
                    raise StateError(
                        f"rank {r}'s sampler state has {k}={st.get(k)!r}, rank 0's {first.get(k)!r}"
                    )
            if st.get("rank") != r or st.get("world_size") != len(states):
                raise StateError(
                    f"state {r} is from rank {st.get('rank')!r} of {st.get('world_size')!r}, "
                    f"expected rank {r} of {len(states)}"
                )
        start = Done.from_state(first.get("segment"), length, "sampler state['segment']")
        yielded = [_state_int(st, "yielded", 0, length) for st in states]
        done = merge_ranks(length, start, yielded, self.ddp)
        rank_only = ("world_size", "rank", "segment", "yielded")
        shared = {k: v for k, v in first.items() if k not in rank_only}  # a subclass's fields
        return {**shared, "epoch": _state_int(first, "epoch"), "done": done.as_dict()}

    def _check_identity(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise StateError(f"a sampler state must be a dict, got {type(state).__name__}")
        expect = self._full_identity()
        if "ddp" not in state:  # states from before elastic resume did not record it
            expect.pop("ddp")
        check_state(state, expect, "dataset or configuration")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a job's state (from :meth:`merge_states`: any number of ranks) or one rank's
        (:meth:`state_dict`: the same rank of the same number of ranks)."""
        self.epoch, self._next_segment, self._resume_at = self.parse_state(state)
        self._yielded, self._loaded = self._resume_at, True

    def parse_state(self, state: Any) -> tuple[int, Done, int]:
        """``(epoch, segment start, position in this rank's share)`` of a state dict, every
        field checked (a StateError names the first wrong one); nothing is changed."""
        self._check_identity(state)
        length = self._sequence_length()
        epoch = _state_int(state, "epoch")
        if "done" in state:
            return epoch, Done.from_state(state["done"], length, "sampler state['done']"), 0
        if "yielded" not in state:
            raise StateError(
                "the sampler state has neither 'done' (a job's state) nor 'yielded' (a rank's)"
            )
        world, rank = state.get("world_size"), state.get("rank", self.rank)
        if world != self.world_size or rank != self.rank:
            raise StateError(
                f"this sampler state is rank {rank!r} of {world!r} ranks, and this is rank "
                f"{self.rank} of {self.world_size}: to resume on another number of ranks, "
                "load the job's state (tfd.DataLoader.state_dict() under torch.distributed "
                "returns it on every rank)"
            )
        segment = state.get("segment", {"prefix": 0, "extra": []})
        done = Done.from_state(segment, length, "sampler state['segment']")
        share, _ = share_positions(length, done, self.rank, self.world_size, self.ddp)
        return epoch, done, _state_int(state, "yielded", 0, len(share))


class EpochBatchSampler:
    """Whole batches of an :class:`EpochSampler` as slices of its order (numpy arrays for
    tensorfeed datasets, lists otherwise), instead of one Python int at a time. Its state is the
    sampler's, so a checkpoint resumes at the exact batch."""

    def __init__(self, sampler: EpochSampler, batch_size: int, drop_last: bool, as_array: bool):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.as_array = as_array
        # set by tfd.DataLoader when the dataset is read in this process and can fetch ahead
        self.prefetch_hint: Callable[[Any], None] | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        sampler, bs = self.sampler, self.batch_size
        order, start = sampler._begin_epoch()
        stop = len(order) - (len(order) - start) % bs if self.drop_last else len(order)
        hint = self.prefetch_hint
        for s in range(start, stop, bs):
            chunk = order[s : min(s + bs, stop)]
            sampler._yielded += len(chunk)
            if hint is not None and s + bs < stop:
                hint(order[s + bs : min(s + 2 * bs, stop)])  # see sources/sql/dataset.py NOTE
            yield chunk if self.as_array else chunk.tolist()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def _state_int(state: dict[str, Any], key: str, lo: int = 0, hi: int | None = None) -> int:
    """``state[key]``, an int in ``[lo, hi]``, or a StateError naming the field."""
    v = state.get(key)
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise StateError(f"sampler state[{key!r}] must be an int, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise StateError(f"sampler state[{key!r}] must be {rng}, got {v}")
    return int(v)


def check_state(state: dict[str, Any], identity: dict[str, Any], other: str) -> None:
    """Refuse a sampler state dict whose ``identity`` entries differ from this sampler's: it
    comes from another ``other`` (dataset, lake ...) or configuration."""
    for k, ours in identity.items():
        if state.get(k) != ours:
            raise StateError(
                f"sampler state is from a different run: {k}={state.get(k)!r} in the state, "
                f"{ours!r} here (a state dict from another {other}?)"
            )


def seed_worker_generators(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators of the calling process from one seed."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's legacy global generator and torch (CPU and every CUDA
    device, when there is one) from ``seed``. Returns nothing and changes no other global
    setting (no deterministic-algorithm flags, no environment variables)."""
    seed = int(seed)
    seed_worker_generators(seed)
    if torch.cuda.is_available():  # torch.manual_seed seeds CUDA too; explicit for clarity
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------- label columns
# (read by the samplers in weighted_samplers.py and by the splits in splitting.py)


def read_column(dataset: Any, name: str, purpose: str) -> np.ndarray:
    """``dataset.column(name)`` (only that column is read) or a NotFoundError naming it."""
    from .errors import NotFoundError

    column = getattr(dataset, "column", None)
    where = dataset.describe() if hasattr(dataset, "describe") else type(dataset).__name__
    if not callable(column):
        raise ConfigError(
            f"{purpose} names column {name!r}, but {where} cannot read one column "
            "(a tensorfeed dataset can); pass the values as an array instead"
        )
    try:
        values = column(name)
    except (KeyError, LookupError) as exc:
        if isinstance(exc, NotFoundError):
            raise
        raise NotFoundError(f"{purpose}: column {name!r} is not in {where}") from exc
    return np.asarray(values)


def _digest_array(values: np.ndarray) -> str:
    import hashlib

    arr = np.ascontiguousarray(values)
    h = hashlib.blake2b(digest_size=8)
    h.update(str(arr.dtype).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _unique_labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == object:
        # strings/bytes/None from Arrow: unique by value, sorted by repr for a stable order
        lookup: dict[Any, int] = {}
        codes = np.fromiter(
            (lookup.setdefault(v, len(lookup)) for v in values.tolist()), np.int64, len(values)
        )
        keys = list(lookup)
        order = sorted(range(len(keys)), key=lambda i: (type(keys[i]).__name__, repr(keys[i])))
        remap = np.empty(len(keys), dtype=np.int64)
        remap[order] = np.arange(len(keys))
        classes = np.empty(len(keys), dtype=object)
        classes[:] = [keys[i] for i in order]
        return classes, remap[codes] if len(codes) else codes
    classes, codes = np.unique(values, return_inverse=True)
    return classes, codes.reshape(-1).astype(np.int64)
