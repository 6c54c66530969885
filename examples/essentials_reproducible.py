"""Reproducible batches whatever num_workers, and resuming mid-epoch."""

import json

import numpy as np

import tensorfeed as tfd

tfd.seed_everything(0)  # Python, numpy and torch (model init, dropout ...)

ds = tfd.MemoryDataset({"id": np.arange(1_000), "x": np.random.rand(1_000)})


def epoch_ids(loader):
    return [b["id"].tolist() for b in loader]


# The order depends only on (seed, epoch): the same for 0 or 2 workers, on every run.
a = epoch_ids(tfd.DataLoader(ds, batch_size=100, shuffle=True, seed=42, num_workers=0))
b = epoch_ids(tfd.DataLoader(ds, batch_size=100, shuffle=True, seed=42, num_workers=2))
assert a == b

loader = tfd.DataLoader(ds, batch_size=100, shuffle=True, seed=42)
first, second = epoch_ids(loader), epoch_ids(loader)  # each epoch has a new order
assert first != second
loader.set_epoch(0)  # replay epoch 0
assert epoch_ids(loader) == first

# Resume mid-epoch: the remaining batches equal those of the uninterrupted run.
loader = tfd.DataLoader(ds, batch_size=100, shuffle=True, seed=42)
it = iter(loader)
done = [next(it)["id"].tolist() for _ in range(4)]
checkpoint = json.dumps(loader.state_dict())  # or torch.save(...)
del it

restarted = tfd.DataLoader(ds, batch_size=100, shuffle=True, seed=42)
restarted.load_state_dict(json.loads(checkpoint))
assert done + epoch_ids(restarted) == first
print("resumed after", len(done), "batches: same epoch as the uninterrupted run")
