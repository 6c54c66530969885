"""A process that reads Kafka ends cleanly, whatever it leaves open: no hang, no crash at
interpreter exit, and no mock cluster process left behind (NOTE [ The mock cluster lives in a
process of its own ] in tensorfeed/sources/kafka/mock_broker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

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


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_close_ends_the_cluster_process_and_its_port():
    import socket

    mc = MockCluster(partitions=1)
    host, _, port = mc.bootstrap.rpartition(":")
    assert _alive(mc.pid) and mc.pid != os.getpid()
    mc.close()
    assert not _alive(mc.pid)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
        pass
    with pytest.raises(RuntimeError, match="closed"):
        mc.create_topic("t")
    assert "closed" in repr(mc)


def test_cluster_process_ends_with_a_killed_parent(tmp_path):
    """A training script killed with SIGKILL runs no exit hook: its cluster still goes."""
    script = tmp_path / "killed.py"
    script.write_text(
        "import os, signal\n"
        "from tensorfeed.sources._kafka_mock import MockCluster\n"
        "mc = MockCluster()\n"
        "print(mc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"the mock cluster process {pid} outlived its parent"


def test_errors_of_the_cluster_process_name_the_request():
    mc = MockCluster(partitions=1)
    try:
        mc.create_topic("t", 1)
        with pytest.raises(RuntimeError, match=r"create_topic.*could not create topic 't'"):
            mc.create_topic("t", 1)
        os.kill(mc.pid, signal.SIGKILL)
        mc._proc.wait(10)  # gone before the request: writing it meets a broken pipe
        with pytest.raises(RuntimeError, match=r"process exited \(code -9\) during 'partitions'"):
            mc.partitions("t")
    finally:
        mc.close()
