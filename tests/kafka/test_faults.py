"""Bad input and faults: malformed messages under both policies, a broker that goes away
mid-epoch and comes back (fault injection through the mock cluster's C API)."""

from __future__ import annotations

import json
import threading
import time
import warnings

import pytest

import tensorfeed as tfd

from .kafka_helpers import by_partition, pairs, telemetry

# (value, what is wrong with it) -- every one must be named by topic, partition and offset
MALFORMED = [
    (b"not json at all", "not JSON"),
    (b'{"device_id": 1, "temp": "hot", "load": 1.0, "seq": -1}', "wrong type"),
    (b'{"device_id": 1, "load": 1.0, "seq": -1}', "missing field"),
    (b"[1, 2, 3]", "not an object"),
    (b'{"device_id": 1, "temp": null, "load": 1.0, "seq": -1}', "null"),
    (None, "tombstone"),
    (b'{"device_id": 2,\n "temp": 1.5, "load": 1.0, "seq": -1}', "newline inside, valid"),
]


def mixed_values(n: int) -> tuple[list[bytes | None], int]:
    """n good telemetry messages with the malformed ones spread among them; returns the values
    and the number of bad ones (the pretty-printed one is valid JSON and counts as good)."""
    vals: list[bytes | None] = [telemetry(i) for i in range(n)]
    for j, (bad, _) in enumerate(MALFORMED):
        vals.insert(7 + j * 11, bad)
    return vals, len(MALFORMED) - 1


def test_malformed_raises_naming_topic_partition_offset(cluster, topic):
    for value, what in MALFORMED[:-1]:
        vals = [telemetry(i) for i in range(5)] + [value] + [telemetry(5)]
        name = topic(values=vals, partitions=1)
        s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5)
        with pytest.raises(tfd.DataError) as info:
            list(s.iter_batches())
        msg = str(info.value)
        assert f"topic {name!r} partition 0 offset 5" in msg, (what, msg)


def test_malformed_in_first_batch_before_any_schema(cluster, topic):
    name = topic(values=[b"garbage", telemetry(0), telemetry(1)], partitions=1)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5, on_error="skip")
    got = [r for cb in s.iter_batches() for r in cb.table.to_pylist()]
    assert [r["seq"] for r in got] == [0, 1] and s.stats.skipped == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_delivered_plus_skipped_equals_produced(cluster, topic, workers):
    vals, n_bad = mixed_values(120)
    name = topic(values=vals, partitions=2)
    s = tfd.KafkaStream(cluster.bootstrap, name, on_error="skip", timeout=5)
    loader = tfd.DataLoader(s, batch_size=16, num_workers=workers)
    seen = [pr for b in loader for pr in pairs(b)]
    counts = s.counts(loader)
    assert counts == {"delivered": len(seen), "skipped": n_bad}
    assert counts["delivered"] + counts["skipped"] == len(vals)
    if workers == 0:  # in-process live counts as well
        assert s.stats.skipped == n_bad and s.stats.messages == len(vals)
        assert any("not JSON" in r for r in s.stats.recent_skips)


def test_skip_keeps_the_checkpoint_exact(cluster, topic):
    vals, _ = mixed_values(80)
    name = topic(values=vals, partitions=1)
    full = tfd.KafkaStream(cluster.bootstrap, name, on_error="skip", timeout=5)
    expect = by_partition([pr for cb in full.iter_batches() for pr in pairs(cb.table.to_pydict())])
    s = tfd.KafkaStream(cluster.bootstrap, name, on_error="skip", timeout=5)
    loader = tfd.DataLoader(s, batch_size=10)
    it = iter(loader)
    before = pairs(next(it)) + pairs(next(it))
    state = loader.state_dict()
    resumed = tfd.DataLoader(
        tfd.KafkaStream(cluster.bootstrap, name, on_error="skip", timeout=5), batch_size=10
    )
    resumed.load_state_dict(state)
    after = [pr for b in resumed for pr in pairs(b)]
    assert by_partition(before + after) == expect
    assert s.counts(resumed)["skipped"] == len(MALFORMED) - 1


def test_callable_decode_errors_are_malformed_messages(cluster, topic):
    name = topic(values=[telemetry(0), b"\xff\xfe", telemetry(1)], partitions=1)
    s = tfd.KafkaStream(cluster.bootstrap, name, decode=json.loads, timeout=5)
    with pytest.raises(tfd.DataError, match="offset 1"):
        list(s.iter_batches())


# small record batches: a fetch returns at least one whole batch, so with big ones the consumer
# could hold the whole topic before the broker goes down
SMALL_BATCHES = {"batch.num.messages": 20, "linger.ms": 1}


def _slow_fetch_config() -> dict:
    # small fetches, so most messages are still on the broker when it goes down
    return {
        "fetch.max.bytes": 2000,
        "message.max.bytes": 1000,
        "max.partition.fetch.bytes": 1000,
        "queued.max.messages.kbytes": 1,
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 10,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
    }


@pytest.mark.slow
def test_broker_down_mid_epoch_and_back_loses_nothing(fault_cluster):
    mc = fault_cluster
    mc.create_topic("tele", 2)
    n = 2000
    mc.produce("tele", [telemetry(i) for i in range(n)], **SMALL_BATCHES)
    s = tfd.KafkaStream(
        mc.bootstrap, "tele", timeout=10, poll_batch=100, config=_slow_fetch_config()
    )
    seen: list[tuple[int, int]] = []
    downtime = {}

    def outage() -> None:
        mc.broker_down()
        downtime["start"] = time.monotonic()
        time.sleep(2.0)
        mc.broker_up()
        downtime["end"] = time.monotonic()

    th = None
    after_outage = 0
    for i, b in enumerate(tfd.DataLoader(s, batch_size=50)):
        seen += pairs(b)
        if "end" in downtime:
            after_outage += len(b["offset"])
        if i == 2:
            th = threading.Thread(target=outage)
            th.start()
            time.sleep(0.2)
    assert th is not None
    th.join()
    assert len(seen) == n == len(set(seen))
    parts = by_partition(seen)
    assert all(offs == list(range(len(offs))) for offs in parts.values())
    assert s.stats.client_errors > 0  # the outage was seen (and retried) by the client
    assert after_outage > 0  # and messages were still to come when the broker came back


def outage_stream(mc, n: int, **options) -> tfd.KafkaStream:
    """A stream of ``n`` telemetry messages on one partition of a fault cluster, fetched in small
    pieces so most are still on the broker when it goes down."""
    mc.create_topic("tele", 1)
    mc.produce("tele", [telemetry(i) for i in range(n)], **SMALL_BATCHES)
    return tfd.KafkaStream(
        mc.bootstrap, "tele", timeout=10, poll_batch=50, config=_slow_fetch_config(), **options
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "message"),
    [
        (1, "timed out"),  # torch's own timeout, for a worker's batch
        (0, r"DataLoader timed out after 3 seconds.*'tele'"),  # applied by the stream itself
    ],
)
def test_broker_down_with_loader_timeout_raises_cleanly(fault_cluster, workers, message):
    mc = fault_cluster
    loader = tfd.DataLoader(outage_stream(mc, 3000), batch_size=50, num_workers=workers, timeout=3)
    it = iter(loader)
    next(it)
    mc.broker_down()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in it:
            pass
    assert time.monotonic() - t0 < 30
    del it, loader


@pytest.mark.slow
def test_request_errors_are_retried(fault_cluster):
    """Fetch requests failing with a retriable error (injected) do not lose or repeat messages."""
    mc = fault_cluster
    mc.create_topic("tele", 1)
    mc.produce("tele", [telemetry(i) for i in range(500)], **SMALL_BATCHES)
    s = tfd.KafkaStream(
        mc.bootstrap, "tele", timeout=10, poll_batch=100, config=_slow_fetch_config()
    )
    NOT_LEADER = 6
    mc.push_request_errors(1, [NOT_LEADER] * 3)  # ApiKey 1 = Fetch
    seen = [pr for cb in s.iter_batches() for pr in pairs(cb.table.to_pydict())]
    assert [o for _, o in seen] == list(range(500))
