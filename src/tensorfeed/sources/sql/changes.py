"""What a checkpoint remembers of a SQL dataset's rows, and what changed since.

A map-style checkpoint is positions in the epoch's order of the dataset's rows (NOTE [ Elastic
map-style checkpoints ] in ``epoch_progress.py``), and row ``i`` is the row with the ``i``-th
smallest key. So a resumed epoch is right only over the same keys: a row deleted and another
inserted keep the count but shift every position after them. The checkpoint keeps a digest of the
keys (in the dataset's fingerprint) and a manifest: the key at 16 evenly spaced positions and a
digest of the keys between each two. On resume, a changed digest is a SourceChangedError naming
the key ranges whose rows changed and how many rows each held then and holds now. (String keys
are compared as a whole: their SQL collation need not be Python's order.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

BUCKETS = 16


def _digest_of(keys: np.ndarray | pa.Array) -> str:
    h = hashlib.blake2b(digest_size=12)
    if isinstance(keys, np.ndarray):
        h.update(np.ascontiguousarray(keys).tobytes())
    else:
        for buf in keys.buffers():
            if buf is not None:
                h.update(memoryview(buf))
        h.update(str(len(keys)).encode())
    return h.hexdigest()


def keys_digest(keys: np.ndarray | pa.Array) -> str:
    return _digest_of(keys)


def manifest(keys: np.ndarray | pa.Array, key: str | None) -> dict[str, Any]:
    """The checkpoint's record of the keys (see module docstring)."""
    out: dict[str, Any] = {"rows": len(keys), "key": key, "digest": _digest_of(keys)}
    if isinstance(keys, np.ndarray) and len(keys) >= BUCKETS:
        at = [i * len(keys) // BUCKETS for i in range(BUCKETS)]
        bounds = [int(keys[i]) for i in at]
        edges = np.searchsorted(keys, bounds[1:], side="left").tolist()
        spans = list(zip([0, *edges], [*edges, len(keys)]))
        out["bounds"] = bounds
        out["buckets"] = [[b - a, _digest_of(keys[a:b])] for a, b in spans]
    return out


def describe_change(old: Any, keys: np.ndarray | pa.Array, key: str | None) -> str | None:
    """What differs between the keys a checkpoint saw (``old``, from :func:`manifest`) and
    ``keys``; None if nothing does."""
    if not isinstance(old, dict) or old.get("digest") == _digest_of(keys):
        return None
    what = f"{old.get('rows')} rows then, {len(keys)} now"
    bounds, buckets = old.get("bounds"), old.get("buckets")
    if not (
        isinstance(keys, np.ndarray) and isinstance(bounds, list) and isinstance(buckets, list)
    ):
        return f"{what}; the keys differ" if key else f"{what}; the rows differ"
    edges = np.searchsorted(keys, bounds[1:], side="left").tolist()
    spans = list(zip([0, *edges], [*edges, len(keys)]))
    changed = []
    last = len(bounds) - 1
    for i, ((a, b), (count, digest)) in enumerate(zip(spans, buckets)):
        if _digest_of(keys[a:b]) != digest:
            if i == 0:
                where = f"{key} < {bounds[1]}"
            elif i == last:
                where = f"{key} >= {bounds[i]}"
            else:
                where = f"{bounds[i]} <= {key} < {bounds[i + 1]}"
            changed.append(f"{where} ({count} rows then, {b - a} now)")
    return f"{what}; rows changed where " + "; ".join(changed[:6])
