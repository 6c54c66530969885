"""A shuffled ``SQLStream`` reads its key buckets as the fixed splits of its shuffle buffer.

NOTE [ Shuffling a SQL stream by bucket ]
With a key and a ``shuffle_buffer``, a shard's statement returns its rows ordered by key bucket,
then key, with the bucket as a hidden column (``COLUMN``), so each bucket arrives whole and in a
fixed order: the buckets are the splits of NOTE [ A shuffle buffer that regroups ] in
``stream_shuffle.py``, permuted by ``(seed, epoch, bucket)`` and drawn from by the buffer, and the
checkpoint moves to other numbers of workers and ranks. ``regroup`` needs each bucket's row
count: one ``GROUP BY`` in the epoch's snapshot, once per epoch. Since a position means rows of
a bucket's permuted order, it holds only over the same rows: the checkpoint keeps the rows per
bucket, and a resume over other counts is a ``SourceChangedError`` naming the buckets (on the same
topology too, where the buffer replays). Every SQL stream's checkpoint keeps them (a keyless
one's all in bucket 0): a keyless stream refuses other counts too, and a keyset stream (a key,
no buffer) refuses them unless ``on_change="continue"``, when it goes on after each bucket's last
key delivered and counts the change in ``loader.stats.source_changes``. Each bucket is a uniform sample of the keys (the key mod
240, or a stable hash), so buckets in their natural order mix the table evenly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import SourceChangedError, StateError

COLUMN = "tfd_key_bucket"  # the hidden column of a shuffled shard's statement


def per_bucket(tables: Iterator[pa.Table], buckets: list[int], where: str) -> Iterator[pa.Table]:
    """One table per bucket of ``buckets`` (ascending, as the statement orders them), empty ones
    too, from the statement's chunks; the hidden column is dropped."""
    pending: list[pa.Table] = []
    current: int | None = None
    expected = iter(buckets)
    empty: pa.Table | None = None

    def close() -> Iterator[pa.Table]:
        nonlocal pending
        for b in expected:
            if b == current:
                break
            yield empty.slice(0, 0) if empty is not None else pa.table({})
        else:
            raise StateError(f"{where}: key bucket {current} arrived out of order")
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        pending = []

    for t in tables:
        if not t.num_rows:
            continue
        column = t.column(COLUMN).to_numpy()
        t = t.drop_columns([COLUMN])
        empty = t.slice(0, 0)
        cuts = np.flatnonzero(column[1:] != column[:-1]) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(column)], strict=True):
            b = int(column[lo])
            if current is not None and b != current:
                yield from close()
            current = b
            pending.append(t.slice(lo, hi - lo))
    if current is not None:
        yield from close()
    for _ in expected:
        yield empty.slice(0, 0) if empty is not None else pa.table({})


def as_list(counts: dict[int, int]) -> list[list[int]]:
    return [[b, n] for b, n in sorted(counts.items()) if n]


def parse_state(state: Any, where: str) -> tuple[int, dict[int, int]]:
    """``(epoch, rows per bucket)`` of a shuffled stream's checkpoint, checked."""
    epoch = state.get("epoch") if isinstance(state, dict) else None
    rows = state.get("rows") if isinstance(state, dict) else None
    ok = isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
    pairs = rows if ok and isinstance(rows, list) else []
    ok = ok and isinstance(rows, list)
    counts: dict[int, int] = {}
    for pair in pairs:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
        ):
            ok = False
            break
        counts[pair[0]] = pair[1]
    if not ok:
        raise StateError(
            f"the checkpoint's rows per key bucket of {where} must be {{'epoch': int, 'rows': "
            f"[[bucket, rows], ...]}}, got {state!r}"
        )
    return int(epoch), counts  # type: ignore[arg-type]


def changed(then: dict[int, int], now: dict[int, int]) -> list[int]:
    """The buckets whose rows differ between two counts."""
    return sorted(b for b in set(then) | set(now) if then.get(b, 0) != now.get(b, 0))


def check_unchanged(
    then: dict[int, int],
    now: dict[int, int],
    where: str,
    hint: str = "a shuffled or keyless SQL stream's checkpoint resumes over the same rows only; "
    "start the epoch again",
) -> None:
    """A SourceChangedError naming the buckets whose rows changed since the checkpoint."""
    differ = changed(then, now)
    if not differ:
        return
    shown = ", ".join(f"{b} ({then.get(b, 0)} then, {now.get(b, 0)} now)" for b in differ[:5])
    more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
    raise SourceChangedError(
        f"{where} changed since this checkpoint: rows per key bucket differ in bucket {shown}"
        f"{more} ({sum(then.values())} rows then, {sum(now.values())} now); {hint}"
    )
