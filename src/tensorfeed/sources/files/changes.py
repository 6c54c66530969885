"""What a checkpoint remembers of a file dataset's files, and what changed since.

A map-style checkpoint is positions in the epoch's order of the rows (NOTE [ Elastic map-style
checkpoints ] in ``epoch_progress.py``), and row ``i`` is the ``i``-th file of the scan. A file
added, removed or rewritten since shifts or changes rows, so the loader refuses the resume with a
SourceChangedError that says what changed. Up to ``NAMED`` files the checkpoint keeps each path
with its size and mtime, and the error names the files; beyond that it keeps the path at 16
evenly spaced rows and a digest of the files between each two, and the error names those
ranges.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import numpy as np

NAMED = 2000
BUCKETS = 16


def _digest(paths: list[str], stats: np.ndarray) -> str:
    h = hashlib.blake2b(json.dumps(paths).encode(), digest_size=12)
    h.update(np.ascontiguousarray(stats).tobytes())
    return h.hexdigest()


def manifest(paths: list[str], stats: np.ndarray) -> dict[str, Any]:
    """The checkpoint's record of the files: ``stats`` is ``[n, 2]`` (size, mtime_ns)."""
    if len(paths) <= NAMED:
        return {"files": [[p, int(s), int(m)] for p, (s, m) in zip(paths, stats.tolist())]}
    at = [i * len(paths) // BUCKETS for i in range(BUCKETS)] + [len(paths)]
    return {
        "rows": len(paths),
        "bounds": [paths[i] for i in at[:-1]],
        "buckets": [[b - a, _digest(paths[a:b], stats[a:b])] for a, b in itertools.pairwise(at)],
    }


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def describe_change(old: Any, paths: list[str], stats: np.ndarray) -> str | None:
    """What differs between the manifest ``old`` and the files now; None if nothing does (or
    ``old`` is not a file manifest)."""
    if not isinstance(old, dict):
        return None
    files = old.get("files")
    if isinstance(files, list):
        try:
            before = {str(p): (int(s), int(m)) for p, s, m in files}
        except (TypeError, ValueError):
            return None
        now = {p: (int(s), int(m)) for p, (s, m) in zip(paths, stats.tolist())}
        parts = [
            f"{len(names)} file(s) {what}: {_shown(names)}"
            for what, names in (
                ("added", sorted(set(now) - set(before))),
                ("removed", sorted(set(before) - set(now))),
                ("rewritten", sorted(p for p in set(now) & set(before) if now[p] != before[p])),
            )
            if names
        ]
        return "; ".join(parts) or None
    bounds, buckets = old.get("bounds"), old.get("buckets")
    if not isinstance(bounds, list) or not isinstance(buckets, list) or not bounds:
        return None
    edges = np.searchsorted(np.array(paths, dtype=object), bounds[1:], side="left").tolist()
    spans = list(zip([0, *edges], [*edges, len(paths)]))
    changed = []
    for i, ((a, b), (count, digest)) in enumerate(zip(spans, buckets)):
        if _digest(paths[a:b], stats[a:b]) != digest:
            upper = f" and before {bounds[i + 1]!r}" if i + 1 < len(bounds) else ""
            changed.append(f"from {bounds[i]!r}{upper} ({count} files then, {b - a} now)")
    if not changed:
        return None
    return f"{old.get('rows')} files then, {len(paths)} now; files changed " + "; ".join(
        changed[:6]
    )
