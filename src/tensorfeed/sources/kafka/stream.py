"""Kafka topics as an iterable dataset: ``tfd.KafkaStream("host:9092", "telemetry")``.

Each DataLoader worker (on each DDP rank) reads its own partitions, assigned explicitly from the
shard plan (``self.world()``), never through a consumer-group rebalance between our own workers.
The consumer is created inside the process that reads. Offsets are the stream's checkpoint (see
NOTE [ Kafka offsets as stream positions ] in ``reader.py``): ``tfd.DataLoader.state_dict()``
records per partition the next offset after the last message handed to the training loop, and
loading it resumes exactly there, with any group id. :meth:`KafkaStream.commit` writes the same
offsets to a consumer group for tools that follow the group (at-least-once).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pyarrow as pa

from ..._deps import require
from ...columns import RowLocator, make_spec
from ...dataset import StreamDataset, _digest
from ...errors import ConfigError, SourceChangedError, StateError
from ...sampling import World
from .client import (
    close_consumer,
    kafka_call,
    list_partitions,
    make_consumer,
    pkey,
    resolve_offsets,
    split_pkey,
)
from .decode import as_schema
from .reader import (
    LIVE_READERS,
    META_COLUMNS,
    META_KEY,
    KafkaStats,
    ShardReader,
    merge_positions,
    resume_moves,
)

__all__ = ["KafkaStats", "KafkaStream"]

_DECODES = ("json", "bytes")
_ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class _KafkaLocator(RowLocator):
    """Names a row of a batch by its topic, partition and offset in error messages."""

    def describe(self, table: pa.Table, i: int) -> str:
        names = table.column_names
        if "partition" in names and "offset" in names:
            topic = table.column("topic")[i].as_py() if "topic" in names else None
            where = f"partition {table.column('partition')[i].as_py()} offset {table.column('offset')[i].as_py()}"
            return f"{where} of {self.source}" if topic is None else f"topic {topic!r} {where}"
        return super().describe(table, i)


class KafkaStream(StreamDataset):
    """An iterable dataset over Kafka topics.

    ``decode``: ``"json"`` (objects become columns, parsed a whole poll batch at a time),
    ``"bytes"`` (a ``value`` column) or a picklable ``bytes -> dict`` callable. Kafka metadata
    columns ``key``, ``topic``, ``partition``, ``offset``, ``timestamp`` (ms) can be selected with
    ``columns``; ``partition`` and ``offset`` (and ``topic`` with several topics) are always
    present, because they are the checkpoint.

    ``start``: ``"earliest"``, ``"latest"``, ``"committed"`` (the group's offsets), a datetime or a
    timestamp in ms, or ``{(topic, partition): offset}``. ``end``: ``"now"`` (the end offsets when
    the epoch starts: a bounded epoch), ``None`` (stream forever), or the same forms as ``start``.
    ``idle_timeout`` (seconds) ends an epoch when nothing arrived for that long. ``config`` passes
    librdkafka settings through (security, SASL, fetch sizes). ``on_error``: ``"raise"`` a
    :class:`~tensorfeed.errors.DataError` naming topic, partition and offset of a malformed
    message, or ``"skip"`` it and count it (:attr:`stats`, :meth:`counts`).
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topics: str | Sequence[str],
        group_id: str | None = None,
        decode: str | Callable[[bytes], dict[str, Any]] = "json",
        start: Any = "earliest",
        end: Any = "now",
        columns: Sequence[str] | None = None,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        config: dict[str, Any] | None = None,
        idle_timeout: float | None = None,
        on_error: str = "raise",
        commit_on_checkpoint: bool = False,
        *,
        schema: Any = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        timeout: float = 10.0,
        poll_batch: int = 4096,
        poll_timeout: float = 0.1,
    ) -> None:
        if not isinstance(bootstrap_servers, str):
            bootstrap_servers = ",".join(bootstrap_servers)
        self.bootstrap_servers = bootstrap_servers
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics or len(set(self.topics)) != len(self.topics):
            raise ConfigError(f"topics must name at least one topic, once each: {self.topics!r}")
        if not (decode in _DECODES or callable(decode)):
            raise ConfigError(f"decode must be 'json', 'bytes' or a callable, got {decode!r}")
        if on_error not in _ON_ERROR:
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if commit_on_checkpoint and not group_id:
            raise ConfigError("commit_on_checkpoint=True needs a group_id to commit to")
        if start == "committed" and not group_id:
            raise ConfigError("start='committed' needs a group_id")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self.group_id = group_id
        self.decode = decode
        self.start = start
        self.end = end
        self.columns = list(columns) if columns is not None else None
        self.config = dict(config or {})
        self.idle_timeout = idle_timeout
        self.on_error = on_error
        self.commit_on_checkpoint = commit_on_checkpoint
        try:
            self.schema = as_schema(schema)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.timeout = float(timeout)
        self.poll_batch = int(poll_batch)
        self.poll_timeout = float(poll_timeout)
        self.spec = make_spec(features, target, transform, target_transform)
        self.stats = KafkaStats()
        self._layout()

    def _layout(self) -> None:
        """Which value columns are decoded and which metadata columns follow them."""
        multi = len(self.topics) > 1
        required = ["topic", "partition", "offset"] if multi else ["partition", "offset"]
        if self.columns is None:
            self.value_columns: list[str] | None = (
                list(self.schema.names) if self.schema is not None else None
            )
            # (x, y) samples use only the features and target: keep just the checkpoint columns
            extra = () if self.spec.supervised else ("timestamp",)
            self.meta_columns = [c for c in META_COLUMNS if c in required or c in extra]
        else:
            asked_meta = [c for c in self.columns if c in META_COLUMNS]
            self.value_columns = [c for c in self.columns if c not in META_COLUMNS]
            self.meta_columns = [c for c in META_COLUMNS if c in asked_meta or c in required]
        if self.decode == "bytes":
            self.value_columns = None
        for col in self.spec.needed_columns():
            if (
                self.value_columns is not None
                and col not in self.value_columns
                and col not in self.meta_columns
            ):
                raise ConfigError(
                    f"feature/target column {col!r} is not among the selected columns {self.columns}"
                )

    def output_columns(self, present: list[str]) -> list[str]:
        """Column order of a yielded table: ``columns`` as given, then the checkpoint columns."""
        if self.columns is None:
            values = [c for c in present if c not in self.meta_columns]
            return values + [c for c in self.meta_columns if c in present]
        order = [c for c in self.columns if c in present]
        return order + [c for c in self.meta_columns if c not in order]

    # -- construction from a URL ---------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaStream:
        """``kafka://host:9092[,host2:9092]/topic1,topic2?group_id=g&start=latest&end=none``.

        Query options are constructor arguments (``group_id``, ``decode``, ``start``, ``end``,
        ``columns``, ``features``, ``target``, ``idle_timeout``, ``on_error``, ``timeout``);
        a key with a dot (``security.protocol=SSL``) is a librdkafka setting. Keyword ``options``
        win over the URL.
        """
        parts = urlsplit(url)
        if parts.scheme.split("+")[0] != "kafka":
            raise ConfigError(f"not a kafka:// URL: {parts.scheme}://...")
        host = parts.netloc.rpartition("@")[2]
        topics = [unquote(t) for t in parts.path.strip("/").split(",") if t]
        if not host or not topics:
            raise ConfigError("a Kafka URL is kafka://host:port/topic[,topic2][?options]")
        kwargs: dict[str, Any] = {}
        config: dict[str, Any] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if "." in k:
                config[k] = v
            elif k in ("columns", "features"):
                kwargs[k] = [c for c in v.split(",") if c]
            elif k in ("idle_timeout", "timeout", "poll_timeout"):
                kwargs[k] = float(v)
            elif k == "poll_batch":
                kwargs[k] = int(v)
            elif k in ("start", "end"):
                kwargs[k] = None if v.lower() in ("none", "") else (int(v) if v.isdigit() else v)
            elif k == "commit_on_checkpoint":
                kwargs[k] = v.lower() in ("1", "true", "yes")
            else:
                kwargs[k] = v
        if config:
            kwargs["config"] = {**config, **options.pop("config", {})}
        kwargs.update(options)
        return cls(host, topics, **kwargs)

    # -- identity -------------------------------------------------------------------------------
    def describe(self) -> str:
        # Deliberately without servers or group: a checkpoint moves between both.
        names = ", ".join(repr(t) for t in self.topics)
        return f"Kafka topic{'s' if len(self.topics) > 1 else ''} {names}"

    def _locator(self, table: pa.Table) -> RowLocator:
        return _KafkaLocator(self.describe())

    def fingerprint(self) -> str:
        decode = (
            self.decode
            if isinstance(self.decode, str)
            else getattr(self.decode, "__qualname__", "callable")
        )
        return _digest(["KafkaStream", self.topics, decode, self.columns])

    def __repr__(self) -> str:
        return f"KafkaStream({self.describe()} at {self.bootstrap_servers})"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["stats"] = KafkaStats()  # each process counts its own reading
        return state

    # -- the StreamDataset contract ------------------------------------------------------------
    def _start_position(self) -> Any:
        return {}

    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        if position and not isinstance(position, dict):
            raise StateError(f"a checkpoint position of {self.describe()} is a dict of offsets")
        return ShardReader(self, world, epoch, position).tables()

    def _advance(self, position: Any, table: pa.Table) -> Any:
        nxt: dict[str, int] = dict(position.get("next", {})) if position else {}
        out: dict[str, Any] = {
            "next": nxt,
            "end": position.get("end") if position else None,
            "delivered": int(position.get("delivered", 0)) if position else 0,
            "skipped": int(position.get("skipped", 0)) if position else 0,
        }
        meta = (table.schema.metadata or {}).get(META_KEY)
        reader = None
        if meta is not None:
            info = json.loads(meta)
            for k, v in info["start"].items():
                nxt.setdefault(k, v)
            if out["end"] is None:
                out["end"] = info["end"]
            reader = LIVE_READERS.get(info["reader"])
        if table.num_rows:
            parts = table.column("partition").to_numpy()
            offs = table.column("offset").to_numpy()
            if len(self.topics) > 1:
                topics = table.column("topic").to_pylist()
                for t, p, o in zip(topics, parts.tolist(), offs.tolist()):
                    key = f"{t}:{p}"
                    nxt[key] = max(nxt.get(key, 0), int(o) + 1)
            else:
                t0 = self.topics[0]
                for p in np.unique(parts).tolist():
                    key = f"{t0}:{p}"
                    nxt[key] = max(nxt.get(key, 0), int(offs[parts == p].max()) + 1)
            out["delivered"] += table.num_rows
        if reader is not None and reader.pending_skips:
            out["skipped"] += reader.absorb_skips(nxt)
        return out

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        """Partitions are the fixed splits (partition i of the sorted list read by shard
        i % num_shards): merge every shard's offsets, then hand each new shard its partitions'
        (NOTE [ Elastic stream checkpoints ] in ``stream_state.py``)."""
        merged = merge_positions(positions, self.describe())
        consumer = make_consumer(self)
        try:
            parts = [pkey(t, p) for t, p in list_partitions(self, consumer)]
        finally:
            close_consumer(consumer)
        unknown = sorted(set(merged["next"]) - set(parts))
        if unknown:
            raise StateError(
                f"this checkpoint of {self.describe()} holds partitions {unknown} that the topic "
                "no longer has"
            )
        end = merged["end"]
        out: list[Any] = []
        for k in range(num_shards):
            mine = parts[k::num_shards]
            out.append(
                {
                    "next": {p: merged["next"][p] for p in mine if p in merged["next"]},
                    "end": {p: end[p] for p in mine} if all(p in end for p in mine) else None,
                    "delivered": merged["delivered"] if k == 0 else 0,
                    "skipped": merged["skipped"] if k == 0 else 0,
                }
            )
        return out

    # NOTE [ Continuing a Kafka epoch over deleted offsets ]
    # A message's key is its (partition, offset), so "delivered this epoch" is every offset below
    # the checkpoint's next one, per partition. When a partition no longer holds that offset,
    # ``on_change="raise"`` (the default) names it. With ``on_change="continue"`` the partition
    # goes on from what it still holds:
    # - retention deleted nxt..low-1: resume at ``low`` (or at a bounded epoch's end, if that
    #   went too); the deleted messages are skipped and counted;
    # - the topic was recreated below nxt: its offsets now name other messages, none of the
    #   epoch's. Resume at its current end ``high``: a bounded epoch's pinned end moves down to
    #   it (the partition is done), an unbounded stream takes messages as they arrive.
    # The other partitions resume exactly. ``loader.stats.source_changes`` says what moved.
    _continues_over_changes = True  # tfd.DataLoader(on_change="continue") accepts this stream

    def _check_resume(
        self, positions: list[Any], continuing: bool = False
    ) -> dict[str, Any] | None:
        """Every partition still holds the checkpoint's next offset: a SourceChangedError names
        those whose offsets were deleted (retention) or that restart below it (recreated).
        ``continuing``: move those partitions on instead (see the NOTE above), changing
        ``positions`` in place, and return what moved for ``loader.stats.source_changes``."""
        merged = merge_positions(positions, self.describe())["next"]
        if not merged:
            return None
        ck = require("confluent_kafka", "kafka", "reading Kafka")
        consumer = make_consumer(self)
        marks = {}
        try:
            for key in sorted(merged):
                t, p = split_pkey(key)
                marks[key] = kafka_call(
                    self,
                    f"read the offsets of {key}",
                    consumer.get_watermark_offsets,
                    ck.TopicPartition(t, p),
                    timeout=self.timeout,
                )
        finally:
            close_consumer(consumer)
        pinned = self._restored_end["end"] if self._restored_end is not None else None
        moved = resume_moves(merged, marks, pinned)
        if not moved:
            return None
        if not continuing:
            raise SourceChangedError(
                f"{self.describe()} changed since this checkpoint: "
                + "; ".join(m["problem"] for m in moved.values())
                + " (on_change='continue' goes on from the offsets still there)"
            )
        for key, m in moved.items():
            if pinned is not None and key in pinned:
                pinned[key] = m["end"]
            for pos in positions:
                if isinstance(pos, dict) and key in (pos.get("next") or {}):
                    pos["next"][key] = m["now"]
                    if isinstance(pos.get("end"), dict) and key in pos["end"]:
                        pos["end"][key] = m["end"]
        skipped = [m["skipped"] for m in moved.values()]
        return {
            "partitions": {
                k: {f: m[f] for f in ("change", "then", "now")} for k, m in moved.items()
            },
            "messages_skipped": None if None in skipped else sum(skipped),
        }

    # -- checkpoints and the consumer group ------------------------------------------------------
    def _positions(self, state_or_loader: Any) -> list[dict[str, Any]]:
        state = state_or_loader
        if not isinstance(state, dict) and hasattr(state, "state_dict"):
            state = state.state_dict()
        found: list[dict[str, Any]] = []
        me = self.describe()

        def walk(obj: Any) -> None:
            if isinstance(obj, dict):
                if obj.get("source") == me and isinstance(obj.get("position"), dict):
                    found.append(obj["position"])
                    return
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list | tuple):
                for v in obj:
                    walk(v)

        walk(state)
        return found

    def offsets(self, state_or_loader: Any) -> dict[tuple[str, int], int]:
        """``{(topic, partition): next offset}`` recorded in a ``tfd.DataLoader`` state dict (or
        the loader itself) over all its workers: the offsets to commit or resume from."""
        out: dict[tuple[str, int], int] = {}
        for pos in self._positions(state_or_loader):
            for key, off in pos.get("next", {}).items():
                tp = split_pkey(key)
                out[tp] = max(out.get(tp, 0), int(off))
        return dict(sorted(out.items()))

    def counts(self, state_or_loader: Any) -> dict[str, int]:
        """``{"delivered", "skipped"}`` messages of the current epoch in a checkpoint, summed
        over workers: delivered to the training loop, and malformed ones skipped."""
        pos = self._positions(state_or_loader)
        return {
            "delivered": sum(int(p.get("delivered", 0)) for p in pos),
            "skipped": sum(int(p.get("skipped", 0)) for p in pos),
        }

    def commit(
        self, state_or_loader: Any, group_id: str | None = None
    ) -> dict[tuple[str, int], int]:
        """Write the offsets of a checkpoint (see :meth:`offsets`) to the consumer group
        ``group_id`` (default: the stream's). Returns what was committed. A consumer that follows
        the group then resumes after the last message the training loop received: at least once
        for it (messages after the checkpoint are seen again)."""
        group = group_id or self.group_id
        if not group:
            raise ConfigError("commit() needs a group_id (here or in the KafkaStream)")
        offsets = self.offsets(state_or_loader)
        if not offsets:
            return {}
        ck = require("confluent_kafka", "kafka", "committing Kafka offsets")
        consumer = make_consumer(self._with_group(group))
        try:
            kafka_call(
                self,
                f"commit offsets for group {group!r}",
                consumer.commit,
                offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        finally:
            close_consumer(consumer)
        return offsets

    def committed(self, group_id: str | None = None) -> dict[tuple[str, int], int]:
        """The group's committed offsets for every partition of the topics (-1: none)."""
        group = group_id or self.group_id
        if not group:
            raise ConfigError("committed() needs a group_id")
        ck = require("confluent_kafka", "kafka")
        stream = self._with_group(group)
        consumer = make_consumer(stream)
        try:
            parts = list_partitions(stream, consumer)
            got = kafka_call(
                self,
                f"read the offsets of group {group!r}",
                consumer.committed,
                [ck.TopicPartition(t, p) for t, p in parts],
                timeout=self.timeout,
            )
        finally:
            close_consumer(consumer)
        return {(x.topic, x.partition): int(x.offset) for x in got}

    def lag(self, state_or_loader: Any = None) -> dict[tuple[str, int], int]:
        """Messages behind the end of each partition: from a checkpoint's offsets, or (without
        one) from the group's committed offsets."""
        ck = require("confluent_kafka", "kafka")
        consumer = make_consumer(self)
        try:
            parts = list_partitions(self, consumer)
            pos = self.offsets(state_or_loader) if state_or_loader is not None else self.committed()
            out = {}
            for t, p in parts:
                low, high = kafka_call(
                    self,
                    "read the end offsets",
                    consumer.get_watermark_offsets,
                    ck.TopicPartition(t, p),
                    timeout=self.timeout,
                    cached=False,
                )
                at = pos.get((t, p), -1)
                out[(t, p)] = int(high) - (int(at) if at >= 0 else int(low))
        finally:
            close_consumer(consumer)
        return out

    # -- the epoch's end, pinned once -----------------------------------------------------------
    # NOTE [ A bounded epoch's end ]
    # With ``end`` set, ``tfd.DataLoader`` pins the epoch's end offsets for every partition in the
    # main process when the epoch starts (``set_epoch``); the workers (pickled after that) read to
    # exactly those, and the checkpoint carries them (``_checkpoint_state``), so a worker that had
    # not handed out a batch yet resumes to the same end instead of resolving "now" anew. Without
    # a pin (a plain torch DataLoader, a persistent worker's later epochs) each shard resolves
    # its end when it starts, as before. The epoch then delivers every message up to the end, or
    # raises: an ``idle_timeout`` that runs out before the end is a ConnectionLostError naming the
    # partitions and how far they got, and ``loader_timeout`` (the loader's ``timeout=`` with
    # ``num_workers=0``, where torch's own cannot apply) a RuntimeError like torch's.
    _epoch_end: dict[str, Any] | None = None
    _restored_end: dict[str, Any] | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        restored, self._restored_end = self._restored_end, None
        if restored is not None and restored["epoch"] == self.epoch:
            self._epoch_end = restored
        elif self.end is None:
            self._epoch_end = None
        else:
            consumer = make_consumer(self)
            try:
                parts = list_partitions(self, consumer)
                end = resolve_offsets(self, consumer, parts, self.end, "end")
            finally:
                close_consumer(consumer)
            self._epoch_end = {"epoch": self.epoch, "end": end}

    def pinned_end(self, epoch: int) -> dict[str, int] | None:
        """The end offsets pinned for ``epoch`` (``{"topic:partition": offset}``), if any."""
        pin = self._epoch_end
        return dict(pin["end"]) if pin is not None and pin["epoch"] == epoch else None

    def _job_view(self) -> dict[str, Any] | None:
        """The end offsets rank 0 pinned (NOTE [ One view of the source for the job ])."""
        return copy.deepcopy(self._epoch_end)

    def _adopt_job_view(self, view: dict[str, Any] | None) -> None:
        self._epoch_end = copy.deepcopy(view)

    def _checkpoint_state(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._epoch_end)

    def _restore_checkpoint_state(self, state: Any) -> None:
        """Take the pinned end of a checkpoint (checked) for the next ``set_epoch``."""
        if state is None:
            return
        end = state.get("end") if isinstance(state, dict) else None
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if (
            not isinstance(epoch, int)
            or not isinstance(end, dict)
            or not all(isinstance(k, str) and isinstance(v, int) for k, v in end.items())
        ):
            raise StateError(
                f"the checkpoint's pinned end of {self.describe()} must be {{'epoch': int, "
                f"'end': {{'topic:partition': offset}}}}, got {state!r}"
            )
        unknown = sorted({split_pkey(k)[0] for k in end} - set(self.topics))
        if unknown:
            raise StateError(f"the checkpoint's pinned end names other topics: {unknown}")
        self._restored_end = {"epoch": epoch, "end": dict(end)}

    def _on_checkpoint(self, state: dict[str, Any]) -> None:
        """Called by ``tfd.DataLoader.state_dict()``: commit when ``commit_on_checkpoint``."""
        if self.commit_on_checkpoint:
            self.commit(state)

    def _with_group(self, group: str) -> KafkaStream:
        other = copy.copy(self)
        other.group_id = group
        return other

    # -- telemetry shapes ------------------------------------------------------------------------
    def windows(
        self,
        key: str,
        size: int,
        step: int = 1,
        features: Sequence[str] | None = None,
        target: str | None = None,
        max_keys: int = 10_000,
    ) -> Any:
        """Fixed-length per-key sequences: an iterable dataset of ``[size, len(features)]``
        float32 tensors (``(x, y)`` with ``target``: y is the target over the window), sliding by
        ``step`` rows, with at most ``max_keys`` open keys (least recently updated evicted and
        counted). See :class:`~tensorfeed.sources.kafka.windows.KafkaWindows`."""
        from .windows import KafkaWindows

        return KafkaWindows(self, key, size, step, features, target, max_keys)
