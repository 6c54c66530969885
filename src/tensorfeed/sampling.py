"""Samplers and the shard plan, all derived from explicit ``(seed, epoch, rank, worker)``.

NOTE [ Where randomness and shards come from ]
Nothing here touches the global RNGs. A shuffle is ``numpy.random.default_rng([seed, epoch])``;
a stream's shard is ``World.shard`` of ``World.num_shards`` (ranks x workers). The rank and world
size are read from ``torch.distributed`` in the process that owns the dataset; DataLoader workers
do not have a process group, so a dataset pickled for a ``spawn`` worker carries the values it saw
in its parent (see ``World.current``), and a ``fork`` worker inherits the initialised module state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

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
        if ddp not in ("pad", "drop"):
            raise ConfigError(f"ddp policy must be 'pad' or 'drop', got {ddp!r}")
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.ddp = ddp
        self.epoch = 0
        self.uneven = 0  # indices padded (ddp="pad") or dropped (ddp="drop") this epoch
        self._yielded = 0
        self._resume_at = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> np.ndarray:
        base = (
            epoch_permutation(self.num_items, self.seed, self.epoch)
            if self.shuffle
            else np.arange(self.num_items)
        )
        share, self.uneven = split_for_ranks(base, self.rank, self.world_size, self.ddp)
        return share

    def __len__(self) -> int:
        n, w = self.num_items, self.world_size
        if w == 1:
            return n
        return -(-n // w) if self.ddp == "pad" else n // w

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        for i in order[start:].tolist():
            self._yielded += 1
            yield i

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "yielded": self._yielded,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("num_items", "seed", "shuffle", "world_size"):
            if state.get(k) != getattr(self, k):
                raise StateError(
                    f"sampler state is from a different run: {k}={state.get(k)!r} in the state, "
                    f"{getattr(self, k)!r} here (a state dict from another dataset or config?)"
                )
        self.epoch = int(state["epoch"])
        self._resume_at = int(state["yielded"])
        self._yielded = self._resume_at


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


# --------------------------------------------------------------------------- drawing samplers
#
# NOTE [ Drawing samplers ]
# Weighted, balanced and hard-example samplers draw a whole epoch at once, for all ranks, from
# ``numpy.random.default_rng([seed, epoch, kind])``; the draw is then split by position across
# ranks (``split_for_ranks``: rank r takes positions r, r + W, ...), so ranks get disjoint,
# equal shares of the same draw. Like EpochSampler, they count the indices yielded this epoch;
# ``state_dict()`` records that count and ``load_state_dict()`` makes the next ``iter()`` redo
# the same draw and continue after it, so a resumed epoch equals the uninterrupted one.


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


def _state_mismatch(what: str, theirs: Any, ours: Any) -> StateError:
    return StateError(
        f"sampler state is from a different run: {what}={theirs!r} in the state, {ours!r} here "
        "(a state dict from another dataset or configuration?)"
    )


def _digest_array(values: np.ndarray) -> str:
    import hashlib

    arr = np.ascontiguousarray(values)
    h = hashlib.blake2b(digest_size=8)
    h.update(str(arr.dtype).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class _DrawSampler(EpochSampler):
    """Base of the samplers that draw an epoch at once (see NOTE [ Drawing samplers ]).

    It is an :class:`EpochSampler` (same ``set_epoch``, resume point and rank split), so
    ``tfd.DataLoader`` slices its epoch into whole batches the same way; only the order differs.
    """

    _kind = 0  # decorrelates the draws of different sampler classes with the same seed

    def __init__(  # EpochSampler.__init__ is not called: the epoch size comes from _total()
        self,
        seed: int,
        rank: int | None,
        world_size: int | None,
        ddp: str,
    ) -> None:
        if ddp not in ("pad", "drop"):
            raise ConfigError(f"ddp policy must be 'pad' or 'drop', got {ddp!r}")
        self.shuffle = True
        self.seed = int(seed)
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.ddp = ddp
        self.epoch = 0
        self.uneven = 0  # draws padded (ddp="pad") or dropped (ddp="drop") this epoch
        self._yielded = 0
        self._resume_at = 0

    # -- what a subclass provides -------------------------------------------------------------
    def _total(self) -> int:
        """How many indices one epoch draws, for all ranks together."""
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """The epoch's indices for all ranks (int64), drawn only from ``rng``."""
        raise NotImplementedError

    def _identity(self) -> dict[str, Any]:
        """What a state dict must agree on to be loadable here."""
        raise NotImplementedError

    # -- shared behaviour -----------------------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, self._kind])

    def _order(self) -> np.ndarray:
        share, self.uneven = split_for_ranks(
            self._draw(self._rng()), self.rank, self.world_size, self.ddp
        )
        return share

    def epoch_indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (what ``iter()`` yields from the start)."""
        return self._order()

    def __len__(self) -> int:
        n, w = self._total(), self.world_size
        if w == 1:
            return n
        return -(-n // w) if self.ddp == "pad" else n // w

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": type(self).__name__,
            **self._identity(),
            "seed": self.seed,
            "world_size": self.world_size,
            "epoch": self.epoch,
            "yielded": self._yielded,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expect = {"sampler": type(self).__name__, **self._identity()}
        expect.update(seed=self.seed, world_size=self.world_size)
        for k, ours in expect.items():
            if state.get(k) != ours:
                raise _state_mismatch(k, state.get(k), ours)
        self.epoch = int(state["epoch"])
        self._resume_at = int(state["yielded"])
        self._yielded = self._resume_at


def _check_weights(weights: Any, what: str = "weights") -> np.ndarray:
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights)
    if w.ndim != 1:
        raise ConfigError(f"{what} must be one-dimensional, got shape {w.shape}")
    if w.dtype == np.bool_ or not (
        np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)
    ):
        raise ConfigError(f"{what} must be numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    bad = ~np.isfinite(w)
    if bad.any():
        i = int(np.argmax(bad))
        raise ConfigError(f"{what}[{i}] is {float(w[i])!r}; every weight must be a finite number")
    neg = w < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise ConfigError(f"{what}[{i}] is {float(w[i])!r}; weights must be >= 0")
    if len(w) and not w.any():
        raise ConfigError(f"all {len(w)} {what} are zero; at least one must be positive")
    return w


def _weighted_draw(
    rng: np.random.Generator, p: np.ndarray, size: int, replacement: bool
) -> np.ndarray:
    """``size`` indices drawn with probabilities proportional to ``p`` (no global RNG)."""
    if size == 0 or len(p) == 0:
        return np.empty(0, dtype=np.int64)
    if replacement:
        cdf = np.cumsum(p)
        u = rng.random(size) * cdf[-1]
        last = int(np.flatnonzero(p)[-1])  # u can round up to cdf[-1]: clamp to a drawable index
        return np.minimum(np.searchsorted(cdf, u, side="right"), last).astype(np.int64)
    # Efraimidis-Spirakis: the `size` smallest Exp(1)/w keys are a weighted draw without
    # replacement; zero weights get an infinite key and are never drawn.
    with np.errstate(divide="ignore"):
        keys = rng.exponential(size=len(p)) / p
    chosen = np.argpartition(keys, size - 1)[:size] if size < len(p) else np.arange(len(p))
    return chosen[np.argsort(keys[chosen], kind="stable")].astype(np.int64)


class WeightedSampler(_DrawSampler):
    """Draws indices with probability proportional to ``weights`` (like torch's
    ``WeightedRandomSampler``), deterministically for ``(seed, epoch)``, split across DDP ranks,
    and checkpointable.

    ``num_samples`` draws per epoch (default: ``len(weights)``), for all ranks together.
    Without ``replacement`` every index comes up at most once per epoch, so ``num_samples`` may
    not exceed the number of positive weights.
    """

    _kind = 1

    def __init__(
        self,
        weights: Any,
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int = 0,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        ddp: str = "pad",
    ) -> None:
        super().__init__(seed, rank, world_size, ddp)
        self.weights = _check_weights(weights)
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        self.replacement = bool(replacement)
        if self.num_samples < 0:
            raise ConfigError(f"num_samples must be >= 0, got {self.num_samples}")
        positive = int(np.count_nonzero(self.weights))
        if not self.replacement and self.num_samples > positive:
            raise ConfigError(
                f"num_samples={self.num_samples} without replacement needs that many positive "
                f"weights, but only {positive} are positive"
            )
        self._fingerprint = _digest_array(self.weights)

    def _total(self) -> int:
        return self.num_samples

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        return _weighted_draw(rng, self.weights, self.num_samples, self.replacement)

    def _identity(self) -> dict[str, Any]:
        return {
            "num_items": len(self.weights),
            "num_samples": self.num_samples,
            "replacement": self.replacement,
            "weights": self._fingerprint,
        }


def _largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer quotas proportional to ``shares`` that sum exactly to ``total``."""
    exact = shares / shares.sum() * total
    quota = np.floor(exact).astype(np.int64)
    short = total - int(quota.sum())
    if short > 0:
        # ties broken by class order, so the quotas are deterministic
        order = np.argsort(-(exact - quota), kind="stable")
        quota[order[:short]] += 1
    return quota


class BalancedSampler(_DrawSampler):
    """Over- or undersamples classes so each epoch has the requested class proportions.

    ``labels`` is a sequence/array with one label per row, or the name of a column of
    ``dataset`` (read with ``dataset.column(name)``: just that column, never the rows)::

        BalancedSampler(train_labels)                                # equal classes
        BalancedSampler("label", dataset=ds, mode="under")
        BalancedSampler("label", dataset=ds, ratios={"cat": 2, "dog": 1})

    ``ratios`` (default: equal) maps each class to its relative share; classes left out of
    it are never drawn. The epoch size is, for ``mode="over"``, the smallest at which no class
    needs fewer rows than it has (every row of the largest-relative class is drawn once, the
    others are repeated), and for ``mode="under"`` the largest at which no class is repeated.
    ``num_samples`` sets the epoch size explicitly. Within a class, rows are drawn as whole
    shuffled passes (a class repeated k.3 times shows every row k or k+1 times), so the counts
    per class are exact: ``quota_c = round(total * ratio_c)`` (largest remainder).
    """

    _kind = 2

    def __init__(
        self,
        labels: Any,
        mode: str = "over",
        seed: int = 0,
        num_samples: int | None = None,
        *,
        dataset: Any = None,
        ratios: dict[Any, float] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        ddp: str = "pad",
    ) -> None:
        super().__init__(seed, rank, world_size, ddp)
        if mode not in ("over", "under"):
            raise ConfigError(f"mode must be 'over' or 'under', got {mode!r}")
        if isinstance(labels, str):
            if dataset is None:
                raise ConfigError(
                    f"labels={labels!r} is a column name: pass the dataset too "
                    f"(BalancedSampler({labels!r}, dataset=ds))"
                )
            values = read_column(dataset, labels, "BalancedSampler labels")
        else:
            values = np.asarray(
                labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels
            )
        if values.ndim != 1:
            raise ConfigError(f"labels must be one label per row, got shape {values.shape}")
        self.mode = mode
        self.classes, codes = _unique_labels(values)
        self._members = _group_members(codes, len(self.classes))
        counts = np.array([len(m) for m in self._members], dtype=np.int64)
        self.ratios = _class_ratios(self.classes, ratios)
        self.num_items = len(values)
        live = self.ratios > 0
        if num_samples is not None:
            if int(num_samples) < 0:
                raise ConfigError(f"num_samples must be >= 0, got {num_samples}")
            total = int(num_samples)
        elif not live.any() or self.num_items == 0:
            total = 0
        else:
            per_share = counts[live] / (self.ratios[live] / self.ratios[live].sum())
            total = int(np.ceil(per_share.max() - 1e-9) if mode == "over" else per_share.min())
        self.num_samples = total
        self.quotas = (
            _largest_remainder(total, self.ratios) if live.any() else np.zeros_like(counts)
        )
        self._fingerprint = _digest_array(codes)

    def class_counts(self) -> dict[Any, int]:
        """How many times each class is drawn per epoch (all ranks together)."""
        return {c: int(q) for c, q in zip(self.classes.tolist(), self.quotas)}

    def _total(self) -> int:
        return self.num_samples

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for members, quota in zip(self._members, self.quotas):
            if quota == 0:
                continue
            passes = -(-int(quota) // len(members))
            drawn = np.concatenate([rng.permutation(members) for _ in range(passes)])
            parts.append(drawn[:quota])
        if not parts:
            return np.empty(0, dtype=np.int64)
        return rng.permutation(np.concatenate(parts)).astype(np.int64)

    def _identity(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items,
            "num_samples": self.num_samples,
            "mode": self.mode,
            "labels": self._fingerprint,
        }


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


def _group_members(codes: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]].astype(np.int64) for c in range(k)]


def _class_ratios(classes: np.ndarray, ratios: dict[Any, float] | None) -> np.ndarray:
    if ratios is None:
        return np.ones(len(classes), dtype=np.float64)
    known = {c: i for i, c in enumerate(classes.tolist())}
    out = np.zeros(len(classes), dtype=np.float64)
    for cls, r in ratios.items():
        if cls not in known:
            raise ConfigError(
                f"ratios name class {cls!r}, which is not among the labels {sorted(known, key=repr)}"
            )
        if not np.isfinite(r) or r < 0:
            raise ConfigError(f"ratio of class {cls!r} is {r!r}; ratios must be finite and >= 0")
        out[known[cls]] = float(r)
    if not out.any():
        raise ConfigError("every ratio is zero; at least one class must have a positive ratio")
    return out


def _encode_floats(values: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _decode_floats(text: str, n: int, what: str) -> np.ndarray:
    import base64

    raw = base64.b64decode(text.encode("ascii"))
    if len(raw) != 4 * n:
        raise StateError(f"{what} in the state has {len(raw) // 4} entries, expected {n}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


class HardExampleSampler(_DrawSampler):
    """Draws the examples with the highest recent loss more often.

    Feed it losses with :meth:`update` (``indices`` are dataset indices, ``losses`` one value per
    index, e.g. ``F.cross_entropy(..., reduction="none")``). Each index keeps an exponential
    moving average of its loss (``smoothing`` is the weight of the old value); an index not seen
    yet counts as the mean of those seen. An epoch draws ``num_samples`` indices (default
    ``num_items``) with replacement, with probability::

        p_i = (1 - uniform) * s_i / sum(s) + uniform / num_items,   s_i = loss_i ** (1 / temperature)

    ``uniform`` (the floor, default 0.1) keeps every example reachable; ``temperature`` < 1
    sharpens towards the hardest examples, > 1 flattens. Until a loss is known the draw is
    uniform. The probabilities are fixed when an epoch starts: losses reported during epoch e
    shape epoch e + 1.

    The state dict holds the loss table (as base64 little-endian float32, NaN for "not seen",
    about 5.3 bytes per example) and the table the current epoch was drawn from when it is
    mid-epoch. With ``num_workers > 0`` also save :meth:`loop_state_dict` when checkpointing and
    restore it with :meth:`load_loop_state_dict` (NOTE [ Loss tables and worker snapshots ]).
    Under DDP every rank must hold the same table: pass ``all_ranks=True`` to
    :meth:`update` to gather every rank's losses (a collective: call it on every rank).
    """

    _kind = 3

    def __init__(
        self,
        num_items: int,
        seed: int = 0,
        num_samples: int | None = None,
        *,
        smoothing: float = 0.5,
        temperature: float = 1.0,
        uniform: float = 0.1,
        rank: int | None = None,
        world_size: int | None = None,
        ddp: str = "pad",
    ) -> None:
        super().__init__(seed, rank, world_size, ddp)
        if num_items < 0:
            raise ConfigError(f"num_items must be >= 0, got {num_items}")
        if not 0 <= smoothing < 1:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0 <= uniform <= 1:
            raise ConfigError(f"uniform must be in [0, 1], got {uniform}")
        self.num_items = int(num_items)
        self.num_samples = self.num_items if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise ConfigError(f"num_samples must be >= 0, got {self.num_samples}")
        self.smoothing, self.temperature, self.uniform = smoothing, temperature, uniform
        self.losses = np.full(self.num_items, np.nan)  # NaN: not seen yet
        self.updates = 0
        self._epoch_losses: np.ndarray | None = None  # the table this epoch was drawn from
        self._loop_state_loaded = False

    def update(self, indices: Any, losses: Any, *, all_ranks: bool = False) -> None:
        """Record the losses of ``indices`` (tensors, arrays or lists; same length)."""
        idx = np.asarray(
            indices.detach().cpu() if isinstance(indices, torch.Tensor) else indices
        ).reshape(-1)
        val = np.asarray(
            losses.detach().float().cpu() if isinstance(losses, torch.Tensor) else losses,
            dtype=np.float64,
        ).reshape(-1)
        if all_ranks:
            idx, val = _gather_all_ranks(idx, val)
        if len(idx) != len(val):
            raise ConfigError(f"update got {len(idx)} indices but {len(val)} losses")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_items):
            raise ConfigError(f"update got an index outside [0, {self.num_items})")
        bad = ~np.isfinite(val) | (val < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ConfigError(
                f"loss of index {int(idx[i])} is {float(val[i])!r}; losses must be finite and >= 0"
            )
        old = self.losses[idx]
        self.losses[idx] = np.where(
            np.isnan(old), val, self.smoothing * old + (1 - self.smoothing) * val
        )
        self.updates += 1

    def probabilities(self, losses: np.ndarray | None = None) -> np.ndarray:
        """The per-example draw probabilities the next epoch would use."""
        table = self.losses if losses is None else losses
        n = self.num_items
        seen = ~np.isnan(table)
        if n == 0:
            return np.empty(0)
        if not seen.any():
            return np.full(n, 1.0 / n)
        filled = np.where(seen, table, table[seen].mean())
        score = filled ** (1.0 / self.temperature)
        total = score.sum()
        hard = score / total if total > 0 and np.isfinite(total) else np.full(n, 1.0 / n)
        return (1 - self.uniform) * hard + self.uniform / n

    def _total(self) -> int:
        return self.num_samples

    def _order(self) -> np.ndarray:
        if self._epoch_losses is None or self._resume_at == 0:
            self._epoch_losses = self.losses.copy()
        return super()._order()

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        assert self._epoch_losses is not None
        p = self.probabilities(self._epoch_losses)
        return _weighted_draw(rng, p, self.num_samples, replacement=True)

    def _identity(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "num_samples": self.num_samples}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(self.loop_state_dict())
        mid_epoch = 0 < self._yielded < len(self)
        state["epoch_losses"] = (
            _encode_floats(self._epoch_losses)
            if mid_epoch and self._epoch_losses is not None
            else None
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self._loop_state_loaded:
            self._loop_state_loaded = False  # a newer table was restored explicitly: keep it
        else:
            self.load_loop_state_dict(state)
            self._loop_state_loaded = False
        epoch_losses = state.get("epoch_losses")
        self._epoch_losses = (
            None
            if epoch_losses is None
            else _decode_floats(epoch_losses, self.num_items, "epoch_losses")
        )

    # NOTE [ Loss tables and worker snapshots ]
    # With num_workers > 0 torchdata snapshots a sampler when a batch's indices go to a worker,
    # before the training loop has reported that batch's losses (or those of the batches still
    # in flight). The loss table is state of the *training loop*, so it can also be saved and
    # restored on its own, at the moment the checkpoint is written: loop_state_dict() /
    # load_loop_state_dict(). A table restored that way wins over the (older) one inside the
    # loader's snapshot, which is applied later, when the resumed loader starts iterating.

    def loop_state_dict(self) -> dict[str, Any]:
        """The loss table as of now (JSON-serialisable)."""
        return {"losses": _encode_floats(self.losses), "updates": self.updates}

    def load_loop_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss table saved by :meth:`loop_state_dict` (or :meth:`state_dict`)."""
        self.losses = _decode_floats(state["losses"], self.num_items, "losses")
        self.updates = int(state.get("updates", 0))
        self._loop_state_loaded = True


def _gather_all_ranks(idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return idx, val
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (idx.tolist(), val.tolist()))
    return (
        np.asarray([i for p in parts for i in p[0]], dtype=np.int64),
        np.asarray([v for p in parts for v in p[1]], dtype=np.float64),
    )
