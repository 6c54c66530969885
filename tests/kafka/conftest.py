"""Kafka fixtures: librdkafka's mock cluster (a real Kafka-protocol broker inside this process,
reachable over TCP), started once per session; a fresh topic per test."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("confluent_kafka", reason="confluent-kafka is in tensorfeed[kafka]")

from tensorfeed.sources._kafka_mock import MockCluster

from .kafka_helpers import telemetry

_names = itertools.count()


@pytest.fixture(scope="session")
def cluster() -> Iterator[MockCluster]:
    """The session's mock cluster. Tests that take brokers down use ``fault_cluster``."""
    mc = MockCluster(brokers=1)
    yield mc
    mc.close()


@pytest.fixture
def fault_cluster() -> Iterator[MockCluster]:
    """A private mock cluster for one test that injects faults."""
    mc = MockCluster(brokers=1)
    yield mc
    mc.broker_up()
    mc.close()


def device_of(value: bytes | None, i: int) -> int:
    try:
        return int(json.loads(value)["device_id"])  # type: ignore[arg-type]
    except Exception:
        return i


@pytest.fixture
def topic(cluster: MockCluster) -> Callable[..., str]:
    """``topic(n=200, partitions=4)``: a new topic holding ``n`` telemetry messages, keyed by
    device so each device is in one partition."""

    def make(n: int = 200, partitions: int = 4, values: list[bytes] | None = None) -> str:
        name = f"tfd-test-{next(_names)}"
        cluster.create_topic(name, partitions)
        vals = values if values is not None else [telemetry(i) for i in range(n)]
        if vals:
            cluster.produce(
                name, vals, partition=[device_of(v, i) % partitions for i, v in enumerate(vals)]
            )
        return name

    return make
