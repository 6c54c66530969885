"""Which positions of an epoch are done, and each rank's share of the rest.

NOTE [ Elastic map-style checkpoints ]
A map-style epoch is one sequence of indices for all ranks, a function of ``(seed, epoch)`` only
(``EpochSampler``: a permutation; the drawing samplers: a draw). Ranks take positions of the
sequence strided (rank r of R: positions r, r + R, ...), so what has been delivered is a set of
positions, and it does not depend on how many ranks or workers delivered it. A checkpoint records
that set as :class:`Done`: every position below ``prefix``, plus the few ``extra`` positions past
it (ranks a batch or two ahead of the others). Its size is bounded by how far ranks drift apart,
never by the rows delivered.

Resuming on any number of ranks R' starts a *segment*: the positions not done, in sequence order,
split strided across the R' ranks, padded (``ddp="pad"``) with the epoch's first positions (as
the uninterrupted epoch pads) or cut (``"drop"``). A rank's state is then ``(segment start,
positions yielded in it)``; the states of all ranks merge into a new :class:`Done`. On the same
topology with ranks in step, the segment continues exactly where the uninterrupted epoch would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import StateError


@dataclass(frozen=True)
class Done:
    """The positions of an epoch's sequence already delivered (see NOTE above)."""

    prefix: int = 0
    extra: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "extra": list(self.extra)}

    @classmethod
    def from_state(cls, value: Any, length: int, where: str) -> Done:
        """Read and check ``{"prefix": int, "extra": [int, ...]}`` of an epoch of ``length``."""
        if not isinstance(value, dict) or set(value) != {"prefix", "extra"}:
            raise StateError(
                f"{where} must be {{'prefix': int, 'extra': [int, ...]}}, got {value!r}"
            )
        prefix, extra = value["prefix"], value["extra"]
        if not _is_int(prefix) or not 0 <= prefix <= length:
            raise StateError(f"{where}['prefix'] must be an int in [0, {length}], got {prefix!r}")
        if not isinstance(extra, list | tuple) or not all(_is_int(p) for p in extra):
            raise StateError(f"{where}['extra'] must be a list of ints, got {extra!r}")
        bad = [p for p in extra if not prefix < p < length]
        if bad:
            raise StateError(
                f"{where}['extra'] holds positions outside ({prefix}, {length}): {bad[:5]}"
            )
        return cls(int(prefix), tuple(sorted({int(p) for p in extra})))

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Done:
        missing = np.flatnonzero(~mask)
        prefix = int(missing[0]) if missing.size else int(mask.size)
        extra = np.flatnonzero(mask[prefix:]) + prefix
        return cls(prefix, tuple(int(p) for p in extra))

    def mask(self, length: int) -> np.ndarray:
        m = np.zeros(length, dtype=bool)
        m[: self.prefix] = True
        if self.extra:
            m[np.asarray(self.extra, dtype=np.int64)] = True
        return m

    def count(self) -> int:
        return self.prefix + len(self.extra)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def share_positions(
    length: int, done: Done, rank: int, world_size: int, policy: str
) -> tuple[np.ndarray, int]:
    """This rank's positions of the epoch's sequence in the segment after ``done``, and how
    many were padded (``pad``) or dropped (``drop``) over all ranks."""
    if done.prefix == 0 and not done.extra:
        rest = np.arange(length, dtype=np.int64)
    else:
        rest = np.flatnonzero(~done.mask(length)).astype(np.int64)
    if world_size == 1:
        return rest, 0
    n = rest.size
    if policy == "pad":
        total = -(-n // world_size) * world_size
        extra = total - n
        if extra:  # the epoch's first positions, as an uninterrupted epoch pads
            rest = np.concatenate([rest, np.arange(extra, dtype=np.int64) % max(length, 1)])
        return rest[rank::world_size], extra
    total = (n // world_size) * world_size
    return rest[:total][rank::world_size], n - total


def merge_ranks(length: int, start: Done, yielded: Sequence[int], policy: str) -> Done:
    """The positions done after rank r of ``len(yielded)`` yielded ``yielded[r]`` positions of
    the segment that began at ``start``."""
    world = len(yielded)
    share = -(-length // world) if policy == "pad" else length // world
    if start.count() == 0:
        for r, k in enumerate(yielded):
            _check_yielded(r, world, k, share)
        fast = _merge_from_the_start(length, yielded)
        if fast is not None:
            return fast
    mask = start.mask(length)
    for r, k in enumerate(yielded):
        mine, _ = share_positions(length, start, r, world, policy)
        _check_yielded(r, world, k, mine.size)
        mask[mine[:k]] = True
    return Done.from_mask(mask)


def _check_yielded(rank: int, world: int, k: int, share: int) -> None:
    if not 0 <= k <= share:
        raise StateError(
            f"rank {rank} of {world} yielded {k} indices, but its share of the epoch is {share}"
        )


def _merge_from_the_start(length: int, yielded: Sequence[int]) -> Done | None:
    """merge_ranks for a segment that is the whole epoch, in O(ranks x drift) instead of
    O(length): rank r yielded positions r, r + R, ... (None: padding was delivered, use masks)."""
    world = len(yielded)
    low = min(yielded)
    prefix = min(world * low, length)
    extra: list[int] = []
    for r, k in enumerate(yielded):
        for j in range(low, k):
            p = r + world * j
            if p >= length:
                return None  # a padded position: the general path handles it
            extra.append(p)
    extra.sort()
    i = 0
    while i < len(extra) and extra[i] == prefix:
        prefix, i = prefix + 1, i + 1
    return Done(prefix, tuple(extra[i:]))
