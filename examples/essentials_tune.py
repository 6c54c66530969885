"""Choosing num_workers by measuring throughput."""

import numpy as np

import tensorfeed as tfd

rng = np.random.default_rng(0)
columns = {f"f{i}": rng.random(50_000, dtype=np.float32) for i in range(8)}
ds = tfd.MemoryDataset({**columns, "y": rng.integers(0, 2, 50_000)})

# Measures 0 workers, then cores/2 and up while it helps; prints a table, saves a plot.
result = tfd.tune(ds, batch_size=512, max_seconds=1.0, plot="tune.png")
print("recommended num_workers:", result.num_workers)

# Or let the loader do it (measured once, cached per dataset fingerprint):
loader = tfd.DataLoader(ds, batch_size=512, num_workers="auto")
print("auto picked", loader.num_workers)
