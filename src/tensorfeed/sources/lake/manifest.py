"""What a checkpoint remembers of a lake's files, and holding a resumed epoch to them.

A checkpoint names the files of its epoch with the identity pinned for them (size, and the ETag
on S3 or the mtime locally; NOTE [ A consistent epoch ] in ``plan.py``). Resuming compares the
lake with that list: ``LakeDataset`` names what was added, removed or replaced
(:func:`describe_change`, raised by the loader as a SourceChangedError); ``LakeStream`` reads
the checkpoint's files again (:func:`keep_pinned`: files added since stay out of the resumed
epoch, a removed or replaced one is a SourceChangedError naming it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ...errors import SourceChangedError, StateError
from .fs import FileEntry

MANIFEST_FILES = 2000  # files named in a checkpoint, at most (beyond: a digest of the list)


def _identity(f: FileEntry) -> tuple[int, Any]:
    return f.size, f.etag or f.mtime_ns


def _digest(files: Sequence[FileEntry]) -> str:
    listed = sorted([f.path, *_identity(f)] for f in files)
    return hashlib.sha256(json.dumps(listed, default=str).encode()).hexdigest()[:16]


def manifest(files: Sequence[FileEntry]) -> dict[str, Any]:
    if len(files) > MANIFEST_FILES:  # the digest still tells; the names would not fit
        return {"files": None, "count": len(files), "digest": _digest(files)}
    return {"files": [[f.path, *_identity(f)] for f in files]}


def _named(old: Any) -> dict[str, tuple[Any, Any]] | None:
    then = old.get("files") if isinstance(old, dict) else None
    if not isinstance(then, list):
        return None
    if not all(isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) for e in then):
        raise StateError(f"a lake manifest must list [path, size, version] entries, got {then!r}")
    return {p: (s, v) for p, s, v in then}


def describe_change(old: Any, files: Sequence[FileEntry]) -> str | None:
    """Files added, removed or replaced since the manifest ``old``; None if none (or if ``old``
    names no files)."""
    before = _named(old)
    if before is None:
        return None
    now = {f.path: _identity(f) for f in files}
    parts = []
    for what, names in (
        ("added", sorted(set(now) - set(before))),
        ("removed", sorted(set(before) - set(now))),
        ("replaced", sorted(p for p in set(now) & set(before) if now[p] != tuple(before[p]))),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{len(names)} file(s) {what}: {shown}")
    return "; ".join(parts) or None


def keep_pinned(files: list[FileEntry], old: Any, shown: str) -> list[FileEntry]:
    """The listed ``files`` that the manifest ``old`` names; a SourceChangedError if one of
    them is gone or has another size (or, for a manifest too large to name its files, if the
    listing differs). Versions known only once a file is opened (S3 ETags) are compared by
    :func:`check_versions`."""
    before = _named(old)
    if before is None:
        if isinstance(old, dict) and old.get("digest") == _digest(files):
            return files
        count = old.get("count") if isinstance(old, dict) else "?"
        raise SourceChangedError(
            f"{shown} changed since this checkpoint ({count} files then, {len(files)} now): "
            "its epoch cannot be resumed over the same files; start a new epoch instead"
        )
    now = {f.path: f for f in files}
    gone = sorted(p for p in before if p not in now)
    resized = sorted(p for p in before if p in now and now[p].size != before[p][0])
    _raise_if(gone, resized, shown)
    return [f for f in files if f.path in before]


def check_versions(entries: Sequence[FileEntry], old: Any, shown: str) -> None:
    """The opened files are the versions the manifest ``old`` names."""
    before = _named(old)
    if before is None:
        return
    _raise_if([], sorted(f.path for f in entries if _identity(f) != tuple(before[f.path])), shown)


def _raise_if(gone: list[str], replaced: list[str], shown: str) -> None:
    if not (gone or replaced):
        return
    what = "; ".join(
        f"{len(names)} file(s) {kind}: {', '.join(names[:5])}"
        + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        for kind, names in (("removed", gone), ("replaced", replaced))
        if names
    )
    raise SourceChangedError(
        f"{shown} changed since this checkpoint: {what}. Resuming its epoch would deliver rows "
        "twice or not at all; start a new epoch instead (a new loader without load_state_dict, "
        "or set_epoch)"
    )
