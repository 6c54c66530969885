"""The samplers that draw a whole epoch at once by weight: ``WeightedSampler`` (given weights),
``BalancedSampler`` (by class) and ``HardExampleSampler`` (by recent loss). Each is an
``EpochSampler`` (``sampling.py``), so ``tfd.DataLoader`` batches, splits across ranks and resumes
it the same way; only the order differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import ConfigError, StateError
from .sampling import (
    EpochSampler,
    _digest_array,
    _unique_labels,
    read_column,
)

# NOTE [ Drawing samplers ]
# Weighted, balanced and hard-example samplers draw a whole epoch at once, for all ranks, from
# ``numpy.random.default_rng([seed, epoch, kind])``; the draw is then split by position across
# ranks (``share_positions``: rank r takes positions r, r + W, ...), so ranks get disjoint,
# equal shares of the same draw. Like EpochSampler, they count the indices yielded this epoch;
# ``state_dict()`` records that count and ``load_state_dict()`` makes the next ``iter()`` redo
# the same draw and continue after it, so a resumed epoch equals the uninterrupted one.


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
        self._start(True, seed, rank, world_size, ddp)

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

    def _sequence_length(self) -> int:
        return self._total()

    def _epoch_sequence(self) -> np.ndarray:
        return self._draw(self._rng())

    def _full_identity(self) -> dict[str, Any]:
        return {
            "sampler": type(self).__name__,
            **self._identity(),
            "seed": self.seed,
            "ddp": self.ddp,
        }

    def epoch_indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (what ``iter()`` yields from the start)."""
        return self._order()


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
        if self._epoch_losses is None or not self._resuming():
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
        mid_epoch = (self._yielded > 0 or self._segment.count() > 0) and not self.epoch_over()
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
