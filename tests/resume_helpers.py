"""Checks that a stream's checkpoint resumes exactly once on another topology (NOTE [ Elastic
stream checkpoints ]): cut an epoch on one worker count, resume on another, cut again, finish on a
third, and compare the union of delivered keys with the whole epoch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

MakeLoader = Callable[[int], Any]  # num_workers -> a tfd.DataLoader over a fresh source object


Key = str | Callable[[Any], list[Any]]  # a column, or the keys of a batch


def keys_of(batch: Any, key: Key) -> list[Any]:
    if callable(key):
        return key(batch)
    values = batch[key]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def read(
    make: MakeLoader, workers: int, key: Key, state: Any = None, take: int | str | None = None
) -> tuple[list[Any], Any]:
    """The keys one loader delivers (``take`` batches, ``"last"``: all but keep the iterator,
    None: the whole rest) and its checkpoint after them (as JSON would save it)."""
    loader = make(workers)
    if state is not None:
        loader.load_state_dict(state)
    if take == "last":  # right after the epoch's last batch, before the end is seen
        take = sum(1 for _ in make(workers))
    got: list[Any] = []
    it = iter(loader)
    if take is not None:
        for _ in range(int(take)):
            got += keys_of(next(it), key)
        snapshot = json.loads(json.dumps(loader.state_dict()))
        del it
        return got, snapshot
    for batch in it:
        got += keys_of(batch, key)
    return got, None


def assert_resumes_exactly_once(
    make: MakeLoader,
    expected: Iterable[Any],
    hops: Iterable[tuple[int, int, int]],
    cuts: Iterable[int | str] = (0, 1, 5),
    key: Key = "id",
) -> None:
    """For each ``(a, b, c)`` worker counts and each cut: ``cut`` batches on ``a`` workers, 2 on
    ``b`` (from the checkpoint), the rest on ``c``: every expected key exactly once."""
    want = sorted(expected)
    for a, b, c in hops:
        for cut in cuts:
            head, state = read(make, a, key, take=cut)
            mid, state = read(make, b, key, state, take=2 if cut != "last" else 0)
            tail, _ = read(make, c, key, state)
            got = head + mid + tail
            assert sorted(got) == want, (
                f"{a} -> {b} -> {c} workers, cut after {cut} batch(es): {len(got)} keys "
                f"delivered, {len(set(got))} distinct, {len(want)} expected"
            )
