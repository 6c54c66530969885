"""Train a readmission model from a lake: filter on partitions, locality-shuffled batches,
validation on a held-out year through a stream, and a resumable checkpoint.

Run: python examples/lake_training.py   (writes a small lake to a temporary folder first)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from lake_quickstart import make_lake  # the example next to this one

import tensorfeed as tfd


def main(root: Path) -> None:
    make_lake(root)
    # --8<-- [start:train]
    train = tfd.LakeDataset(
        str(root), filter=[("year", "<", 2024)], features=["age", "bmi"], target="readmitted"
    )
    val = tfd.LakeStream(
        str(root), filter=[("year", "=", 2024)], features=["age", "bmi"], target="readmitted"
    )
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    # batch_sampler= hands whole index arrays to the dataset: the fastest shuffled read
    batches = train.locality_sampler(seed=0, window=8, batch_size=256)
    loader = tfd.DataLoader(train, batch_sampler=batches)
    for epoch in range(2):
        batches.set_epoch(epoch)  # a new order each epoch
        for x, y in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x).squeeze(1), y.float()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            correct, seen = 0, 0
            for x, y in tfd.DataLoader(val, batch_size=1024):
                correct += ((model(x).squeeze(1) > 0) == (y == 1)).sum().item()
                seen += len(y)
        print(
            f"epoch {epoch}: loss {loss.item():.3f}, data-wait "
            f"{loader.stats.wait_fraction:.2f}, val accuracy {correct / seen:.3f}"
        )
    checkpoint = {"model": model.state_dict(), "loader": loader.state_dict()}
    # --8<-- [end:train]
    assert "loader" in checkpoint


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp) / "patients")
