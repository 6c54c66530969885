"""Class-balanced sampling of a stream: ``tfd.balance_stream`` keeps each row with a per-class
acceptance probability, drawn per shard (a filtered stream, NOTE [ Checkpoints of filtered
streams ] in ``splitting.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .dataset import StreamDataset
from .errors import ConfigError, StateError
from .sampling import World, _unique_labels, shard_seed
from .splitting import FilteredStream, _table_column


class BalancedStream(FilteredStream):
    """Class-balanced sampling of a stream by per-class acceptance (see :func:`balance_stream`)."""

    def __init__(
        self,
        stream: StreamDataset,
        label: str,
        ratios: Mapping[Any, float] | None = None,
        seed: int = 0,
        frequencies: Mapping[Any, float] | None = None,
    ) -> None:
        super().__init__(stream)
        if not self._replays():
            raise ConfigError(
                f"balance_stream needs a stream whose checkpoint is a row count; "
                f"{stream.describe()} checkpoints by its own positions, and a random filter "
                "could not resume exactly from them"
            )
        self.label = label
        self.ratios = _positive_map(ratios, "ratios")
        self.frequencies = _positive_map(frequencies, "frequencies")
        self.balance_seed = int(seed)

    def describe(self) -> str:
        return f"{self.inner.describe()} [balanced by {self.label!r}]"

    def _start_position(self) -> Any:
        # a dict from the start: an int is a checkpoint of an earlier tensorfeed, whose draws
        # were seeded by (rank, worker) and could not be replayed
        return {"inner": None, "kept": 0, "carry": None}

    def _replay_position(self, position: Any) -> tuple[Any, int, Any]:
        if isinstance(position, int) and not isinstance(position, bool):
            raise StateError(
                f"this checkpoint of {self.describe()} is from an earlier tensorfeed, whose "
                "class-balancing draws differ: start the epoch again"
            )
        return super()._replay_position(position)

    def _shard_state(self, world: World, epoch: int, carry: Any = None) -> Any:
        # seeded by (shard, shards), never by (rank, worker): a regroup replays old shards
        rng = np.random.default_rng(
            shard_seed(self.balance_seed, epoch, world.num_shards, world.shard)
        )
        seen: dict[Any, int] = {}
        for pair in carry or []:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int)):
                raise StateError(
                    f"the carried class counts of {self.describe()} must be [[class, count], "
                    f"...], got {carry!r}"
                )
            seen[pair[0]] = pair[1]
        return {"rng": rng, "seen": seen}

    def _carried(self, state: Any) -> Any:
        return [[c, int(n)] for c, n in state["seen"].items()]

    def _merge_carried(self, carried: list[Any]) -> Any:
        seen: dict[Any, int] = {}
        for pairs in carried:
            for c, n in pairs:
                seen[c] = seen.get(c, 0) + n
        return [[c, n] for c, n in seen.items()]

    def acceptance(self, seen: Mapping[Any, float]) -> dict[Any, float]:
        """Acceptance probability of each class given its (estimated) source frequency."""
        freq = self.frequencies if self.frequencies is not None else seen
        if self.ratios is not None:
            target = {c: r for c, r in self.ratios.items() if freq.get(c, 0) > 0}
        else:
            target = {c: 1.0 for c, f in freq.items() if f > 0}
        if not target:
            return {}
        lift = {c: target[c] / freq[c] for c in target}
        top = max(lift.values())
        return {c: v / top for c, v in lift.items()}

    def _keep(self, table: pa.Table, state: Any) -> np.ndarray:
        labels = _table_column(table, self.label, self.inner.describe(), "balance_stream label")
        classes, codes = _unique_labels(labels)
        keys = classes.tolist()
        seen = state["seen"]
        for c, k in zip(keys, np.bincount(codes, minlength=len(keys)).tolist()):
            seen[c] = seen.get(c, 0) + k
        accept = self.acceptance(seen)
        p = np.array([accept.get(c, 0.0) for c in keys], dtype=np.float64)
        u = state["rng"].random(len(codes))
        return u < p[codes] if len(codes) else np.zeros(0, dtype=bool)


def _positive_map(values: Mapping[Any, float] | None, what: str) -> dict[Any, float] | None:
    if values is None:
        return None
    out = {}
    for c, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ConfigError(f"{what} of class {c!r} must be a number, got {v!r}")
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{what} of class {c!r} is {v!r}; it must be finite and >= 0")
        out[c] = float(v)
    if not any(out.values()):
        raise ConfigError(f"every entry of {what} is zero")
    return out


def balance_stream(
    stream: StreamDataset,
    label: str,
    ratios: Mapping[Any, float] | None = None,
    seed: int = 0,
    frequencies: Mapping[Any, float] | None = None,
) -> BalancedStream:
    """A stream that keeps each row of class c with probability
    ``a_c = (r_c / f_c) / max_k (r_k / f_k)``, so the output has class shares ``r_c / sum(r)``.

    ``ratios`` are the target relative shares (default: equal; classes left out are dropped).
    ``f_c`` is the class's share of the source: ``frequencies`` if given, else a running
    estimate from the rows this shard has read so far this epoch (so the first tables are
    balanced less precisely). The class that is rarest relative to its target is kept whole,
    the others are thinned: the expected output is ``min_k(f_k / r_k) * sum(r)`` of the input.
    Decisions come from ``shard_seed(seed, epoch, rank, worker)``; checkpoints resume exactly
    (NOTE [ Checkpoints of filtered streams ]).
    """
    return BalancedStream(stream, label, ratios, seed, frequencies)
