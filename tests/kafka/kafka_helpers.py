"""Helpers shared by the Kafka tests (importable: tests/kafka is on sys.path under pytest)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any


def telemetry(i: int, devices: int = 5) -> bytes:
    """Message ``i`` of a synthetic telemetry stream (``seq`` = i)."""
    return json.dumps(
        {"device_id": i % devices, "temp": 20.0 + (i % 13) * 0.5, "load": float(i % 7), "seq": i}
    ).encode()


def pairs(batch: dict[str, Any]) -> list[tuple[int, int]]:
    """(partition, offset) of every row of a dict batch."""
    parts, offs = batch["partition"], batch["offset"]
    if hasattr(parts, "tolist"):
        parts, offs = parts.tolist(), offs.tolist()
    return list(zip(parts, offs))


def by_partition(seen: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Offsets per partition, in the order they were seen."""
    out: dict[int, list[int]] = defaultdict(list)
    for p, o in seen:
        out[p].append(o)
    return dict(out)
