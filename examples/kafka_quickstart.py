"""Train from a Kafka topic: tfd.KafkaStream through tfd.DataLoader workers.

Run: python examples/kafka_quickstart.py
Uses $TENSORFEED_KAFKA (host:port) if set, else starts librdkafka's mock cluster (a
Kafka-protocol test broker, in a helper process) and fills a topic with synthetic telemetry.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

import tensorfeed as tfd
from tensorfeed.sources._kafka_mock import MockCluster


def telemetry_topic(n: int = 4000) -> tuple[str, str, object]:
    """A topic of JSON telemetry (device_id, temperature, vibration, anomaly) over 4 partitions."""
    cluster = None if os.environ.get("TENSORFEED_KAFKA") else MockCluster()
    bootstrap = os.environ.get("TENSORFEED_KAFKA") or cluster.bootstrap
    topic = f"telemetry-quickstart-{os.getpid()}"
    if cluster is not None:
        cluster.create_topic(topic, partitions=4)
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    rng = np.random.default_rng(0)
    for i in range(n):
        anomaly = int(rng.random() < 0.1)
        row = {
            "device_id": i % 16,
            "temperature": float(rng.normal(55 + 8 * anomaly, 1)),
            "vibration": float(rng.normal(1 + anomaly, 0.1)),
            "anomaly": anomaly,
        }
        producer.produce(topic, json.dumps(row).encode(), key=str(i % 16).encode())
    producer.flush(30)
    return bootstrap, topic, cluster  # keep the cluster referenced: it lives as long as it


def main() -> None:
    bootstrap, topic, _cluster = telemetry_topic()
    # --8<-- [start:quickstart]
    stream = tfd.KafkaStream(
        bootstrap,  # "host:9092" (a list or "h1:9092,h2:9092" also work)
        topic,  # one topic or a list
        features=["temperature", "vibration"],
        target="anomaly",  # samples and batches become (x, y)
        start="earliest",  # or "latest", "committed", a datetime, {(topic, p): offset}
        end="now",  # a bounded epoch: up to the end offsets at the epoch's start
    )
    loader = tfd.DataLoader(stream, batch_size=256, num_workers=2)  # partitions split by worker

    model = torch.nn.Linear(2, 1)
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(2):  # each bounded epoch reads every message once
        for x, y in loader:
            x = (x - torch.tensor([55.0, 1.0])) / torch.tensor([8.0, 1.0])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x).squeeze(1), y.float()
            )
            optim.zero_grad()
            loss.backward()
            optim.step()
        print(f"epoch {epoch}: {loader.stats.rows:,} messages, loss {loss.item():.3f}")
    print(stream.offsets(loader))  # {(topic, partition): next offset} of the last batch
    # --8<-- [end:quickstart]
    assert loader.stats.rows == 4000


if __name__ == "__main__":
    main()
