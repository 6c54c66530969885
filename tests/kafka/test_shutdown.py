"""A process that reads Kafka ends cleanly, whatever it leaves open (NOTE [ Tearing down a mock
cluster ] in tensorfeed/sources/kafka/mock.py): no hang, no crash at interpreter exit."""

from __future__ import annotations

import json
import textwrap

import pytest

import tensorfeed as tfd
from tensorfeed.sources._kafka_mock import MockCluster
from tensorfeed.sources.kafka import client as _kafka_reader

from ..clean_exit import assert_script_exits_cleanly

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorfeed as tfd
    from tensorfeed.sources._kafka_mock import MockCluster

    how, workers = sys.argv[1], int(sys.argv[2])
    mc = MockCluster(partitions=3)
    mc.create_topic("t", 3)
    mc.produce("t", [json.dumps({"id": i, "v": 0.5}).encode() for i in range(600)])
    loader = tfd.DataLoader(
        tfd.KafkaStream(mc.bootstrap, ["t"], end="now"), batch_size=16, num_workers=workers
    )
    it = iter(loader)
    next(it), next(it)
    if how == "cluster-closed-first":
        mc.close()  # consumers of it are still referenced by the suspended iterator
    keep = [it, loader, mc]  # all alive when the script just ends, as a training script does
    print("ok", flush=True)
    """
)


@pytest.mark.parametrize("how", ["everything-open", "cluster-closed-first"])
@pytest.mark.parametrize("workers", [0, 2])
def test_script_that_leaves_clients_open_exits_cleanly(how, workers, tmp_path):
    script = tmp_path / "leave_open.py"
    script.write_text(SCRIPT)
    assert_script_exits_cleanly(script, how, str(workers), timeout=120)


def _ours(bootstrap: str) -> list[object]:
    return [c for _pid, c, servers in _kafka_reader._OPEN.values() if servers == bootstrap]


def test_closing_a_cluster_closes_its_consumers_first():
    mc = MockCluster(partitions=2)
    try:
        mc.create_topic("t", 2)
        mc.produce("t", [json.dumps({"id": i}).encode() for i in range(20_000)])
        stream = tfd.KafkaStream(mc.bootstrap, ["t"], end="now", poll_batch=50)
        it = iter(tfd.DataLoader(stream, batch_size=8))
        next(it)
        assert len(_ours(mc.bootstrap)) == 1  # the suspended reader's consumer
    finally:
        mc.close()
    assert _ours(mc.bootstrap) == []
    with pytest.raises(tfd.ConnectionFailedError, match="cluster was shut down"):
        for _ in it:
            pass
    mc.close()  # twice is fine


def test_a_destroy_that_never_returns_does_not_hang_close(monkeypatch, caplog):
    import logging
    import time

    from tensorfeed.sources.kafka import mock

    mc = MockCluster(partitions=1)
    real_owner = mc._owner

    class NeverDone:  # stands in for librdkafka's destroy blocked in C
        def close(self) -> None:
            time.sleep(5)

    mc._owner = NeverDone()
    monkeypatch.setattr(mock, "DESTROY_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, logger="tensorfeed.kafka")
    start = time.monotonic()
    mc.close()
    assert time.monotonic() - start < 3
    assert "did not shut down within" in caplog.text
    monkeypatch.setattr(mock, "DESTROY_TIMEOUT", 15.0)
    mc._owner = real_owner  # the real one is destroyed for real
    mc.close()
    assert mc._owner is None
