"""librdkafka's mock Kafka cluster, for tests, the demo and the benchmark.

``MockCluster()`` starts librdkafka's mock Kafka cluster (a real Kafka-protocol broker) in a
helper process of its own (``mock_broker.py``, NOTE [ The mock cluster lives in a process of its
own ]), reachable over TCP on 127.0.0.1; real producers and consumers in any process connect to
:attr:`MockCluster.bootstrap`. It is not a production broker: no persistence, no security. It lives
until :meth:`MockCluster.close` or the end of the process that started it.

Topics, produced messages and fault injection (``broker_down()`` ...) are requests to the helper
process, answered within ``REQUEST_TIMEOUT`` seconds or raised as errors naming the request.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection
from typing import Any

from ..._deps import require
from .client import close_consumers_of

REQUEST_TIMEOUT = 120.0
_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_broker.py")


def _close_at_exit(ref: weakref.ref[MockCluster]) -> None:
    cluster = ref()
    if cluster is not None:
        cluster.close()


class MockCluster:
    """librdkafka's mock Kafka cluster with ``brokers`` brokers (see module docstring)."""

    def __init__(self, brokers: int = 1, partitions: int = 4) -> None:
        require("confluent_kafka", "kafka", "the Kafka mock cluster")
        self._pid = os.getpid()
        self.brokers = brokers
        self.default_partitions = partitions
        # -I: no PYTHONPATH, no script directory on sys.path; the helper needs only the
        # interpreter's own site-packages (confluent-kafka)
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", _HELPER, str(int(brokers))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._requests = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._replies = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        try:
            hello = self._reply("start")
        except BaseException:
            self.close()
            raise
        self.bootstrap: str = hello["bootstrap"]
        self.pid: int = hello["pid"]
        # stopped before interpreter shutdown, after this process's consumers (see close())
        atexit.register(_close_at_exit, weakref.ref(self))

    def _reply(self, what: str) -> Any:
        if not self._replies.poll(REQUEST_TIMEOUT):
            raise RuntimeError(
                f"the mock Kafka cluster did not answer {what!r} within {REQUEST_TIMEOUT:.0f} s"
            )
        try:
            status, value = self._replies.recv()
        except (EOFError, OSError):
            raise self._exited(what) from None
        if status != "ok":
            raise RuntimeError(f"mock Kafka cluster, {what}: {value}")
        return value

    def _call(self, op: str, *args: Any) -> Any:
        if self._proc is None:
            raise RuntimeError("this mock Kafka cluster is closed")
        if os.getpid() != self._pid:
            raise RuntimeError("a mock Kafka cluster is driven only by the process that started it")
        try:
            self._requests.send((op, args))
        except OSError:  # a broken pipe: the process is gone (its reply would be end of file)
            raise self._exited(op) from None
        return self._reply(op)

    def _exited(self, what: str) -> RuntimeError:
        proc = self._proc
        code = proc.wait(5) if proc is not None else None
        return RuntimeError(
            f"the mock Kafka cluster's process exited (code {code}) during {what!r}"
        )

    # -- topics and data ----------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int | None = None) -> None:
        self._call("create_topic", name, int(partitions or self.default_partitions))

    def producer(self, **config: Any) -> Any:
        """A producer of this process connected to the cluster (the caller flushes and drops it)."""
        ck = require("confluent_kafka", "kafka")
        conf = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "log_level": 3}
        conf.update(config)
        return ck.Producer(conf)

    def produce(
        self,
        topic: str,
        values: list[bytes | None],
        partition: int | list[int] | None = None,
        keys: list[bytes | None] | None = None,
        **config: Any,
    ) -> None:
        """Produce ``values`` (``partition``: one for all, one per value, or None = round robin
        over the topic's partitions) and wait until the broker has them. ``config``: producer
        settings (``**{"batch.num.messages": 20}`` stores small record batches)."""
        if isinstance(partition, list):
            if len(partition) != len(values):
                raise ValueError(f"{len(partition)} partitions for {len(values)} values")
            parts = [int(p) for p in partition]
        elif partition is None:
            n_parts = self.partitions(topic)
            parts = [i % n_parts for i in range(len(values))]
        else:
            parts = [int(partition)] * len(values)
        self._call("produce", topic, list(values), parts, keys, config)

    def partitions(self, topic: str) -> int:
        return int(self._call("partitions", topic))

    # -- fault injection ------------------------------------------------------------------------
    def broker_down(self, broker_id: int = -1) -> None:
        """Disconnect the broker(s) and refuse new connections (-1: all)."""
        self._call("broker_down", broker_id)

    def broker_up(self, broker_id: int = -1) -> None:
        self._call("broker_up", broker_id)

    def set_rtt(self, rtt_ms: int, broker_id: int = -1) -> None:
        self._call("set_rtt", rtt_ms, broker_id)

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """The next ``len(errors)`` requests of type ``api_key`` (1 = Fetch, 3 = Metadata ...)
        fail with these Kafka error codes (-195 = transport failure: the broker disconnects)."""
        self._call("push_request_errors", api_key, [int(e) for e in errors])

    def close(self) -> None:
        """Stop the cluster: close this process's consumers of it, then end its process.

        Consumers go first: one left connected would reconnect to nothing until the garbage
        collector closes it, at whatever point and on whatever thread that happens. The helper
        process is killed, not asked to tear the cluster down (NOTE [ The mock cluster lives in a
        process of its own ] in ``mock_broker.py``). In a process forked from the one that
        started the cluster (a DataLoader worker), close() does nothing: it is not ours."""
        proc, self._proc = self._proc, None
        if proc is None or os.getpid() != self._pid:
            return
        close_consumers_of(getattr(self, "bootstrap", None) or "\0none")
        proc.kill()
        proc.wait()
        self._requests.close()
        self._replies.close()

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._proc is None else f"pid {self.pid}"
        return f"MockCluster({getattr(self, 'bootstrap', '?')}, brokers={self.brokers}, {state})"
