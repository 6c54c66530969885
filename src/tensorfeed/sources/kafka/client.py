"""The Kafka client of a stream: consumers made and closed in the process that owns them
(NOTE [ Kafka clients and fork ]), metadata calls with tensorfeed errors, and resolving
``start``/``end`` specs (earliest, latest, committed, a time, a dict) to offsets.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from datetime import datetime
from typing import Any, Protocol

from ..._deps import require
from ...errors import ConfigError, ConnectionFailedError, NotFoundError

# librdkafka's own log lines (connection refused, retries ...) go to this logger; like any library
# logger it stays silent unless the application configures logging. Errors that matter are raised
# or counted in KafkaStream.stats.
log = logging.getLogger("tensorfeed.kafka")
log.addHandler(logging.NullHandler())


class KafkaSettings(Protocol):
    """The settings of a stream that its client reads (``KafkaStream`` has them all). Declared
    here, below the stream, so the client and the reader need nothing above them."""

    bootstrap_servers: str
    topics: list[str]
    group_id: str | None
    config: dict[str, Any]
    timeout: float


def pkey(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def split_pkey(key: str) -> tuple[str, int]:
    topic, _, part = key.rpartition(":")
    return topic, int(part)


# NOTE [ Kafka clients and fork ]
# A librdkafka client works only in the process that created it: its threads do not survive
# fork. A forked DataLoader worker inherits the parent's memory, including a reader generator that
# is suspended or waiting for the garbage collector; when the worker collects it, closing (or even
# destroying) that consumer waits forever for threads that are not there. So every consumer is
# registered here with its pid and closed only by that process; in a forked child the inherited
# registry keeps the parent's consumers referenced, so they are never closed nor destroyed there.
_OPEN: dict[int, tuple[int, Any, str]] = {}  # id -> (pid, consumer, bootstrap servers)


def _close_ours_at_exit() -> None:
    """Close this process's consumers before interpreter shutdown: a consumer destroyed during
    finalisation can call back into a half-torn-down interpreter (its logger) and crash it."""
    close_consumers_of(None)


_AT_EXIT: list[int] = []  # pids that registered _close_ours_at_exit


def close_consumers_of(bootstrap: str | None) -> int:
    """Close this process's consumers of the cluster at ``bootstrap`` (all of them for None),
    called when that cluster goes away: a consumer left connected to it would otherwise
    reconnect to nothing until the garbage collector closes it, at whatever point and on
    whatever thread that happens. Returns how many were closed; a reader that still holds one
    gets a clear error."""
    pid, closed = os.getpid(), 0
    for key, (owner, consumer, servers) in list(_OPEN.items()):
        if owner == pid and bootstrap in (None, servers):
            _OPEN.pop(key, None)
            with contextlib.suppress(Exception):
                consumer.close()
            closed += 1
    return closed


def close_consumer(consumer: Any) -> None:
    entry = _OPEN.get(id(consumer))
    if entry is None or entry[0] != os.getpid():
        return  # inherited through fork: not ours to touch (see the NOTE above)
    try:
        consumer.close()
    finally:
        _OPEN.pop(id(consumer), None)


def make_consumer(stream: KafkaSettings, on_error: Any = None) -> Any:
    ck = require("confluent_kafka", "kafka", "reading Kafka")
    conf: dict[str, Any] = {
        "bootstrap.servers": stream.bootstrap_servers,
        "group.id": stream.group_id or "tensorfeed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "logger": log,
    }
    if on_error is not None:
        conf["error_cb"] = on_error
    conf.update(stream.config)
    try:
        consumer = ck.Consumer(conf)
    except ck.KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        raise ConfigError(
            f"librdkafka refused the consumer settings: {getattr(err, 'str', lambda: str(err))()}"
        ) from None
    _OPEN[id(consumer)] = (os.getpid(), consumer, str(conf["bootstrap.servers"]))
    if os.getpid() not in _AT_EXIT:  # once per process, only once Kafka is actually used
        _AT_EXIT.append(os.getpid())
        atexit.register(_close_ours_at_exit)
    return consumer


def kafka_call(stream: KafkaSettings, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a metadata call, turning client errors into tensorfeed errors (no secrets)."""
    ck = require("confluent_kafka", "kafka")
    try:
        return fn(*args, **kwargs)
    except ck.KafkaException as exc:
        err: Any = exc.args[0] if exc.args else exc
        code = err.name() if hasattr(err, "name") else type(exc).__name__
        text = err.str() if hasattr(err, "str") else str(exc)
        raise ConnectionFailedError(
            f"could not {what} from Kafka at {stream.bootstrap_servers} within {stream.timeout}s "
            f"({code}: {text}); is the broker running and reachable?"
        ) from None


def list_partitions(stream: KafkaSettings, consumer: Any) -> list[tuple[str, int]]:
    """Every (topic, partition) of the stream's topics, in a fixed order."""
    out: list[tuple[str, int]] = []
    for topic in stream.topics:
        md = kafka_call(
            stream, "list the topics", consumer.list_topics, topic, timeout=stream.timeout
        )
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise NotFoundError(
                f"Kafka topic {topic!r} does not exist at {stream.bootstrap_servers}"
                + (f" ({tmd.error.str()})" if tmd is not None and tmd.error is not None else "")
            )
        out.extend((topic, p) for p in sorted(tmd.partitions))
    return out


def _ms(value: datetime | int | float) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _explicit(spec: dict[Any, int], parts: list[tuple[str, int]]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    norm = {}
    for k, v in spec.items():
        t, p = split_pkey(k) if isinstance(k, str) else (str(k[0]), int(k[1]))
        norm[pkey(t, p)] = int(v)
    for t, p in parts:
        out[pkey(t, p)] = norm.get(pkey(t, p))
    return out


def resolve_offsets(
    stream: KafkaSettings, consumer: Any, parts: list[tuple[str, int]], spec: Any, what: str
) -> dict[str, int]:
    """Numeric offsets for ``spec`` ("earliest", "latest"/"now", "committed", a timestamp or an
    explicit dict; a partition missing from a dict starts at the earliest offset)."""
    ck = require("confluent_kafka", "kafka")
    tp = ck.TopicPartition

    def watermarks(i: int) -> dict[str, int]:
        out = {}
        for t, p in parts:
            wm = kafka_call(
                stream,
                f"read the offsets of {t!r} partition {p}",
                consumer.get_watermark_offsets,
                tp(t, p),
                timeout=stream.timeout,
                cached=False,
            )
            out[pkey(t, p)] = int(wm[i])
        return out

    if isinstance(spec, str) and spec == "earliest":
        return watermarks(0)
    if isinstance(spec, str) and spec in ("latest", "now"):
        return watermarks(1)

    def found(what: str, call: Any, tps: list[Any], otherwise: int) -> dict[str, int]:
        """The broker's offset for each partition, or watermark ``otherwise`` where it has none."""
        got = kafka_call(stream, what, call, tps, timeout=stream.timeout)
        mark = watermarks(otherwise)
        return {
            pkey(x.topic, x.partition): x.offset
            if x.offset >= 0
            else mark[pkey(x.topic, x.partition)]
            for x in got
        }

    if isinstance(spec, str) and spec == "committed":
        if not stream.group_id:
            raise ConfigError(f"{what}='committed' needs a group_id")
        group = f"read the committed offsets of group {stream.group_id!r}"
        return found(group, consumer.committed, [tp(t, p) for t, p in parts], 0)
    if isinstance(spec, datetime | int | float) and not isinstance(spec, bool):
        ms = _ms(spec)
        when = f"look up offsets by timestamp {ms}"
        return found(when, consumer.offsets_for_times, [tp(t, p, ms) for t, p in parts], 1)
    if isinstance(spec, dict):
        given = _explicit(spec, parts)
        if any(v is None for v in given.values()):
            low = watermarks(0)
            return {k: (v if v is not None else low[k]) for k, v in given.items()}
        return {k: int(v) for k, v in given.items() if v is not None}
    raise ConfigError(
        f"{what} must be 'earliest', 'latest', 'committed', a datetime, a timestamp in ms or a "
        f"dict {{(topic, partition): offset}}, got {spec!r}"
    )
