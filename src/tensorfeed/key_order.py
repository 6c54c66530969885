"""Epochs ordered by the rows' keys, so an epoch can continue over changed data
(``tfd.DataLoader(on_change="continue")``).

NOTE [ Continuing over changed data ]
A map-style checkpoint says which positions of the epoch's sequence are done (NOTE [ Elastic
map-style checkpoints ] in ``epoch_progress.py``), and positions mean rows only over the same
rows: a row deleted or inserted shifts them. So with ``on_change="continue"`` the loader orders
the epoch by the rows' keys instead (``SQLDataset``'s key, a file dataset's path, a
``LakeDataset``'s ``key`` column): shuffled, by a 64-bit hash of (key, seed, epoch), ties broken
by the key; in order, by the key itself in Python's order (which a database's collation of text
keys, or a lake's file listing, need not follow: the epoch then follows the keys). What is done
is a *cut* in that order: every row before the first one not delivered (the checkpoint keeps its hash and key), and the few delivered past it (ranks a batch
ahead; the checkpoint keeps their keys). Over changed data the cut is found again: rows ordered
before it now count as done (delivered, or added since on that side of the cut: those are
skipped this epoch), rows after it, less the keys past it, are the rest of the epoch (a deleted
row is simply gone, an added one joins). No key is delivered twice, and the checkpoint holds one
key and a few more, never the rows. ``loader.stats.source_changes`` reports the counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .epoch_progress import Done
from .errors import ConfigError, StateError

_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _M


def as_keys(keys: Any, what: str) -> np.ndarray:
    """The keys as an int64 or unicode numpy array (every key unique)."""
    values = keys.to_numpy(zero_copy_only=False) if hasattr(keys, "to_numpy") else keys
    arr = np.asarray(values)
    if arr.dtype == object and len(arr) and all(isinstance(k, str) for k in arr[:1]):
        arr = arr.astype(str)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "US":
        arr = arr.astype(str)
    else:
        raise ConfigError(
            f"on_change='continue' needs int or str keys; {what} has keys of type {arr.dtype}"
        )
    return arr


def _hashes(keys: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    salt = _splitmix(
        np.array([(int(seed) & 0xFFFFFFFF) << 32 | (int(epoch) & 0xFFFFFFFF)], np.uint64)
    )
    if keys.dtype.kind == "i":
        return _splitmix(keys.view(np.uint64) ^ salt[0])
    # strings: fold their UTF-32 code points column by column, every row at once, each row up
    # to its own length (the padding depends on the longest key of the array, never the hash)
    codes = np.ascontiguousarray(keys).view(np.uint32).reshape(len(keys), -1)
    lengths = np.char.str_len(keys)
    h = np.full(len(keys), salt[0], dtype=np.uint64)
    for j in range(codes.shape[1]):
        h = np.where(j < lengths, _splitmix(h ^ codes[:, j].astype(np.uint64)), h)
    return h


def sequence(keys: np.ndarray, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of the rows: by (hash, key) shuffled, else by key."""
    if not shuffle:
        if len(keys) < 2 or bool(np.all(keys[:-1] < keys[1:])):
            return np.arange(len(keys))  # the index is in key order already (SQL's ORDER BY key)
        return np.argsort(keys, kind="stable")
    return np.lexsort((keys, _hashes(keys, seed, epoch)))


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def cut(keys: np.ndarray, shuffle: bool, seed: int, epoch: int, done: Done) -> dict[str, Any]:
    """The checkpoint's record of what is done, by key (see the NOTE above)."""
    seq = sequence(keys, shuffle, seed, epoch)
    extra = [_py(keys[seq[p]]) for p in done.extra]
    if done.prefix >= len(seq):
        return {"rows": len(keys), "done": done.count(), "at": None, "extra": extra}
    row = seq[done.prefix]
    value = int(_hashes(keys[row : row + 1], seed, epoch)[0]) if shuffle else None
    return {"rows": len(keys), "done": done.count(), "at": [value, _py(keys[row])], "extra": extra}


def resume(
    record: Any, keys: np.ndarray, shuffle: bool, seed: int, epoch: int
) -> tuple[Done, dict[str, int]]:
    """What of the current rows is done, from a :func:`cut` taken over other rows, and the
    counts for ``loader.stats.source_changes``."""
    if not isinstance(record, dict) or not {"rows", "done", "at", "extra"} <= set(record):
        raise StateError(f"state_dict['tensorfeed']['cut'] is not a key cut: {record!r}")
    at, extra = record["at"], record["extra"]
    n = len(keys)
    if at is None:
        before = np.ones(n, dtype=bool)
    elif isinstance(at, list) and len(at) == 2:
        value, key = at
        if shuffle:
            h = _hashes(keys, seed, epoch)
            before = (h < np.uint64(value)) | ((h == np.uint64(value)) & (keys < key))
        else:
            before = keys < key
    else:
        raise StateError(f"state_dict['tensorfeed']['cut']['at'] must be [hash, key], got {at!r}")
    seq = sequence(keys, shuffle, seed, epoch)
    mask = before[seq]  # a prefix of the sequence: it is ordered by the same values
    where = {k: i for i, k in enumerate(keys.tolist())} if extra else {}
    inverse = np.empty(n, dtype=np.int64)
    inverse[seq] = np.arange(n)
    found = [int(inverse[where[k]]) for k in extra if k in where]
    mask[found] = True
    counts = {
        "rows_then": int(record["rows"]),
        "rows_now": n,
        "done_then": int(record["done"]),
        "done_now": int(mask.sum()),
        "ahead_gone": len(extra) - len(found),
    }
    return Done.from_mask(mask), counts
