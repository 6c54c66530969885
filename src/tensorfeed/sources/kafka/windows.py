"""Per-key sliding windows over a Kafka stream: ``stream.windows(key="device_id", size=32, step=8)``.

Rows are grouped by ``key`` inside each shard; each key keeps a buffer of its latest rows, and
every time it holds ``size`` rows a window ``[size, features]`` is emitted and the buffer slides by
``step``. At most ``max_keys`` keys are open; the least recently updated one is evicted (its partial
window dropped) and counted in ``stats["evicted"]``. Produce with the window key as the Kafka
message key, so that all rows of a device are in one partition (one shard, in order).

NOTE [ Window checkpoints ]
A window iterator processes one stream table at a time. Its checkpoint is the stream position
*before* the table being emitted, the open buffers as they were at that position, and per partition
the offset of the last row of the last window already handed out (``upto``). Resuming re-reads
from that position, rebuilds the same windows (a key's rows come from one partition in offset
order, so its windows do not depend on how the rows were split into poll batches) and skips those
whose last row is at or below ``upto``: resumed + before == uninterrupted, per key. Buffers are
stored as bytes per key, so torchdata's incremental worker snapshots only resend keys that changed
in the last table. Which key an eviction hits can depend on poll-batch boundaries, so a run that
evicts keys resumes exactly only up to those (counted) evictions.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset

from ...dataset import _check_stream_state, _digest
from ...errors import ConfigError, DataError, NotFoundError


@dataclass
class _Buf:
    x: np.ndarray  # [n, F] float32
    y: np.ndarray | None  # [n]
    skip: int = 0  # rows still to drop before the next window (step > size)
    tick: int = 0  # recency, for LRU eviction


class KafkaWindows(IterableDataset[Any]):
    """Iterable dataset of per-key windows (see module docstring). Works with ``tfd.DataLoader``
    (``batch_size`` windows per batch: ``x`` is ``[batch, size, features]``)."""

    def __init__(
        self,
        stream: Any,
        key: str,
        size: int,
        step: int = 1,
        features: Sequence[str] | None = None,
        target: str | None = None,
        max_keys: int = 10_000,
    ) -> None:
        if size < 1 or step < 1 or max_keys < 1:
            raise ConfigError(
                f"windows need size >= 1, step >= 1 and max_keys >= 1, got {size}, {step}, {max_keys}"
            )
        self.stream = stream
        self.key = key
        self.size = int(size)
        self.step = int(step)
        if features is None and stream.spec.features is not None:
            features = stream.spec.features
        self.features = list(features) if features is not None else None
        self.target = target
        self.max_keys = int(max_keys)
        self.epoch = 0
        # Live counts of the iterators in this process; counts(loader) for all workers.
        self.stats: dict[str, int] = {"windows": 0, "open_keys": 0, "evicted": 0}

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the stream pins its end offsets here, in the main process
        (NOTE [ A bounded epoch's end ] in ``stream.py``), so every worker reads to the same."""
        self.epoch = int(epoch)
        self.stream.set_epoch(epoch)

    # the stream's pinned end travels in the checkpoint and to other ranks as the stream's own
    def _checkpoint_state(self) -> dict[str, Any] | None:
        return self.stream._checkpoint_state()

    def _restore_checkpoint_state(self, state: Any) -> None:
        self.stream._restore_checkpoint_state(state)

    def _job_view(self) -> dict[str, Any] | None:
        return self.stream._job_view()

    def _adopt_job_view(self, view: dict[str, Any] | None) -> None:
        self.stream._adopt_job_view(view)

    def describe(self) -> str:
        return f"windows of {self.stream.describe()} by {self.key!r} (size {self.size}, step {self.step})"

    def fingerprint(self) -> str:
        return _digest(
            [
                "KafkaWindows",
                self.stream.fingerprint(),
                self.key,
                self.size,
                self.step,
                self.features,
                self.target,
            ]
        )

    def __iter__(self) -> _WindowIterator:
        return _WindowIterator(self)

    def _on_checkpoint(self, state: dict[str, Any]) -> None:
        """Called by ``tfd.DataLoader.state_dict()``: see ``KafkaStream.commit_on_checkpoint``."""
        self.stream._on_checkpoint(state)

    def counts(self, state_or_loader: Any) -> dict[str, int]:
        """``{"windows", "evicted"}`` of the current epoch in a checkpoint, over all workers."""
        state = state_or_loader
        if not isinstance(state, dict) and hasattr(state, "state_dict"):
            state = state.state_dict()
        found: list[dict[str, Any]] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, dict):
                if obj.get("source") == self.stream.describe() and "windows" in obj:
                    found.append(obj)
                    return
                for v in obj.values():
                    walk(v)

        walk(state)
        return {
            "windows": sum(int(s.get("windows", 0)) for s in found),
            "evicted": sum(int(s.get("evicted", 0)) for s in found),
        }

    def __repr__(self) -> str:
        return f"KafkaWindows({self.describe()})"


class _WindowIterator:
    def __init__(self, owner: KafkaWindows) -> None:
        self.owner = owner
        self.epoch = owner.epoch
        self.position: Any = owner.stream._start_position()
        self.saved: dict[str, dict[str, Any]] = {}  # buffers as of self.position
        self.upto: dict[str, int] = {}
        self.evicted = 0
        self.windows = 0
        self.rows = 0
        self._bufs: OrderedDict[Any, _Buf] = OrderedDict()
        self._y_dtype: str | None = None
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> _WindowIterator:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._restore()
            self._it = self._gen()
        return next(self._it)

    # -- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "buffers": dict(self.saved),
            "upto": dict(self.upto),
            "evicted": self.evicted,
            "windows": self.windows,
            "rows": self.rows,
            "y_dtype": self._y_dtype,
            "source": self.owner.stream.describe(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_stream_state(self.owner.stream, state)
        self.epoch = int(state["epoch"])
        self.position = state["position"]
        self.saved = dict(state.get("buffers") or {})
        self.upto = dict(state.get("upto") or {})
        self.evicted = int(state.get("evicted", 0))
        self.windows = int(state.get("windows", 0))
        self.rows = int(state.get("rows", 0))
        self._y_dtype = state.get("y_dtype")
        self._it = None

    def _restore(self) -> None:
        nf = len(self.owner.features) if self.owner.features else None
        items = []
        for k, rec in self.saved.items():
            x = np.frombuffer(rec["x"], dtype=np.float32)
            x = x.reshape(-1, nf if nf else int(rec["f"])).copy()
            y = None
            if rec.get("y") is not None:
                y = np.frombuffer(rec["y"], dtype=np.dtype(self._y_dtype or "float64")).copy()
            items.append(
                (int(rec["t"]), json.loads(k), _Buf(x, y, int(rec["skip"]), int(rec["t"])))
            )
        self._bufs = OrderedDict((k, b) for _, k, b in sorted(items, key=lambda i: i[0]))

    @staticmethod
    def _dump(buf: _Buf) -> dict[str, Any]:
        return {
            "x": buf.x.tobytes(),
            "y": buf.y.tobytes() if buf.y is not None else None,
            "skip": buf.skip,
            "t": buf.tick,
            "f": int(buf.x.shape[1]),
        }

    # -- windows ----------------------------------------------------------------------------------
    def _gen(self) -> Iterator[Any]:
        o = self.owner
        stream = o.stream
        for cb in stream.iter_batches(self.epoch, self.position):
            table = cb.table
            after = stream._advance(self.position, table)
            out, touched, evicted = self._table_windows(table)
            for pk, off, sample in out:
                if off <= self.upto.get(pk, -1):
                    continue  # handed out before the checkpoint we resumed from
                self.upto[pk] = off
                self.windows += 1
                yield sample
            # The whole table is handed out: move the checkpoint past it.
            for k in evicted:
                self.saved.pop(json.dumps(k), None)
            for k in touched:
                if k in self._bufs:
                    self.saved[json.dumps(k)] = self._dump(self._bufs[k])
            self.position = after
            self.rows += table.num_rows
            o.stats.update(self.stats)

    def _columns(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        o = self.owner
        names = table.column_names
        if o.key not in names:
            raise NotFoundError(
                f"window key column {o.key!r} is not in {o.stream.describe()}: {names}"
            )
        if o.features is None:
            skip = {o.key, o.target, "partition", "offset", "timestamp", "topic", "key"}
            o.features = [
                n
                for n in names
                if n not in skip
                and (
                    pa.types.is_integer(table.schema.field(n).type)
                    or pa.types.is_floating(table.schema.field(n).type)
                )
            ]
            if not o.features:
                raise DataError(f"{o.stream.describe()} has no numeric column to window over")
        x = np.empty((table.num_rows, len(o.features)), dtype=np.float32)
        for j, f in enumerate(o.features):
            if f not in names:
                raise NotFoundError(
                    f"window feature {f!r} is not in {o.stream.describe()}: {names}"
                )
            col = table.column(f)
            if col.null_count:
                raise DataError(f"window feature {f!r} of {o.stream.describe()} has a NULL")
            x[:, j] = col.to_numpy()
        y = None
        if o.target is not None:
            if o.target not in names:
                raise NotFoundError(f"window target {o.target!r} is not in {o.stream.describe()}")
            y = table.column(o.target).to_numpy(zero_copy_only=False)
            self._y_dtype = str(y.dtype)
        keys = table.column(o.key).to_numpy(zero_copy_only=False)
        return keys, x, y

    def _table_windows(
        self, table: pa.Table
    ) -> tuple[list[tuple[str, int, Any]], list[Any], list[Any]]:
        o = self.owner
        keys, x, y = self._columns(table)
        parts = table.column("partition").to_numpy()
        offs = table.column("offset").to_numpy()
        topics = table.column("topic").to_pylist() if "topic" in table.column_names else None
        t0 = o.stream.topics[0]
        uniq, inv = np.unique(keys, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1]
        out: list[tuple[int, str, int, Any]] = []
        touched: list[tuple[int, Any]] = []
        for g, idx in enumerate(np.split(order, bounds)):
            k = uniq[g].item() if hasattr(uniq[g], "item") else uniq[g]
            buf = self._bufs.get(k)
            if buf is None:
                buf = _Buf(
                    np.empty((0, x.shape[1]), np.float32), None if y is None else y[:0], 0, 0
                )
                self._bufs[k] = buf
            new_idx = idx
            if buf.skip:
                drop = min(buf.skip, len(new_idx))
                new_idx, buf.skip = new_idx[drop:], buf.skip - drop
            old = len(buf.x)
            bx = np.concatenate([buf.x, x[new_idx]]) if old else x[new_idx]
            by = None if y is None else (np.concatenate([buf.y, y[new_idx]]) if old else y[new_idx])
            start = 0
            while len(bx) - start >= o.size:
                last_row = int(new_idx[start + o.size - 1 - old])
                xw = torch.from_numpy(bx[start : start + o.size].copy())
                if by is not None:
                    sample: Any = (xw, torch.as_tensor(by[start : start + o.size].copy()))
                else:
                    sample = {"key": k, "x": xw}
                pk = f"{topics[last_row] if topics else t0}:{int(parts[last_row])}"
                out.append((last_row, pk, int(offs[last_row]), sample))
                start += o.step
            if start > len(bx):
                buf.skip = start - len(bx)
            buf.x, buf.y = (
                bx[start:].copy() if start else bx,
                (None if by is None else by[start:].copy() if start else by),
            )
            buf.tick = self.rows + int(idx[-1])
            touched.append((buf.tick, k))
        for _, k in sorted(touched, key=lambda t: t[0]):
            self._bufs.move_to_end(k)
        evicted = []
        while len(self._bufs) > o.max_keys:
            k, _ = self._bufs.popitem(last=False)
            evicted.append(k)
            self.evicted += 1
        out.sort(key=lambda w: w[0])
        return [(pk, off, s) for _, pk, off, s in out], [k for _, k in touched], evicted

    @property
    def stats(self) -> dict[str, int]:
        return {"windows": self.windows, "open_keys": len(self._bufs), "evicted": self.evicted}
