"""Positions of streams that read fixed splits one after another (MemoryStream chunks, lake row
groups), and regrouping them for another number of shards (NOTE [ Elastic stream checkpoints ]
in ``stream_state.py``).

Shard ``k`` of ``N`` reads splits ``k, k + N, k + 2N, ...`` in that order. Its position is the
number of rows it has delivered, an ``int``; after a regroup it is
``{"rows": n, "done": {"split": rows already delivered, or -1 for all}}``: the shard skips what
``done`` says in each split, then ``n`` rows of what is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .errors import StateError

WHOLE = -1  # a split whose rows were all delivered


def parse(position: Any, where: str) -> tuple[int, dict[int, int]]:
    """``(rows, done)`` of a position (checked; None is the start)."""
    if position is None:
        return 0, {}
    if isinstance(position, int) and not isinstance(position, bool):
        if position < 0:
            raise StateError(f"{where} must be a row count >= 0, got {position}")
        return position, {}
    if isinstance(position, dict) and set(position) == {"rows", "done"}:
        rows, done = position["rows"], position["done"]
        if (
            isinstance(rows, int)
            and not isinstance(rows, bool)
            and rows >= 0
            and isinstance(done, dict)
            and all(
                isinstance(k, str)
                and k.isdigit()
                and isinstance(v, int)
                and not isinstance(v, bool)
                and v >= WHOLE
                for k, v in done.items()
            )
        ):
            return rows, {int(k): int(v) for k, v in done.items()}
    raise StateError(
        f"{where} must be a row count >= 0 or {{'rows': int, 'done': {{split: rows}}}}, "
        f"got {position!r}"
    )


def advance(position: Any, rows: int) -> Any:
    """The position after ``rows`` more rows were delivered."""
    if isinstance(position, dict):
        return {"rows": int(position["rows"]) + rows, "done": dict(position["done"])}
    return int(position or 0) + rows


def skip_rows(tables: Iterator[Any], skip: int) -> Iterator[Any]:
    """``tables`` (Arrow tables) less their first ``skip`` rows."""
    for t in tables:
        if skip >= t.num_rows:
            skip -= t.num_rows
            continue
        yield t.slice(skip) if skip else t
        skip = 0


def starts(
    splits: list[int], done: dict[int, int], count: Callable[[int], int]
) -> Iterator[tuple[int, int]]:
    """``(split, first row to read)`` for the splits of a shard not wholly done."""
    for s in splits:
        d = done.get(s, 0)
        if d == WHOLE:
            continue
        if d and d >= count(s):
            continue
        yield s, d


def regroup(
    positions: list[Any],
    num_shards: int,
    splits_of: Callable[[int, int], list[int]],
    count: Callable[[int], int],
    where: str,
) -> list[Any]:
    """The positions of ``num_shards`` shards covering what ``positions`` (one per old shard)
    had not delivered."""
    old = len(positions)
    done: dict[int, int] = {}
    for k, pos in enumerate(positions):
        rows, base = parse(pos, f"{where}, shard {k} of {old}")
        done.update(base)
        for s, first in starts(splits_of(k, old), base, count):
            if rows == 0:
                break
            left = count(s) - first
            if rows >= left:
                done[s], rows = WHOLE, rows - left
            else:
                done[s], rows = first + rows, 0
        if rows:
            raise StateError(
                f"{where}: shard {k} of {old} has a position {rows} row(s) past the end of its "
                "splits (a checkpoint of other data?)"
            )
    out: list[Any] = []
    for k in range(num_shards):
        mine = {str(s): done[s] for s in splits_of(k, num_shards) if done.get(s, 0)}
        out.append({"rows": 0, "done": mine})
    return out
