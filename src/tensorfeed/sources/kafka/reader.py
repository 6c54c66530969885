"""One shard of a :class:`~tensorfeed.sources.kafka.KafkaStream`: a consumer in this process that
reads its explicitly assigned partitions from the resolved start offsets to the epoch's end.

NOTE [ Kafka offsets as stream positions ]
A shard's position is ``{"next": {"topic:partition": offset}, "end": {...} | None,
"delivered": n, "skipped": n}``: for every partition of the shard, the offset of the next message
to hand out, so all messages of that partition below it were handed to the training loop (a
partition's messages arrive in offset order, and batches are handed out in order). ``end`` is the
epoch's end offsets, captured when the epoch first started, so a resumed epoch ends where the
uninterrupted one would have, even if producers kept writing. The reader stamps every table it
yields with the shard's resolved start and end offsets (schema metadata), so ``_advance`` can
record every partition of the shard, also those that have not delivered a row yet.

Skipped (malformed) messages have no row, so they cannot move the position by themselves. The
reader remembers, for each skipped message, the last good offset before it in its partition; once
that row has been handed out, nothing the loop has not seen lies before the skipped message, and
``_advance`` moves the partition's next offset past it and counts it in ``skipped``. So
``delivered`` and ``skipped`` count exactly the messages below the checkpoint, a resumed run
neither re-counts nor misses one, and at the end of an epoch delivered + skipped = produced. For
the last messages of an epoch to be counted, the reader holds its latest table back until the
next non-empty one (or, streaming without an end, an idle poll) or the end of the epoch, so the
last batches are handed out after the reader saw everything.

On another number of shards (``KafkaStream._regroup``) the partitions are the fixed splits:
:func:`merge_positions` joins every shard's offsets, and each new shard takes its partitions'.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..._deps import require
from ...columns import SampleSpec
from ...errors import (
    ConnectionFailedError,
    ConnectionLostError,
    DataError,
    NotFoundError,
    SourceChangedError,
    StateError,
)
from ...sampling import World
from .client import (
    KafkaSettings,
    close_consumer,
    list_partitions,
    log,
    make_consumer,
    pkey,
    resolve_offsets,
    split_pkey,
)
from .decode import Decoder

META_KEY = b"tensorfeed.kafka"
META_COLUMNS = ("key", "topic", "partition", "offset", "timestamp")

# Readers alive in this process, by the token they stamp on their tables (see _advance).
LIVE_READERS: weakref.WeakValueDictionary[str, ShardReader] = weakref.WeakValueDictionary()


@dataclass
class KafkaStats:
    """What the readers of a stream did in this process (each DataLoader worker has its own;
    ``KafkaStream.counts(loader)`` gives the checkpointed totals over all workers)."""

    messages: int = 0  # messages read inside the epoch's bounds
    rows: int = 0  # decoded rows passed on
    skipped: int = 0  # malformed messages skipped (on_error="skip")
    client_errors: int = 0  # transient client errors (broker down ...), retried by librdkafka
    last_client_error: str = ""
    recent_skips: list[str] = field(default_factory=list)  # "topic/partition/offset: reason"

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "rows": self.rows,
            "skipped": self.skipped,
            "client_errors": self.client_errors,
            "last_client_error": self.last_client_error,
        }


class ShardSource(KafkaSettings, Protocol):
    """What a shard reader reads from its stream, beyond the client's settings (``KafkaStream``
    has it all; its docstring says what each one means)."""

    decode: Any
    schema: pa.Schema | None
    value_columns: list[str] | None
    meta_columns: list[str]
    spec: SampleSpec
    start: Any
    end: Any
    idle_timeout: float | None
    on_error: str
    poll_batch: int
    poll_timeout: float
    loader_timeout: float
    bootstrap_servers: str
    stats: KafkaStats

    def describe(self) -> str: ...

    def pinned_end(self, epoch: int) -> dict[str, int] | None: ...

    def output_columns(self, present: list[str]) -> list[str]: ...


class ShardReader:
    """Reads one shard for one epoch (see NOTE [ Kafka offsets as stream positions ])."""

    def __init__(self, stream: ShardSource, world: World, epoch: int, position: Any) -> None:
        self.stream = stream
        self.world = world
        self.epoch = epoch
        self.position = position or {}
        # per partition: the last good offset read, and skipped messages not yet counted in a
        # position as (offset, last good offset before it)
        self.last_good: dict[str, int] = {}
        self.pending_skips: dict[str, deque[tuple[int, int]]] = {}
        self.token = uuid.uuid4().hex
        self.decoder = Decoder(stream.decode, stream.schema, stream.value_columns)
        self.fatal: str | None = None
        self.checked = False
        LIVE_READERS[self.token] = self

    # -- set-up -----------------------------------------------------------------------------------
    def _on_client_error(self, err: Any) -> None:
        st = self.stream.stats
        st.client_errors += 1
        st.last_client_error = f"{err.name()}: {err.str()}"
        if err.fatal():
            self.fatal = st.last_client_error
        log.debug("Kafka client error: %s", st.last_client_error)

    def _my_partitions(self, parts: list[tuple[str, int]]) -> list[tuple[str, int]]:
        shard, n = self.world.shard, self.world.num_shards
        mine = parts[shard::n]
        if n > len(parts):
            warnings.warn(
                f"{self.stream.describe()} has {len(parts)} partition(s) but the loader runs "
                f"{n} shards (DDP ranks x DataLoader workers): shard {shard} "
                + (
                    "has no partition and ends at once"
                    if not mine
                    else "shares the work with idle shards"
                )
                + f"; use at most {len(parts)} shards to read in parallel",
                stacklevel=2,
            )
        return mine

    def _check_position(self, mine: list[tuple[str, int]]) -> None:
        given = set(self.position.get("next", {}))
        extra = given - {pkey(t, p) for t, p in mine}
        if extra:
            raise StateError(
                f"this checkpoint of {self.stream.describe()} holds partitions {sorted(extra)} that "
                f"shard {self.world.shard} of {self.world.num_shards} does not read: it was taken "
                "with a different number of DataLoader workers or DDP ranks"
            )

    # -- reading ----------------------------------------------------------------------------------
    def tables(self) -> Iterator[pa.Table]:
        ck = require("confluent_kafka", "kafka", "reading Kafka")
        consumer = make_consumer(self.stream, self._on_client_error)
        try:
            parts = list_partitions(self.stream, consumer)
            mine = self._my_partitions(parts)
            self._check_position(mine)
            if not mine:
                return
            nxt = dict(self.position.get("next", {}))
            missing = [(t, p) for t, p in mine if pkey(t, p) not in nxt]
            if missing:
                nxt.update(
                    resolve_offsets(self.stream, consumer, missing, self.stream.start, "start")
                )
            self.last_good = {pkey(t, p): nxt[pkey(t, p)] - 1 for t, p in mine}
            end = self.position.get("end")
            if end is None and self.stream.end is not None:
                end = self._end_offsets(consumer, mine)
            meta = json.dumps(
                {
                    "start": {pkey(t, p): nxt[pkey(t, p)] for t, p in mine},
                    "end": end,
                    "reader": self.token,
                }
            ).encode()
            active = [(t, p) for t, p in mine if end is None or nxt[pkey(t, p)] < end[pkey(t, p)]]
            if not active:
                return
            consumer.assign([ck.TopicPartition(t, p, nxt[pkey(t, p)]) for t, p in active])
            yield from self._consume(consumer, active, end, {META_KEY: meta})
        finally:
            close_consumer(consumer)
            LIVE_READERS.pop(self.token, None)

    def _end_offsets(self, consumer: Any, mine: list[tuple[str, int]]) -> dict[str, int]:
        """This shard's end offsets: those the stream pinned for the epoch (NOTE [ A bounded
        epoch's end ] in stream.py), resolved here only for partitions it did not pin."""
        pinned = self.stream.pinned_end(self.epoch) or {}
        end = {pkey(t, p): pinned[pkey(t, p)] for t, p in mine if pkey(t, p) in pinned}
        missing = [(t, p) for t, p in mine if pkey(t, p) not in end]
        if missing:
            end.update(resolve_offsets(self.stream, consumer, missing, self.stream.end, "end"))
        return end

    def _short_of_the_end(self, end: dict[str, int], open_parts: set[str]) -> str:
        """Where the open partitions of a bounded epoch stand, for an error message."""
        where = [
            f"{k} at offset {self.last_good.get(k, -1) + 1} of {end[k]}" for k in sorted(open_parts)
        ]
        return f"{self.stream.describe()} is short of the epoch's end: " + ", ".join(where[:8])

    def _consume(
        self,
        consumer: Any,
        active: list[tuple[str, int]],
        end: dict[str, int] | None,
        meta: dict[bytes, bytes],
    ) -> Iterator[pa.Table]:
        s = self.stream
        open_parts = {pkey(t, p) for t, p in active}
        last_data = time.monotonic()
        held: pa.Table | None = None  # see the NOTE: the latest table waits for the next one
        while open_parts:
            table = self._poll(consumer, end, open_parts)
            if table is None:  # an idle poll
                if s.end is None and held is not None:
                    yield held
                    held = None
                idle = time.monotonic() - last_data
                if s.loader_timeout and idle >= s.loader_timeout:  # num_workers=0 (see stream.py)
                    raise RuntimeError(
                        f"DataLoader timed out after {s.loader_timeout:g} seconds: no message "
                        f"from {s.describe()} at {s.bootstrap_servers}"
                        + (f"; {self._short_of_the_end(end, open_parts)}" if end else "")
                    )
                if s.idle_timeout is not None and idle >= s.idle_timeout:
                    if end is not None:  # a bounded epoch ends at its end offsets, or raises
                        raise ConnectionLostError(
                            f"nothing arrived for {s.idle_timeout:g} s (idle_timeout) and "
                            f"{self._short_of_the_end(end, open_parts)}; is the broker at "
                            f"{s.bootstrap_servers} reachable?"
                        )
                    break
                continue
            last_data = time.monotonic()
            if table.num_rows:
                if held is not None:
                    yield held
                held = table.replace_schema_metadata(meta)
        if held is not None:
            yield held

    def _poll(
        self, consumer: Any, end: dict[str, int] | None, open_parts: set[str]
    ) -> pa.Table | None:
        """One poll: the decoded table (maybe empty), or None when no message arrived."""
        ck = require("confluent_kafka", "kafka")
        s = self.stream
        if self.fatal:
            raise ConnectionFailedError(
                f"the Kafka client for {s.describe()} failed fatally: {self.fatal}"
            )
        try:
            msgs = consumer.consume(s.poll_batch, timeout=s.poll_timeout)
        except ck.KafkaException as exc:
            raise ConnectionFailedError(
                f"reading {s.describe()} from {s.bootstrap_servers} failed: {exc.args[0]}"
            ) from None
        except RuntimeError as exc:  # closed under the reader (close_consumers_of)
            raise ConnectionFailedError(
                f"reading {s.describe()} from {s.bootstrap_servers} failed: the consumer was "
                f"closed ({exc}) because that cluster was shut down in this process"
            ) from None
        data = [m for m in msgs if m.error() is None]
        if len(data) != len(msgs):
            self._handle_events(consumer, msgs, end, open_parts)
        if not data:
            return None
        table = self._table(consumer, data, end, open_parts)
        return table if table is not None else pa.table({})

    def _handle_events(
        self, consumer: Any, msgs: list[Any], end: dict[str, int] | None, open_parts: set[str]
    ) -> None:
        ck = require("confluent_kafka", "kafka")
        KE = ck.KafkaError
        for m in msgs:
            err = m.error()
            if err is None:
                continue
            code = err.code()
            if code == KE._PARTITION_EOF:
                key = pkey(m.topic(), m.partition())
                if end is not None and key in open_parts and m.offset() >= end[key]:
                    self._close_partition(consumer, key, open_parts)
                continue
            where = f"topic {m.topic()!r} partition {m.partition()}" if m.topic() else "the stream"
            if code in (KE.UNKNOWN_TOPIC_OR_PART, KE._UNKNOWN_TOPIC, KE._UNKNOWN_PARTITION):
                raise NotFoundError(f"Kafka {where} no longer exists ({err.str()})")
            if code in (KE._AUTO_OFFSET_RESET, KE.OFFSET_OUT_OF_RANGE):
                raise SourceChangedError(
                    f"the next offset of Kafka {where} is no longer available (deleted by "
                    f"retention?): {err.str()}; restart from start='earliest' or set "
                    "config={'auto.offset.reset': 'earliest'} to skip ahead"
                )
            if err.fatal() or "AUTHORIZATION" in err.name() or "AUTHENTICATION" in err.name():
                raise ConnectionFailedError(f"Kafka refused to serve {where}: {err.name()}")
            self._on_client_error(err)

    def _close_partition(self, consumer: Any, key: str, open_parts: set[str]) -> None:
        ck = require("confluent_kafka", "kafka")
        open_parts.discard(key)
        t, p = split_pkey(key)
        with contextlib.suppress(ck.KafkaException):  # pausing is only an optimisation
            consumer.pause([ck.TopicPartition(t, p)])

    def _table(
        self, consumer: Any, data: list[Any], end: dict[str, int] | None, open_parts: set[str]
    ) -> pa.Table | None:
        s = self.stream
        multi = len(s.topics) > 1
        parts = np.fromiter((m.partition() for m in data), np.int32, len(data))
        offs = np.fromiter((m.offset() for m in data), np.int64, len(data))
        topics = [m.topic() for m in data] if multi else None
        if end is not None:
            keep = self._bound(consumer, parts, offs, topics, end, open_parts)
            if keep is not None:
                data = [m for m, k in zip(data, keep) if k]
                parts, offs = parts[keep], offs[keep]
                topics = [t for t, k in zip(topics, keep) if k] if topics is not None else None
                if not data:
                    return None
        values = [m.value() for m in data]
        s.stats.messages += len(values)
        table, bad = self.decoder.decode(values)
        cols: dict[str, Any] = {}
        if bad:
            self._on_bad(data, bad)
        self._track(parts, offs, topics, {i for i, _ in bad})
        if bad:
            good = np.ones(len(data), dtype=bool)
            good[[i for i, _ in bad]] = False
            parts, offs = parts[good], offs[good]
            data = [m for m, g in zip(data, good) if g]
            topics = [t for t, g in zip(topics, good) if g] if topics is not None else None
        for name in s.meta_columns:
            if name == "partition":
                cols[name] = pa.array(parts, pa.int32())
            elif name == "offset":
                cols[name] = pa.array(offs, pa.int64())
            elif name == "timestamp":
                cols[name] = pa.array(
                    np.fromiter((m.timestamp()[1] for m in data), np.int64, len(data)), pa.int64()
                )
            elif name == "topic":
                cols[name] = pa.array(
                    topics if topics is not None else [s.topics[0]] * len(data), pa.string()
                )
            elif name == "key":
                cols[name] = pa.array([m.key() for m in data], pa.binary())
        for name, arr in cols.items():
            table = table.append_column(name, arr)
        s.stats.rows += table.num_rows
        if not self.checked:  # a feature/target column the messages do not have: say so once
            s.spec.check_columns(table.column_names, s.describe())
            self.checked = True
        return table.select(s.output_columns(table.column_names))

    def _bound(
        self,
        consumer: Any,
        parts: np.ndarray,
        offs: np.ndarray,
        topics: list[str] | None,
        end: dict[str, int],
        open_parts: set[str],
    ) -> np.ndarray | None:
        """Drop messages at or past the epoch end; close partitions that reached it. Returns the
        mask of messages to keep, or None when all are kept."""
        s = self.stream
        if topics is None:
            t0 = s.topics[0]
            lim = np.empty(len(parts), dtype=np.int64)
            for p in np.unique(parts).tolist():
                lim[parts == p] = end[pkey(t0, p)]
        else:
            lim = np.array([end[pkey(t, int(p))] for t, p in zip(topics, parts.tolist())], np.int64)
        keep = offs < lim
        reached = offs + 1 >= lim
        if reached.any():
            for i in np.flatnonzero(reached).tolist():
                key = pkey(topics[i] if topics is not None else s.topics[0], int(parts[i]))
                if key in open_parts:
                    self._close_partition(consumer, key, open_parts)
        return None if keep.all() else keep

    def _track(
        self, parts: np.ndarray, offs: np.ndarray, topics: list[str] | None, bad: set[int]
    ) -> None:
        """Remember the last good offset per partition, and for each skipped message the last
        good offset before it (see NOTE [ Kafka offsets as stream positions ])."""
        t0 = self.stream.topics[0]
        lg = self.last_good
        if not bad and topics is None:
            for p in np.unique(parts).tolist():
                lg[pkey(t0, p)] = int(offs[parts == p].max())
            return
        for i, (p, o) in enumerate(zip(parts.tolist(), offs.tolist())):
            k = pkey(topics[i] if topics is not None else t0, p)
            if i in bad:
                self.pending_skips.setdefault(k, deque()).append((o, lg.get(k, -1)))
            else:
                lg[k] = o

    def absorb_skips(self, nxt: dict[str, int]) -> int:
        """Move ``nxt`` past skipped messages whose preceding good row was handed out; returns
        how many were absorbed (called by ``KafkaStream._advance`` in this process)."""
        n = 0
        for k, dq in self.pending_skips.items():
            at = nxt.get(k)
            if at is None:
                continue
            while dq and dq[0][1] < at:
                off, _ = dq.popleft()
                at = max(at, off + 1)
                n += 1
            nxt[k] = at
        return n

    def _on_bad(self, data: list[Any], bad: list[tuple[int, str]]) -> None:
        s = self.stream
        i, why = bad[0]
        m = data[i]
        where = f"topic {m.topic()!r} partition {m.partition()} offset {m.offset()}"
        if s.on_error == "raise":
            raise DataError(
                f"malformed Kafka message at {where}: {why} "
                "(on_error='skip' skips and counts such messages)"
            )
        s.stats.skipped += len(bad)
        for i, why in bad:
            if len(s.stats.recent_skips) >= 20:
                s.stats.recent_skips.pop(0)
            m = data[i]
            s.stats.recent_skips.append(f"{m.topic()}/{m.partition()}/{m.offset()}: {why}")


def merge_positions(positions: list[Any], where: str) -> dict[str, Any]:
    """The offsets of all shards of a checkpoint as one position (None: a shard not started)."""
    merged: dict[str, Any] = {"next": {}, "end": {}, "delivered": 0, "skipped": 0}
    for k, pos in enumerate(positions):
        if pos is None or pos == {}:
            continue
        here = f"a checkpoint position of {where}, shard {k} of {len(positions)}"
        if not isinstance(pos, dict) or not isinstance(pos.get("next", {}), dict):
            raise StateError(f"{here} must be {{'next': {{'topic:partition': offset}}, ...}}")
        for name in ("delivered", "skipped"):
            v = pos.get(name, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise StateError(f"{here} has {name}={v!r}: it must be an int >= 0")
            merged[name] += v
        for part, fields in (("next", pos.get("next", {})), ("end", pos.get("end") or {})):
            for key, off in fields.items():
                if not isinstance(key, str) or isinstance(off, bool) or not isinstance(off, int):
                    raise StateError(f"{here} has {part}[{key!r}] = {off!r}: not an offset")
                if off < 0:
                    raise StateError(f"{here} has {part}[{key!r}] = {off}: offsets are >= 0")
                merged[part][key] = max(merged[part].get(key, off), off)
    return merged


def resume_moves(
    nxt: dict[str, int], marks: dict[str, tuple[int, int]], end: dict[str, int] | None
) -> dict[str, dict[str, Any]]:
    """The partitions whose checkpointed next offset ``nxt`` the watermarks ``marks`` (low,
    high) no longer hold, and where each goes on (NOTE [ Continuing a Kafka epoch over deleted
    offsets ] in stream.py): ``now`` (the next offset), ``end`` (a bounded epoch's end),
    ``skipped`` (messages lost, None where unknown) and ``problem`` (what to say)."""
    out: dict[str, dict[str, Any]] = {}
    for key, at in sorted(nxt.items()):
        low, high = marks[key]
        stop = end.get(key) if end is not None else None
        if at < low:
            now = low if stop is None else min(low, max(stop, at))
            out[key] = {
                "change": "deleted",
                "problem": f"{key}: offsets {at}..{low - 1} were deleted (retention) since the "
                f"checkpoint, which resumes at {at}",
                "then": at,
                "now": now,
                "end": stop,
                "skipped": now - at,
            }
        elif at > high:
            out[key] = {
                "change": "recreated",
                "problem": f"{key}: holds offsets below {high} but the checkpoint resumes at "
                f"{at} (the topic was deleted and recreated?)",
                "then": at,
                "now": high,
                "end": None if stop is None else min(stop, high),
                "skipped": None if stop is None else max(stop - at, 0),
            }
    return out
