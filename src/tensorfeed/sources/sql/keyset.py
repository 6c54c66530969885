"""Where a shard of a ``SQLStream`` is: keyset positions, key buckets, and regrouping them for
another number of shards.

NOTE [ Resuming a SQL stream by key ]
Rows are split into ``BUCKETS`` fixed key buckets (the key mod ``BUCKETS``, or a stable hash of
it); shard ``k`` of ``N`` reads buckets ``b`` with ``b % N == k``, merged in key order. With a key
(and no shuffle buffer) a shard's position is ``{"rows": delivered, "after": the last key
delivered}`` and a resumed shard reads ``WHERE key > after``: rows deleted or inserted before
that point since the checkpoint shift nothing (an OFFSET would skip as many undelivered rows as
were deleted). The key column therefore stays in the batches. Keys that are not ints, finite
floats or strings, and streams with a shuffle buffer (which replays the shard from its start),
keep the row count as their position.

Moving to another number of shards (NOTE [ Elastic stream checkpoints ] in
``stream_state.py``): every bucket of old shard ``k`` is delivered up to that shard's ``after``,
so each bucket gets the keys it must exceed, and a new shard's position carries them for its
buckets as ``"from": [[[keys], [buckets]], ...]``. Number keys keep their maximum; string keys
keep each (the database's collation, not Python's, orders them, so ``key > a AND key > b`` is
what we can say without asking it). A position's ``after`` still applies to every bucket of the
shard: the shard reads its buckets merged in key order.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from ...errors import StateError

# Divisible by every shard count up to 6, and by 8, 10, 12, 15, 16: those split evenly.
BUCKETS = 240


def start() -> dict[str, Any]:
    return {"rows": 0, "after": None}


def key_literal(value: Any) -> str | None:
    """A key value as a SQL literal (ints, finite floats, strings), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return None


def advance(position: Any, table: pa.Table, key: str | None) -> Any:
    """The position after ``table`` was delivered."""
    if not isinstance(position, dict):
        return position + table.num_rows
    out = dict(position)
    out["rows"] = int(position["rows"]) + table.num_rows
    if table.num_rows and key in table.column_names:
        after = table.column(key)[-1].as_py()
        if key_literal(after) is None:  # not a key we can resume after: count rows
            return out["rows"]
        out["after"] = after
    return out


def check(position: Any, where: str) -> None:
    if isinstance(position, dict):
        rows, after = position.get("rows"), position.get("after", "?")
        extra = set(position) - {"rows", "after", "from"}
        if extra or not {"rows", "after"} <= set(position) or not isinstance(rows, int):
            raise StateError(
                f"{where} must be {{'rows': int >= 0, 'after': key}}, got {position!r}"
            )
        if isinstance(rows, bool) or rows < 0:
            raise StateError(
                f"{where} must be {{'rows': int >= 0, 'after': key}}, got {position!r}"
            )
        if after is not None and key_literal(after) is None:
            raise StateError(f"{where} has a key {after!r} that is not an int, float or str")
        _groups(position.get("from", []), where)
    elif isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise StateError(f"{where} must be a row count >= 0 or a keyset position, got {position!r}")


def _groups(groups: Any, where: str) -> dict[int, list[Any]]:
    """``{bucket: keys to exceed}`` of a position's ``"from"``."""
    out: dict[int, list[Any]] = {}
    ok = isinstance(groups, list)
    for g in groups if ok else []:
        if not (isinstance(g, list) and len(g) == 2 and all(isinstance(x, list) for x in g)):
            ok = False
            break
        keys, buckets = g
        if not keys or any(key_literal(k) is None for k in keys):
            ok = False
            break
        for b in buckets:
            if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < BUCKETS or b in out:
                ok = False
                break
            out[b] = list(keys)
    if not ok:
        raise StateError(
            f"{where} has a 'from' that is not [[[keys], [buckets < {BUCKETS}]], ...]: {groups!r}"
        )
    return out


def _reduce(keys: list[Any]) -> list[Any]:
    """Keys a row must all exceed, without the redundant ones we can see."""
    nums = [k for k in keys if not isinstance(k, str)]
    strs = sorted({k for k in keys if isinstance(k, str)})
    return ([max(nums)] if nums else []) + strs


def regroup(positions: list[Any], num_shards: int, where: str) -> list[Any]:
    """Positions for ``num_shards`` shards resuming what ``positions`` had not delivered."""
    old = len(positions)
    exceed: dict[int, list[Any]] = {}
    for k, pos in enumerate(positions):
        if pos is None:
            continue
        here = f"{where}, shard {k} of {old}"
        check(pos, here)
        if not isinstance(pos, dict):
            raise StateError(
                f"{here} counts rows (no key to resume after): it resumes on the same numbers of "
                "DataLoader workers and DDP ranks only"
            )
        base = _groups(pos.get("from", []), here)
        for b in range(k, BUCKETS, old):
            keys = base.get(b, []) + ([pos["after"]] if pos["after"] is not None else [])
            if keys:
                exceed[b] = _reduce(keys)
    out: list[Any] = []
    for k in range(num_shards):
        groups: dict[str, list[Any]] = {}
        for b in range(k, BUCKETS, num_shards):
            if b in exceed:
                groups.setdefault(repr(exceed[b]), [exceed[b], []])[1].append(b)
        out.append({"rows": 0, "after": None, "from": list(groups.values())})
    return out


def not_delivered(position: Any, key_sql: str, bucket_sql: str) -> list[str]:
    """SQL conditions selecting the rows of a shard after ``position``."""
    if not isinstance(position, dict):
        return []
    parts = []
    groups = position.get("from") or []
    if groups:
        listed = sorted(b for _, buckets in groups for b in buckets)
        alts = [f"{bucket_sql} NOT IN ({', '.join(map(str, listed))})"]
        for keys, buckets in groups:
            above = " AND ".join(f"{key_sql} > {key_literal(k)}" for k in keys)
            alts.append(f"({bucket_sql} IN ({', '.join(map(str, buckets))}) AND {above})")
        parts.append(" OR ".join(alts))
    if position["after"] is not None:
        parts.append(f"{key_sql} > {key_literal(position['after'])}")
    return parts
