"""Splits and class balancing on iterable sources (streams)."""

import numpy as np

import tensorfeed as tfd
from tensorfeed import balance_stream

rng = np.random.default_rng(0)
n = 20_000
events = {
    "event_id": np.arange(n),
    "value": rng.normal(size=n),
    "label": rng.choice([0, 1, 2], size=n, p=[0.8, 0.15, 0.05]),
}
stream = tfd.MemoryStream(events, shuffle_buffer=2_000, seed=0)

# A stream has no row positions, so it is split by a key column's hash.
parts = tfd.split(stream, {"train": 0.9, "val": 0.1}, key="event_id")

# Keep each class with probability (r_c / f_c) / max_k(r_k / f_k): equal classes here.
balanced = balance_stream(parts["train"], label="label", seed=0)
labels = np.concatenate(
    [b["label"].numpy() for b in tfd.DataLoader(balanced, batch_size=512, num_workers=2)]
)
print("rows kept:", len(labels), "class shares:", np.bincount(labels) / len(labels))
