"""Bounded epochs stay bounded: the end offsets of an epoch are pinned once, in the main process,
and travel with the checkpoint (a worker that had handed out nothing yet resumes to the same end);
an outage either ends in every message up to the end or in an error, never in a short epoch."""

from __future__ import annotations

import threading
import time

import pytest

import tensorfeed as tfd

from .kafka_helpers import by_partition, pairs, telemetry
from .test_faults import outage_stream


@pytest.mark.parametrize("workers", [0, 2])
def test_a_silent_worker_resumes_to_the_pinned_end(cluster, topic, workers):
    name = topic(500, partitions=2)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10, poll_batch=16)
    loader = tfd.DataLoader(s, batch_size=16, num_workers=workers)
    it = iter(loader)
    before = pairs(next(it))  # with 2 workers, worker 1 has handed out nothing yet
    state = loader.state_dict()
    del it, loader
    end = state["tensorfeed"]["source"]["end"]
    assert set(end) == {f"{name}:0", f"{name}:1"} and sum(end.values()) == 500
    cluster.produce(name, [telemetry(1000 + i) for i in range(2)], partition=[0, 1])

    resumed = tfd.DataLoader(
        tfd.KafkaStream(cluster.bootstrap, name, timeout=10), batch_size=16, num_workers=workers
    )
    resumed.load_state_dict(state)
    after = [pr for b in resumed for pr in pairs(b)]
    assert len(before) + len(after) == 500 == len(set(before + after))
    assert all(o < end[f"{name}:{p}"] for p, o in before + after)
    # the next epoch pins anew: now it holds the two messages produced since
    assert len([pr for b in resumed for pr in pairs(b)]) == 502


def test_the_epoch_end_is_pinned_when_the_epoch_starts(cluster, topic):
    name = topic(100, partitions=1)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10, poll_batch=10)
    loader = tfd.DataLoader(s, batch_size=10, num_workers=2)
    it = iter(loader)
    seen = pairs(next(it))
    cluster.produce(name, [telemetry(500 + i) for i in range(30)], partition=0)
    seen += [pr for b in it for pr in pairs(b)]
    assert sorted(o for _, o in seen) == list(range(100))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_idle_timeout_in_a_bounded_epoch_raises_instead_of_ending_short(fault_cluster, workers):
    mc = fault_cluster
    s = outage_stream(mc, 2000, idle_timeout=1.0)
    loader = tfd.DataLoader(s, batch_size=50, num_workers=workers)
    seen = []
    with pytest.raises(tfd.ConnectionLostError, match=r"'tele'.*tele:0 at offset \d+ of 2000"):
        for i, b in enumerate(loader):
            seen += pairs(b)
            if i == 1:
                mc.broker_down()  # for longer than idle_timeout
    assert 0 < len(seen) < 2000
    mc.broker_up()


@pytest.mark.slow
def test_an_outage_shorter_than_idle_timeout_still_delivers_everything(fault_cluster):
    mc = fault_cluster
    s = outage_stream(mc, 1000, idle_timeout=8.0)

    def outage() -> None:
        mc.broker_down()
        time.sleep(1.5)
        mc.broker_up()

    seen, th = [], threading.Thread(target=outage)
    for i, b in enumerate(tfd.DataLoader(s, batch_size=50)):
        seen += pairs(b)
        if i == 1:
            th.start()
    th.join()
    assert sorted(o for _, o in seen) == list(range(1000))
    assert by_partition(seen)[0] == list(range(1000))
