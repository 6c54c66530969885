"""Rows/s from Kafka into tensors, side by side in one run, on librdkafka's mock cluster.

The topic holds JSON telemetry messages with 10 numeric fields over 4 partitions. The ceiling is a
hand-written confluent-kafka ``consume()`` loop that parses every value (orjson when installed,
else json) into a float32 numpy array; against it, ``tfd.KafkaStream`` through ``tfd.DataLoader``
with 0 and 2 workers into batches of 1024 ``[1024, 10]`` float32 feature tensors. Every
configuration reads the whole topic once, from a fresh consumer; worker start-up is included.

    python benchmarks/kafka.py                     # 200,000 messages
    python benchmarks/kafka.py --messages 20000    # a quick smoke run

Target: tfd.KafkaStream at least 0.7x the raw loop.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np

import tensorfeed as tfd
from tensorfeed.sources._kafka_mock import MockCluster

TARGET = 0.7
FIELDS = [f"f{i}" for i in range(10)]
TOPIC = "bench-telemetry"


def produce(mc: MockCluster, n: int, partitions: int) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (n, len(FIELDS))).round(4)
    # lz4-compressed batches, as telemetry producers usually send them; this also keeps every
    # partition within the mock cluster's fixed 5 MiB log (it drops the oldest data beyond it)
    p = mc.producer(
        **{"linger.ms": 50, "queue.buffering.max.messages": 500_000, "compression.type": "lz4"}
    )
    for i, row in enumerate(values.tolist()):
        msg = json.dumps(dict(zip(FIELDS, row))).encode()
        while True:
            try:
                p.produce(TOPIC, value=msg, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
        if i % 20_000 == 0:
            p.poll(0)
    if p.flush(120):
        raise SystemExit("the mock cluster did not take every message within 120 s")
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": mc.bootstrap, "group.id": "bench-check", "log_level": 3})
    marks = [
        c.get_watermark_offsets(TopicPartition(TOPIC, q), timeout=10) for q in range(partitions)
    ]
    c.close()
    if sum(hi - lo for lo, hi in marks) != n:
        raise SystemExit(f"the topic holds {marks} (low, high) per partition, not {n} messages")


def raw_loop(bootstrap: str, n: int, partitions: int) -> tuple[float, int]:
    """The ceiling: consume() batches, parse each value, stack into float32 numpy."""
    from confluent_kafka import Consumer, TopicPartition

    try:
        import orjson

        loads: Any = orjson.loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    t0 = time.perf_counter()
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-raw",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    rows = 0
    chunks = []
    while rows < n:
        msgs = c.consume(4096, timeout=0.1)
        dicts = [loads(m.value()) for m in msgs if m.error() is None]
        if dicts:
            chunks.append(np.array([[d[f] for f in FIELDS] for d in dicts], dtype=np.float32))
            rows += len(dicts)
    c.close()
    return time.perf_counter() - t0, rows


def tfd_loader(bootstrap: str, workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    stream = tfd.KafkaStream(bootstrap, TOPIC, features=FIELDS, timeout=30)
    rows = 0
    for x, _ in tfd.DataLoader(stream, batch_size=1024, num_workers=workers):
        assert x.shape[1] == len(FIELDS)
        rows += x.shape[0]
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    import pyarrow.json  # noqa: F401  -- imports are not what we measure
    import torch  # noqa: F401

    _ = (tfd.DataLoader, tfd.KafkaStream)

    mc = MockCluster(partitions=args.partitions)
    mc.create_topic(TOPIC, args.partitions)
    t0 = time.perf_counter()
    produce(mc, args.messages, args.partitions)
    print(
        f"librdkafka mock cluster at {mc.bootstrap}: {args.messages:,} JSON messages x "
        f"{len(FIELDS)} fields over {args.partitions} partitions (produced in "
        f"{time.perf_counter() - t0:.1f}s)\n"
    )

    # warm-up (not timed): imports, first client, first loader
    raw_loop(mc.bootstrap, 1, args.partitions)
    warm = tfd.KafkaStream(
        mc.bootstrap, TOPIC, features=FIELDS, end={(TOPIC, p): 1 for p in range(args.partitions)}
    )
    for _ in tfd.DataLoader(warm, batch_size=1024):
        pass

    results = []
    secs, rows = raw_loop(mc.bootstrap, args.messages, args.partitions)
    results.append(("raw consume() + JSON -> numpy (ceiling)", secs, rows))
    for workers in (0, 2):
        secs, rows = tfd_loader(mc.bootstrap, workers)
        results.append((f"tfd.KafkaStream, DataLoader num_workers={workers}", secs, rows))

    ceiling = results[0][2] / results[0][1]
    print(f"{'configuration':<46} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'ratio':>6}")
    for name, secs, rows in results:
        rate = rows / secs
        print(f"{name:<46} {rows:>9,} {secs:>8.2f} {rate:>10,.0f} {rate / ceiling:>5.2f}x")
        assert rows == args.messages, f"{name} read {rows} rows, not {args.messages}"
    best = max(r[2] / r[1] for r in results[1:]) / ceiling
    worst = min(r[2] / r[1] for r in results[1:]) / ceiling
    print(
        f"\ntarget >= {TARGET}x the ceiling: "
        f"{'met' if worst >= TARGET else 'NOT met'} (worst {worst:.2f}x, best {best:.2f}x)"
    )


if __name__ == "__main__":
    main()
