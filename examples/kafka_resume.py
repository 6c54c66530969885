"""Offsets are training state: checkpoint mid-epoch, resume exactly (any group id), commit.

Run: python examples/kafka_resume.py   (uses $TENSORFEED_KAFKA or librdkafka's mock cluster)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from kafka_quickstart import telemetry_topic

import tensorfeed as tfd


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y.float())
    loss.backward()  # (an optimizer step would follow)


def main(path: Path) -> None:
    bootstrap, topic, _cluster = telemetry_topic()
    model = torch.nn.Linear(2, 1)
    # --8<-- [start:checkpoint]
    stream = tfd.KafkaStream(
        bootstrap,
        topic,
        group_id="trainer",
        features=["temperature", "vibration"],
        target="anomaly",
    )
    loader = tfd.DataLoader(stream, batch_size=256, num_workers=2)
    for step, (x, y) in enumerate(loader):
        train_step(model, x, y)
        if step == 5:  # checkpoint: the offsets after the last batch the loop received
            torch.save({"model": model.state_dict(), "loader": loader.state_dict()}, path)
            stream.commit(torch.load(path)["loader"])  # after saving: at-least-once for the group
            break
    # --8<-- [end:checkpoint]
    before = 6 * 256
    # --8<-- [start:resume]
    # later, maybe in a new process, with the same or another group id:
    saved = torch.load(path)
    model.load_state_dict(saved["model"])
    stream = tfd.KafkaStream(
        bootstrap,
        topic,
        group_id="trainer-2",
        features=["temperature", "vibration"],
        target="anomaly",
    )
    loader = tfd.DataLoader(stream, batch_size=256, num_workers=2)
    loader.load_state_dict(saved["loader"])
    rest = sum(len(x) for x, _ in loader)  # the rest of the epoch, nothing twice
    # --8<-- [end:resume]
    print(f"before the checkpoint {before:,}, after it {rest:,} messages")
    assert before + rest == 4000
    # --8<-- [start:group]
    group_view = tfd.KafkaStream(bootstrap, topic, group_id="trainer")
    print(group_view.committed())  # what commit() wrote: {(topic, partition): offset}
    print(sum(group_view.lag().values()), "messages behind the end")
    # --8<-- [end:group]
    assert os.path.exists(path)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp) / "checkpoint.pt")
