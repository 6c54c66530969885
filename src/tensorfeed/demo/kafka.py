"""Train an anomaly detector on live IoT telemetry from Kafka, stop it, and resume it exactly.

Starts librdkafka's mock cluster (a Kafka-protocol test broker in a helper process, not a
production Kafka) unless ``--bootstrap host:port`` names a real broker. A producer thread
publishes synthetic sensor telemetry (temperature, vibration, pressure, current, humidity, rpm)
from many devices, keyed by device, with occasional anomaly episodes. A small 1-D convolutional model trains on per-device
sliding windows (``stream.windows``) read by ``tfd.DataLoader`` workers while the producer is still
writing; half-way it checkpoints (model + loader state = Kafka offsets), commits the offsets to a
consumer group, and stops. A fresh loader then resumes from the checkpoint and trains on the rest
of the live stream. Detection quality is measured on a held-out topic read as a bounded epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import numpy as np

from ..errors import ConfigError, ConnectionFailedError

FIELDS = ["temperature", "vibration", "pressure", "current", "humidity", "rpm"]
BASE = np.array([55.0, 1.0, 101.3, 12.0, 40.0, 1500.0])
NOISE = np.array([0.8, 0.08, 0.3, 0.4, 1.5, 20.0])
# an anomaly episode: overheating, shaking, current spikes, rpm sag (scaled by episode progress)
DRIFT = np.array([6.0, 0.9, -0.6, 4.0, 0.0, -150.0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="a Kafka broker host:port (default: start librdkafka's mock cluster)",
    )
    parser.add_argument(
        "--messages", type=int, default=60_000, help="telemetry messages to train on"
    )
    parser.add_argument("--devices", type=int, default=40, help="sensor devices (default 40)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--window", type=int, default=32, help="window length (rows per device)")
    parser.add_argument("--step", type=int, default=8, help="rows between window starts")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per batch")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="produce at most this many messages/s (default: as fast as the broker takes them)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file, kept (default: a temporary file, removed at the end)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)


# --------------------------------------------------------------------------- the data


def telemetry(n: int, devices: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` readings, round robin over devices: (device ids, values [n, 6], anomaly flags)."""
    rng = np.random.default_rng([seed, 42])
    steps = -(-n // devices)
    offset = rng.normal(0, 1, (devices, len(FIELDS))) * NOISE * 3
    level = np.zeros((steps, devices, len(FIELDS)))
    flags = np.zeros((steps, devices), dtype=np.int64)
    for d in range(devices):
        t = 0
        while t < steps:
            t += int(rng.geometric(1 / 60))  # about one episode per 60 readings
            length = int(rng.integers(8, 24))
            if t >= steps:
                break
            ramp = np.minimum(np.arange(1, length + 1) / 6, 1.0)[: steps - t]
            level[t : t + len(ramp), d] = ramp[:, None] * DRIFT * rng.uniform(0.6, 1.4)
            flags[t : t + len(ramp), d] = 1
            t += length
    noise = rng.normal(0, 1, (steps, devices, len(FIELDS))) * NOISE
    values = BASE + offset[None] + level + noise
    device = np.broadcast_to(np.arange(devices), (steps, devices))
    return device.reshape(-1)[:n], values.reshape(-1, len(FIELDS))[:n], flags.reshape(-1)[:n]


def encode(device: np.ndarray, values: np.ndarray, flags: np.ndarray, start: int) -> list[bytes]:
    out = []
    for i, (d, v, f) in enumerate(zip(device.tolist(), values.round(3).tolist(), flags.tolist())):
        row = {"device_id": d, "seq": start + i, "anomaly": f}
        row.update(zip(FIELDS, v))
        out.append(json.dumps(row).encode())
    return out


class TelemetryProducer(threading.Thread):
    """Publishes the telemetry (keyed by device, partition = device % partitions)."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        n: int,
        devices: int,
        partitions: int,
        seed: int,
        rate: float,
    ) -> None:
        super().__init__(daemon=True, name="telemetry-producer")
        self.producer, self.topic, self.n = producer, topic, n
        self.devices, self.partitions, self.seed, self.rate = devices, partitions, seed, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            device, values, flags = telemetry(self.n, self.devices, self.seed)
            t0 = time.monotonic()
            for start in range(0, self.n, 1000):
                end = min(self.n, start + 1000)
                msgs = encode(device[start:end], values[start:end], flags[start:end], start)
                for d, m in zip(device[start:end].tolist(), msgs):
                    self._produce(m, d)
                self.producer.poll(0)
                self.sent = end
                if self.rate > 0:
                    time.sleep(max(0.0, end / self.rate - (time.monotonic() - t0)))
            self.producer.flush(60)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _produce(self, value: bytes, device: int) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    value=value,
                    key=str(device).encode(),
                    partition=device % self.partitions,
                )
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)


# --------------------------------------------------------------------------- the model


def make_model(features: int) -> Any:
    import torch
    from torch import nn

    class Detector(nn.Module):
        """Per-window anomaly logit from a [batch, time, features] window."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(features)
            self.conv = nn.Sequential(
                nn.Conv1d(features, 32, 5, padding=2),
                nn.ReLU(),
                nn.Conv1d(32, 32, 5, padding=2),
                nn.ReLU(),
            )
            self.head = nn.Linear(64, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(self.norm(x.transpose(1, 2)))
            recent = h[:, :, -8:].mean(dim=2)  # the latest readings decide "anomalous now"
            return self.head(torch.cat([recent, h.amax(dim=2)], dim=1)).squeeze(1)

    return Detector()


def window_labels(y: Any, recent: int = 4) -> Any:
    """A window is anomalous if its device is in an episode at its last readings."""
    return (y[:, -recent:].float().mean(dim=1) >= 0.5).float()


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


# --------------------------------------------------------------------------- the run


class _Broker:
    """The embedded mock cluster, or a real broker at --bootstrap."""

    def __init__(self, bootstrap: str | None, partitions: int) -> None:
        from ..sources.kafka.mock import MockCluster

        self.mock = MockCluster(partitions=partitions) if bootstrap is None else None
        self.bootstrap: str = self.mock.bootstrap if self.mock else str(bootstrap)
        self.partitions = partitions
        if self.mock is None:
            self.check_reachable()

    def check_reachable(self, timeout: float = 10.0) -> None:
        """Fail fast, in one line, when --bootstrap names no reachable broker."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            err: Any = exc.args[0] if exc.args else exc
            text = err.str() if hasattr(err, "str") else str(exc)
            raise ConnectionFailedError(
                f"cannot reach the Kafka broker at {self.bootstrap} (--bootstrap) within "
                f"{timeout:.0f}s: {text}"
            ) from None

    def label(self) -> str:
        if self.mock:
            return (
                f"librdkafka's mock cluster at {self.bootstrap} (a Kafka-protocol test "
                "broker in a helper process started by this demo, not a production Kafka)"
            )
        return f"Kafka broker at {self.bootstrap}"

    def create_topics(self, names: list[str]) -> None:
        if self.mock:
            for name in names:
                self.mock.create_topic(name, self.partitions)
            return
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": "3"})
        futures = admin.create_topics(
            [NewTopic(n, self.partitions, 1) for n in names], request_timeout=5
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=10)
            except Exception as exc:  # exists already, or the broker creates it on first write
                print(
                    f"note: could not create topic {name!r} ({exc}); relying on auto-create",
                    file=sys.stderr,
                )

    def producer(self) -> Any:
        from confluent_kafka import Producer

        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 20,
                "queue.buffering.max.messages": 200_000,
                "log_level": 3,
            }
        )


def _train(
    loader: Any, model: Any, optim: Any, bar: Any, stop_after: int | None
) -> tuple[int, Any]:
    import torch

    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))
    batches = 0
    state = None
    model.train()
    for x, y in loader:
        loss = loss_fn(model(x), window_labels(y))
        optim.zero_grad()
        loss.backward()
        optim.step()
        batches += 1
        bar.update(len(x))
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if stop_after is not None and batches >= stop_after:
            state = loader.state_dict()
            break
    return batches, state


def _evaluate(stream: Any, model: Any, args: argparse.Namespace) -> dict[str, float]:
    import torch

    import tensorfeed as tfd

    windows = stream.windows(
        key="device_id", size=args.window, step=args.step, features=FIELDS, target="anomaly"
    )
    scores, labels = [], []
    model.eval()
    with torch.no_grad():
        for x, y in tfd.DataLoader(windows, batch_size=256):
            scores.append(torch.sigmoid(model(x)).numpy())
            labels.append(window_labels(y).numpy())
    s, lab = np.concatenate(scores), np.concatenate(labels)
    pred = s >= 0.5
    tp = float((pred & (lab == 1)).sum())
    precision = tp / max(1.0, float(pred.sum()))
    recall = tp / max(1.0, float((lab == 1).sum()))
    return {
        "auc": auc(s, lab),
        "precision": precision,
        "recall": recall,
        "windows": len(s),
        "anomalous": float(lab.mean()),
    }


def run(args: argparse.Namespace) -> int:
    import warnings

    for name in ("messages", "devices", "partitions", "window", "step", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(args, name)}")
    if args.checkpoint and not os.path.isdir(os.path.dirname(os.path.abspath(args.checkpoint))):
        raise ConfigError(f"--checkpoint {args.checkpoint!r}: its folder does not exist")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*set_vital.*")  # torchdata's, not ours
        if args.checkpoint:
            return _run(args, args.checkpoint)
        tmp = tempfile.mkdtemp(prefix="tfd-kafka-")
        try:
            return _run(args, os.path.join(tmp, "checkpoint.pt"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, ckpt: str) -> int:
    import torch

    import tensorfeed as tfd

    from . import ClockedBar

    torch.manual_seed(args.seed)
    run_id = uuid.uuid4().hex[:8]
    topic, holdout, group = f"telemetry-{run_id}", f"telemetry-holdout-{run_id}", "tensorfeed-demo"
    broker = _Broker(args.bootstrap, args.partitions)
    print(f"Broker     {broker.label()}")
    broker.create_topics([topic, holdout])

    # The held-out topic: other devices' telemetry (another seed), written up front.
    hold = TelemetryProducer(
        broker.producer(),
        holdout,
        max(2000, args.messages // 5),
        args.devices,
        args.partitions,
        args.seed + 1,
        0,
    )
    hold.run()
    if hold.error is not None:
        raise hold.error
    live = TelemetryProducer(
        broker.producer(), topic, args.messages, args.devices, args.partitions, args.seed, args.rate
    )
    live.start()
    print(
        f"Producing  {args.messages:,} messages from {args.devices} devices to {topic!r} "
        f"({args.partitions} partitions) in a background thread"
    )

    def stream() -> tfd.KafkaStream:
        # A live stream: no end offset; the epoch ends once nothing arrives for 1.5 s.
        return tfd.KafkaStream(
            broker.bootstrap,
            topic,
            group_id=group,
            end=None,
            idle_timeout=1.5,
            poll_batch=512,
            schema={"device_id": "int64", "anomaly": "int64", **dict.fromkeys(FIELDS, "float32")},
        )

    def loader(s: tfd.KafkaStream) -> tfd.DataLoader:
        w = s.windows(
            key="device_id", size=args.window, step=args.step, features=FIELDS, target="anomaly"
        )
        return tfd.DataLoader(w, batch_size=args.batch_size, num_workers=args.num_workers)

    expected = _expected_windows(args.messages, args.devices, args.window, args.step)
    stop_after = max(1, expected // args.batch_size // 2)
    model = make_model(len(FIELDS))
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    bar = ClockedBar(expected, unit="win", desc="training", dynamic_ncols=True)
    t0 = time.perf_counter()

    # Phase 1: train until half-way, checkpoint, commit offsets to the group, stop.
    s1 = stream()
    l1 = loader(s1)
    b1, state = _train(l1, model, optim, bar, stop_after)
    wait1, wall1 = l1.stats.wait_s, l1.stats.wall_s
    if state is None:
        state = l1.state_dict()
    torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "loader": state}, ckpt)
    s1.commit(state)
    lag1 = sum(s1.lag(state).values())
    del l1
    bar.write(
        f"Checkpoint after {b1} batches -> {ckpt}; offsets committed to group {group!r}; "
        f"lag then {lag1:,} messages. Stopping."
    )

    # Phase 2: a new process would do exactly this: rebuild everything and load the checkpoint.
    saved = torch.load(ckpt, weights_only=False)
    model = make_model(len(FIELDS))
    model.load_state_dict(saved["model"])
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    optim.load_state_dict(saved["optim"])
    s2 = stream()
    l2 = loader(s2)
    l2.load_state_dict(saved["loader"])
    bar.write(f"Resumed from the checkpoint at offsets {_fmt(s2.offsets(saved['loader']))}")
    b2, _ = _train(l2, model, optim, bar, None)
    final = l2.state_dict()
    elapsed = time.perf_counter() - t0
    bar.close()
    live.join(timeout=60)
    if live.error is not None:
        raise live.error
    s2.commit(final)

    messages = sum(s2.offsets(final).values())
    lag = sum(s2.lag(final).values())
    wait = (wait1 + l2.stats.wait_s) / max(1e-9, wall1 + l2.stats.wall_s)
    quality = _evaluate(tfd.KafkaStream(broker.bootstrap, holdout, end="now"), model, args)
    print(
        f"Trained    {b1 + b2} batches of {args.batch_size} windows "
        f"[{args.window} x {len(FIELDS)}] from {messages:,} messages; consumer lag {lag:,}"
    )
    print(
        f"Holdout    {quality['windows']:,} windows ({quality['anomalous']:.0%} anomalous): "
        f"AUC {quality['auc']:.3f}, precision {quality['precision']:.3f}, "
        f"recall {quality['recall']:.3f}"
    )
    print(
        f"messages/s {messages / elapsed:,.0f} | data wait {wait:.1%} | "
        f"holdout AUC {quality['auc']:.3f}"
    )
    return 0


def _expected_windows(n: int, devices: int, size: int, step: int) -> int:
    total = 0
    for d in range(devices):
        rows = len(range(d, n, devices))
        total += max(0, (rows - size) // step + 1)
    return total


def _fmt(offsets: dict[tuple[str, int], int]) -> str:
    return ", ".join(f"p{p}={o}" for (_, p), o in offsets.items())


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
