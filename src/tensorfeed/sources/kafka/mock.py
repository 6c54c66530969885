"""librdkafka's in-process mock cluster, for tests, the demo and the benchmark.

``MockCluster()`` starts librdkafka's mock Kafka cluster (a real Kafka-protocol broker running on
threads inside this process, reachable over TCP on 127.0.0.1); real producers and consumers in any
process connect to :attr:`MockCluster.bootstrap`. It is not a production broker: no persistence,
no security, one process. It lives as long as this object (keep a reference).

Fault injection uses the mock cluster's C API (``rd_kafka_mock_broker_set_down`` ...), which
confluent-kafka does not wrap: we call it with ctypes on the librdkafka that the confluent-kafka
wheel bundles, passing the ``rd_kafka_t *`` of the client that owns the cluster. That pointer is the
first field after ``PyObject_HEAD`` of confluent-kafka's ``Handle`` struct; :func:`_rk_pointer`
checks it by asking librdkafka for the handle's name before using it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from ..._deps import require
from .client import close_consumers_of


def _librdkafka() -> ctypes.CDLL:
    ck = require("confluent_kafka", "kafka", "the Kafka mock cluster")
    base = os.path.dirname(os.path.dirname(str(ck.__file__)))
    candidates = glob.glob(os.path.join(base, "confluent_kafka.libs", "librdkafka*.so*"))
    candidates += glob.glob(os.path.join(base, "confluent_kafka", ".dylibs", "librdkafka*.dylib"))
    if not candidates:  # a confluent-kafka built against a system librdkafka
        candidates = ["librdkafka.so.1"]
    lib = ctypes.CDLL(candidates[0])
    vp, i32, i16 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int16
    for name, res, args in [
        ("rd_kafka_name", ctypes.c_char_p, [vp]),
        ("rd_kafka_handle_mock_cluster", vp, [vp]),
        ("rd_kafka_mock_cluster_bootstraps", ctypes.c_char_p, [vp]),
        (
            "rd_kafka_mock_topic_create",
            ctypes.c_int,
            [vp, ctypes.c_char_p, ctypes.c_int, ctypes.c_int],
        ),
        ("rd_kafka_mock_broker_set_down", ctypes.c_int, [vp, i32]),
        ("rd_kafka_mock_broker_set_up", ctypes.c_int, [vp, i32]),
        ("rd_kafka_mock_broker_set_rtt", ctypes.c_int, [vp, i32, ctypes.c_int]),
        ("rd_kafka_mock_push_request_errors_array", None, [vp, i16, ctypes.c_size_t, vp]),
        ("rd_kafka_mock_clear_request_errors", None, [vp, i16]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_INHERITED: list[Any] = []  # owners inherited through fork: kept, never destroyed in the child
_STUCK: list[threading.Thread] = []  # destroys that did not finish in time (see close())
DESTROY_TIMEOUT = 15.0
log = logging.getLogger("tensorfeed.kafka")


def _close_at_exit(ref: weakref.ref[MockCluster]) -> None:
    cluster = ref()
    if cluster is not None:
        cluster.close()


@dataclass(frozen=True)
class _CloseListeners:
    ports: tuple[int, ...]

    def __call__(self, worker_id: int) -> None:
        import socket

        for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
            fd = int(name)
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue  # not a socket
            try:
                addr = sock.getsockname()
                if isinstance(addr, tuple) and len(addr) >= 2 and addr[1] in self.ports:
                    os.close(fd)
            except OSError:
                pass
            finally:
                sock.close()


def _rk_pointer(client: Any, lib: ctypes.CDLL) -> int:
    """The ``rd_kafka_t *`` inside a confluent-kafka Producer/Consumer (see module docstring)."""
    ptr = ctypes.c_void_p.from_address(id(client) + sys.getsizeof(object())).value
    name = lib.rd_kafka_name(ptr) if ptr else None
    if ptr is None or not name or not name.startswith(b"rdkafka#"):
        raise RuntimeError("cannot find the librdkafka handle of this confluent-kafka client")
    return int(ptr)


class MockCluster:
    """librdkafka's mock Kafka cluster with ``brokers`` brokers (see module docstring)."""

    def __init__(self, brokers: int = 1, partitions: int = 4) -> None:
        ck = require("confluent_kafka", "kafka", "the Kafka mock cluster")
        self._pid = os.getpid()
        self._owner = ck.Producer(
            {
                "test.mock.num.brokers": brokers,
                "log_level": 3,  # the mock cluster announces itself at level 5 on stderr
            }
        )
        self._lib = _librdkafka()
        self._mc = self._lib.rd_kafka_handle_mock_cluster(_rk_pointer(self._owner, self._lib))
        if not self._mc:
            raise RuntimeError("librdkafka did not create a mock cluster")
        self.bootstrap: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()
        self.brokers = brokers
        self.default_partitions = partitions
        # closed before interpreter shutdown, after this process's consumers (see close())
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- topics and data ----------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int | None = None) -> None:
        err = self._lib.rd_kafka_mock_topic_create(
            self._mc, name.encode(), partitions or self.default_partitions, 1
        )
        if err:
            raise RuntimeError(f"mock cluster could not create topic {name!r} (error {err})")

    def producer(self, **config: Any) -> Any:
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
        n_parts = self.partitions(topic)
        p = self.producer(**config)
        for i, v in enumerate(values):
            if isinstance(partition, list):
                part = partition[i]
            elif partition is None:
                part = i % n_parts
            else:
                part = partition
            key = keys[i] if keys is not None else None
            p.produce(topic, value=v, key=key, partition=part)
            if i % 10000 == 9999:
                p.poll(0)
        if p.flush(30):
            raise RuntimeError(f"could not deliver every message to {topic!r} within 30s")

    def partitions(self, topic: str) -> int:
        md = self._owner.list_topics(topic, timeout=10)
        return len(md.topics[topic].partitions)

    # -- fault injection ------------------------------------------------------------------------
    def broker_down(self, broker_id: int = -1) -> None:
        """Disconnect the broker(s) and refuse new connections (-1: all)."""
        self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def broker_up(self, broker_id: int = -1) -> None:
        self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def set_rtt(self, rtt_ms: int, broker_id: int = -1) -> None:
        self._lib.rd_kafka_mock_broker_set_rtt(self._mc, broker_id, rtt_ms)

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """The next ``len(errors)`` requests of type ``api_key`` (1 = Fetch, 3 = Metadata ...)
        fail with these Kafka error codes (-195 = transport failure: the broker disconnects)."""
        arr = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(
            self._mc, api_key, len(errors), ctypes.cast(arr, ctypes.c_void_p)
        )

    def worker_init_fn(self) -> _CloseListeners:
        """A DataLoader ``worker_init_fn`` for workers forked from the process that hosts the
        cluster: they inherit its listening sockets, and a broker taken down and up again could
        not listen anew while a worker holds the old socket. The function closes them in the
        worker (spawned workers do not inherit them and need nothing)."""
        ports = tuple(int(hp.rpartition(":")[2]) for hp in self.bootstrap.split(","))
        return _CloseListeners(ports)

    def close(self) -> None:
        """Stop the cluster: first close this process's consumers of it, then destroy the client
        that owns it, here and now.

        NOTE [ Tearing down a mock cluster ]
        Left to the garbage collector, the owning client is destroyed whenever its last reference
        goes (in a fixture's teardown, in a collection triggered on any thread, or while the
        interpreter finalises), and consumers of the cluster live on, reconnecting to nothing,
        until their readers are collected in turn. librdkafka's destroy and close wait for the
        client's threads: during finalisation, or in a forked child that has no such threads,
        that wait never ends. So: consumers first, then the owner, explicitly, at close() or at
        the latest from an exit hook while the interpreter is whole; in a forked child the
        inherited handle is never touched.

        Even then, destroying the owner can wait forever: under load, ``rd_kafka_destroy`` of
        the client hosting the cluster was seen blocked in C for the whole 300 s test timeout
        (scripts/stress.sh, conformance teardown; main thread in ``Producer.close()``, no other
        Python thread involved). So the owner is destroyed on a daemon thread of its own and
        waited for at most ``DESTROY_TIMEOUT`` seconds; one that does not finish is left to
        itself (it holds no Python object and no lock of ours) and logged, instead of hanging
        the process that wanted to stop."""
        owner, self._owner, self._mc = self._owner, None, None
        if owner is None:
            return
        if os.getpid() != self._pid:  # inherited through fork: not ours to destroy
            _INHERITED.append(owner)
            return
        close_consumers_of(self.bootstrap)
        box = [owner]
        del owner  # the thread below holds the last reference

        def destroy() -> None:
            close = getattr(box[0], "close", None)  # Producer.close() in newer confluent-kafka
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            box.clear()  # the last reference: librdkafka's destroy runs here, without the GIL

        thread = threading.Thread(target=destroy, name="tensorfeed-kafka-mock-close", daemon=True)
        thread.start()
        thread.join(DESTROY_TIMEOUT)
        if thread.is_alive():
            _STUCK.append(thread)
            log.warning(
                "the mock Kafka cluster at %s did not shut down within %.0f s; leaving it to "
                "finish on its own",
                self.bootstrap,
                DESTROY_TIMEOUT,
            )

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
