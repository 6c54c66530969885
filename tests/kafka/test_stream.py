"""KafkaStream basics against librdkafka's mock cluster: decoding, columns, start/end, URLs."""

from __future__ import annotations

import json
import pickle
import time
import warnings
from datetime import datetime, timezone

import pytest
import torch

import tensorfeed as tfd
from tensorfeed.sampling import World

from .kafka_helpers import by_partition, pairs, telemetry


def rows(stream: tfd.KafkaStream) -> list[dict]:
    out: list[dict] = []
    for cb in stream.iter_batches():
        out.extend(cb.table.to_pylist())
    return out


def parse_value(value: bytes) -> dict:
    """A picklable decode function (module level)."""
    d = json.loads(value)
    return {"seq": d["seq"], "double_temp": d["temp"] * 2}


def test_json_columns_and_metadata(cluster, topic):
    name = topic(50)
    got = rows(tfd.KafkaStream(cluster.bootstrap, name, timeout=5))
    assert len(got) == 50
    assert sorted(r["seq"] for r in got) == list(range(50))
    first = got[0]
    assert list(first) == ["device_id", "temp", "load", "seq", "partition", "offset", "timestamp"]
    assert isinstance(first["temp"], float) and isinstance(first["device_id"], int)
    assert first["timestamp"] > 1_600_000_000_000  # ms since the epoch
    # every device lives in one partition, in produce order
    per_device: dict[int, list[int]] = {}
    for r in got:
        per_device.setdefault(r["device_id"], []).append(r["seq"])
    assert all(v == sorted(v) for v in per_device.values())


def test_selected_columns_key_and_tensors(cluster):
    name = "tfd-keyed"
    cluster.create_topic(name, 2)
    vals = [telemetry(i) for i in range(30)]
    cluster.produce(
        name,
        vals,
        partition=[i % 2 for i in range(30)],
        keys=[b"dev%d" % (i % 5) for i in range(30)],
    )
    s = tfd.KafkaStream(cluster.bootstrap, name, columns=["seq", "key", "timestamp"], timeout=5)
    got = rows(s)
    assert list(got[0]) == ["seq", "key", "timestamp", "partition", "offset"]
    assert {r["key"] for r in got} == {b"dev%d" % d for d in range(5)}
    batch = next(iter(tfd.DataLoader(s, batch_size=8)))
    assert batch["seq"].dtype == torch.int64 and batch["seq"].shape == (8,)
    assert isinstance(batch["key"], list)


def test_features_target_give_xy(cluster, topic):
    name = topic(40)
    s = tfd.KafkaStream(
        cluster.bootstrap, name, features=["temp", "load"], target="device_id", timeout=5
    )
    x, y = next(iter(tfd.DataLoader(s, batch_size=16)))
    assert x.shape == (16, 2) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64


def test_decode_bytes_and_callable(cluster, topic):
    name = topic(20)
    raw = rows(tfd.KafkaStream(cluster.bootstrap, name, decode="bytes", timeout=5))
    assert sorted(json.loads(r["value"])["seq"] for r in raw) == list(range(20))
    s = tfd.KafkaStream(cluster.bootstrap, name, decode=parse_value, timeout=5)
    got = rows(pickle.loads(pickle.dumps(s)))
    assert sorted((r["seq"], r["double_temp"]) for r in got) == sorted(
        (i, 2 * json.loads(telemetry(i))["temp"]) for i in range(20)
    )


def test_explicit_schema_pins_types(cluster, topic):
    name = topic(20)
    s = tfd.KafkaStream(
        cluster.bootstrap, name, schema={"seq": "int64", "temp": "float32"}, timeout=5
    )
    t = next(s.iter_batches()).table
    assert t.schema.field("temp").type == "float" and t.column_names[:2] == ["seq", "temp"]


def test_start_positions(cluster, topic):
    name = topic(40)
    b = cluster.bootstrap
    everything = rows(tfd.KafkaStream(b, name, timeout=5))
    # explicit offsets: partitions not named start at the earliest offset
    exp = rows(tfd.KafkaStream(b, name, start={(name, 0): 5, f"{name}:1": 2}, timeout=5))
    parts = by_partition([(r["partition"], r["offset"]) for r in exp])
    assert parts[0][0] == 5 and parts[1][0] == 2 and parts[2][0] == 0
    # latest with end="now" is an empty epoch; with end=None it waits for new messages
    assert rows(tfd.KafkaStream(b, name, start="latest", timeout=5)) == []
    assert len(everything) == 40
    # timestamps go through offsets_for_times; "no message at or after it" means the end. (The
    # mock cluster answers every timestamp lookup with "none", so only that path is tested here.)
    later = datetime.now(timezone.utc).timestamp() * 1000 + 60_000
    assert rows(tfd.KafkaStream(b, name, start=int(later), timeout=5)) == []
    assert rows(tfd.KafkaStream(b, name, start=datetime.now(timezone.utc), timeout=5)) == []


def test_committed_start_and_commit(cluster, topic):
    name = topic(40)
    s = tfd.KafkaStream(cluster.bootstrap, name, group_id="g-commit", timeout=5)
    loader = tfd.DataLoader(s, batch_size=10)
    it = iter(loader)
    seen = pairs(next(it)) + pairs(next(it))
    committed = s.commit(loader)
    expect = {}
    for p, o in seen:
        expect[(name, p)] = max(expect.get((name, p), 0), o + 1)
    for (t, p), o in committed.items():
        assert o == expect.get((t, p), 0)  # untouched partitions: their start offset
    assert s.committed() == committed
    rest = rows(
        tfd.KafkaStream(cluster.bootstrap, name, group_id="g-commit", start="committed", timeout=5)
    )
    assert len(rest) + len(seen) == 40
    assert not {(r["partition"], r["offset"]) for r in rest} & set(seen)
    with pytest.raises(tfd.ConfigError, match="group_id"):
        tfd.KafkaStream(cluster.bootstrap, name, start="committed")


def test_unbounded_with_idle_timeout_sees_new_messages(cluster, topic):
    import threading

    name = topic(10, partitions=1)
    s = tfd.KafkaStream(
        cluster.bootstrap, name, start="latest", end=None, idle_timeout=1.5, timeout=5
    )

    def later() -> None:
        time.sleep(0.7)
        cluster.produce(name, [telemetry(i) for i in range(100, 105)], partition=0)

    th = threading.Thread(target=later)
    th.start()
    t0 = time.monotonic()
    got = rows(s)
    th.join()
    assert [r["seq"] for r in got] == list(range(100, 105))
    assert time.monotonic() - t0 < 10


def test_from_url_and_open(cluster, topic):
    name = topic(12)
    url = f"kafka://{cluster.bootstrap}/{name}?group_id=g-url&columns=seq,partition&idle_timeout=3&fetch.wait.max.ms=50"
    s = tfd.KafkaStream.from_url(url)
    assert (
        s.group_id == "g-url" and s.idle_timeout == 3.0 and s.config == {"fetch.wait.max.ms": "50"}
    )
    assert sorted(r["seq"] for r in rows(s)) == list(range(12))
    opened = tfd.open(url, on_error="skip")
    assert isinstance(opened, tfd.KafkaStream) and opened.on_error == "skip"


def test_pickles_without_live_client(cluster, topic):
    name = topic(10)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5)
    rows(s)  # read once in this process
    clone = pickle.loads(pickle.dumps(s))
    assert clone.describe() == s.describe() and clone.stats.rows == 0
    assert not any("consumer" in k.lower() for k in vars(clone))


def test_missing_topic_is_not_found(cluster):
    s = tfd.KafkaStream(cluster.bootstrap, "no-such-topic", timeout=5)
    with pytest.raises(tfd.NotFoundError, match="no-such-topic"):
        rows(s)


def test_unreachable_broker_fails_fast():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    s = tfd.KafkaStream(f"127.0.0.1:{port}", "t", timeout=2, config={"sasl.password": "hunter2"})
    t0 = time.monotonic()
    with pytest.raises(tfd.ConnectionFailedError) as info:
        rows(s)
    assert time.monotonic() - t0 < 8
    assert f"127.0.0.1:{port}" in str(info.value) and "hunter2" not in str(info.value)


def test_more_shards_than_partitions_warns_and_ends(cluster, topic):
    name = topic(30, partitions=2)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5)
    with pytest.warns(UserWarning, match="2 partition"):
        idle = list(s._iter_tables(World(0, 1, 2, 3), 0, {}))
    assert idle == []
    # through a loader with more workers than partitions: no hang, every message once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = tfd.DataLoader(s, batch_size=7, num_workers=3, timeout=60)
        seen = [pr for b in loader for pr in pairs(b)]
    assert len(seen) == 30 == len(set(seen))


def test_missing_feature_column_is_not_found(cluster, topic):
    name = topic(10)
    s = tfd.KafkaStream(cluster.bootstrap, name, features=["temp", "pressure"], timeout=5)
    with pytest.raises(tfd.NotFoundError, match="pressure"):
        next(iter(tfd.DataLoader(s, batch_size=4)))


def test_bad_arguments():
    with pytest.raises(tfd.ConfigError):
        tfd.KafkaStream("h:1", "t", decode="xml")
    with pytest.raises(tfd.ConfigError):
        tfd.KafkaStream("h:1", "t", on_error="ignore")
    with pytest.raises(tfd.ConfigError):
        tfd.KafkaStream("h:1", "t", commit_on_checkpoint=True)
    with pytest.raises(tfd.ConfigError):
        tfd.KafkaStream("h:1", [])
    with pytest.raises(tfd.ConfigError):
        tfd.KafkaStream.from_url("kafka://h:1/")


def test_several_topics(cluster, topic):
    a, b = topic(30, partitions=2), topic(20, partitions=3)
    s = tfd.KafkaStream(cluster.bootstrap, [a, b], timeout=5)
    assert s.describe() == f"Kafka topics {a!r}, {b!r}"
    loader = tfd.DataLoader(s, batch_size=8, num_workers=2)
    seen = []
    for batch in loader:
        seen += list(zip(batch["topic"], batch["partition"].tolist(), batch["offset"].tolist()))
    assert len(seen) == 50 == len(set(seen))
    offsets = s.offsets(loader)
    assert {t for t, _ in offsets} == {a, b} and sum(offsets.values()) == 50


def test_bad_feature_value_names_partition_and_offset(cluster, topic):
    vals = [b'{"device_id": 1, "temp": "hot"}', b'{"device_id": 2, "temp": "cold"}']
    name = topic(values=vals, partitions=1)
    s = tfd.KafkaStream(cluster.bootstrap, name, features=["temp"], timeout=5)
    with pytest.raises(tfd.DataError, match="partition 0 offset 0 of Kafka topic"):
        next(iter(tfd.DataLoader(s, batch_size=2)))
