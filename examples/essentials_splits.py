"""Splits and a dict of loaders: stratified, grouped, stable across runs and machines."""

import numpy as np
import torch

import tensorfeed as tfd

rng = np.random.default_rng(0)
n = 10_000
ds = tfd.MemoryDataset(
    {
        "order_id": np.arange(n) * 13 + 1000,
        "user_id": rng.integers(0, 800, n),
        "amount": rng.gamma(2.0, 30.0, n).astype(np.float32),
        "is_gift": (rng.random(n) < 0.1).astype(np.int64),
    },
    features=["amount"],
    target="is_gift",
)

# Stratified by label, grouped by user (no user in two splits), keyed by order_id so the
# assignment does not depend on row order: the same rows land in "test" on every machine.
parts = tfd.split(
    ds, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, stratify="is_gift", group="user_id"
)
for name, part in parts.items():
    print(f"{name:>5}: {len(part):5d} rows, gift rate {part.column('is_gift').mean():.3f}")
assert sum(len(p) for p in parts.values()) == n

loaders = tfd.loaders(parts, batch_size=256, shuffle="train", seed=0)
model = torch.nn.Linear(1, 1)
for x, y in loaders["train"]:  # x: float32 [256, 1], y: int64 [256]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y.float())
stats = loaders["train"].stats
print(
    f"train epoch: {stats.batches} batches, {stats.rows_per_s:,.0f} rows/s, "
    f"waiting {stats.wait_fraction:.0%} of the time"
)

# torch's signature, for code that already uses it
train, val = tfd.random_split(ds, [0.9, 0.1])
print("random_split:", len(train), len(val))
