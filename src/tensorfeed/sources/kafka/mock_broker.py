"""The program that hosts a librdkafka mock cluster for :class:`~.mock.MockCluster`.

``MockCluster`` runs this file as its own process (``python -I mock_broker.py BROKERS``) and talks
to it over two pipes: this process sends one ``{"bootstrap": ...}`` message when the cluster is up,
then answers one request ``(op, args)`` with one reply ``("ok", result)`` or ``("error", text)``,
as pickled objects framed by ``multiprocessing.connection``. It imports nothing from tensorfeed (so
it starts without torch) and only the standard library and confluent-kafka.

NOTE [ The mock cluster lives in a process of its own ]
The cluster runs on the threads of the librdkafka client that hosts it. Destroying that client
tears the cluster down, and under load that teardown was seen both to block in C for the whole
300 s test timeout (``Producer.close()`` of the owner, nothing else running) and to abort the
process with SIGABRT; a later SIGSEGV in unrelated code (torch's shared-memory cache) ran while such
a destroy was still in progress on a thread. So no process that matters ever destroys it: the
owner lives here, and this process ends by ``os._exit`` (when asked, or when its parent goes away
and the request pipe reaches end of file) or by SIGKILL from ``MockCluster.close()``, without
running librdkafka's teardown at all. The parent keeps only ordinary clients (consumers, producers)
that connect over TCP, as they would to a real broker.

Fault injection uses the mock cluster's C API (``rd_kafka_mock_broker_set_down`` ...), which
confluent-kafka does not wrap: it is called with ctypes on the librdkafka that the confluent-kafka
wheel bundles, passing the ``rd_kafka_t *`` of the client that owns the cluster. That pointer is the
first field after ``PyObject_HEAD`` of confluent-kafka's ``Handle`` struct; :func:`_rk_pointer`
checks it by asking librdkafka for the handle's name before using it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

FLUSH_TIMEOUT = 60.0


def _librdkafka(ck: Any) -> ctypes.CDLL:
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
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _rk_pointer(client: Any, lib: ctypes.CDLL) -> int:
    """The ``rd_kafka_t *`` inside a confluent-kafka Producer/Consumer (see module docstring)."""
    ptr = ctypes.c_void_p.from_address(id(client) + sys.getsizeof(object())).value
    name = lib.rd_kafka_name(ptr) if ptr else None
    if ptr is None or not name or not name.startswith(b"rdkafka#"):
        raise RuntimeError("cannot find the librdkafka handle of this confluent-kafka client")
    return int(ptr)


class _Cluster:
    """The requests this process serves; each method is one ``op``."""

    def __init__(self, ck: Any, brokers: int) -> None:
        self._ck = ck
        # the mock cluster announces itself at log level 5 on stderr
        self._owner = ck.Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        self._lib = _librdkafka(ck)
        self._mc = self._lib.rd_kafka_handle_mock_cluster(_rk_pointer(self._owner, self._lib))
        if not self._mc:
            raise RuntimeError("librdkafka did not create a mock cluster")
        self.bootstrap = self._lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()
        self._producers: dict[tuple[tuple[str, Any], ...], Any] = {}  # kept: never destroyed

    def create_topic(self, name: str, partitions: int) -> None:
        err = self._lib.rd_kafka_mock_topic_create(self._mc, name.encode(), partitions, 1)
        if err:
            raise RuntimeError(f"mock cluster could not create topic {name!r} (error {err})")

    def partitions(self, topic: str) -> int:
        md = self._owner.list_topics(topic, timeout=10)
        return len(md.topics[topic].partitions)

    def produce(
        self,
        topic: str,
        values: list[bytes | None],
        partitions: list[int],
        keys: list[bytes | None] | None,
        config: dict[str, Any],
    ) -> None:
        conf = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "log_level": 3, **config}
        key = tuple(sorted(conf.items()))
        p = self._producers.get(key)
        if p is None:
            p = self._producers[key] = self._ck.Producer(conf)
        for i, v in enumerate(values):
            k = keys[i] if keys is not None else None
            while True:
                try:
                    p.produce(topic, value=v, key=k, partition=partitions[i])
                    break
                except BufferError:  # the local queue is full: let it drain
                    p.poll(0.05)
            if i % 10000 == 9999:
                p.poll(0)
        if p.flush(FLUSH_TIMEOUT):
            raise RuntimeError(
                f"could not deliver every message to {topic!r} within {FLUSH_TIMEOUT:.0f} s"
            )

    def broker_down(self, broker_id: int) -> None:
        self._lib.rd_kafka_mock_broker_set_down(self._mc, broker_id)

    def broker_up(self, broker_id: int) -> None:
        self._lib.rd_kafka_mock_broker_set_up(self._mc, broker_id)

    def set_rtt(self, rtt_ms: int, broker_id: int) -> None:
        self._lib.rd_kafka_mock_broker_set_rtt(self._mc, broker_id, rtt_ms)

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        arr = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(
            self._mc, api_key, len(errors), ctypes.cast(arr, ctypes.c_void_p)
        )


def serve(requests: Connection, replies: Connection, brokers: int) -> None:
    """Start the cluster, announce it, answer requests until ``exit`` or end of file."""
    import confluent_kafka

    try:
        cluster = _Cluster(confluent_kafka, brokers)
    except Exception as e:
        replies.send(("error", f"{type(e).__name__}: {e}"))
        return
    replies.send(("ok", {"bootstrap": cluster.bootstrap, "pid": os.getpid()}))
    while True:
        try:
            op, args = requests.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if op == "exit":
            replies.send(("ok", None))
            return
        try:
            replies.send(("ok", getattr(cluster, op)(*args)))
        except Exception as e:
            replies.send(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    # the pipes move to fds of their own; fd 1 becomes stderr, so a stray print cannot break
    # the framing of the replies
    req_fd, rep_fd = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    serve(Connection(req_fd, writable=False), Connection(rep_fd, readable=False), int(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # never librdkafka's teardown (see NOTE above)
