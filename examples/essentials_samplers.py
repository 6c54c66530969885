"""Samplers: class-balanced, weighted and hard-example mining, all checkpointable."""

import json

import numpy as np
import torch

import tensorfeed as tfd

rng = np.random.default_rng(0)
n = 2_000
ds = tfd.MemoryDataset(
    {
        "row": np.arange(n),
        "x": rng.normal(size=n).astype(np.float32),
        "label": (rng.random(n) < 0.05).astype(np.int64),  # 5% positives
    }
)

# Oversample the rare class: reads only the "label" column, never the rows.
balanced = tfd.BalancedSampler("label", dataset=ds, mode="over", seed=0)
print("per epoch:", balanced.class_counts())
loader = tfd.DataLoader(ds, batch_size=128, sampler=balanced, seed=0)
labels = torch.cat([b["label"] for b in loader])
print(f"positive share in an epoch: {labels.float().mean():.2f}")

# Any per-row weights (for example inverse frequency, or recency).
weights = np.where(ds.column("label") == 1, 10.0, 1.0)
weighted = tfd.WeightedSampler(weights, num_samples=1_000, seed=0)

# Hard-example mining: report each row's loss; high-loss rows come up more often next epoch.
hard = tfd.HardExampleSampler(len(ds), seed=0, uniform=0.2)
loader = tfd.DataLoader(ds, batch_size=128, sampler=hard, seed=0)
for _epoch in range(2):
    for batch in loader:
        loss = batch["x"].abs()  # stand-in for F.cross_entropy(..., reduction="none")
        hard.update(batch["row"], loss)
top = np.argsort(hard.probabilities())[-3:]
print("most likely rows next epoch:", top.tolist())

# Samplers are part of the loader's checkpoint, which is plain JSON.
state = json.dumps(loader.state_dict())
resumed = tfd.DataLoader(
    ds, batch_size=128, sampler=tfd.HardExampleSampler(len(ds), seed=0, uniform=0.2), seed=0
)
resumed.load_state_dict(json.loads(state))
print("checkpoint size:", len(state), "bytes")
