"""DDP: run with `torchrun --nproc_per_node=2 examples/essentials_ddp.py` (gloo on CPU).

Also runs as a plain single process. Each rank gets a disjoint, equal share of every epoch.
"""

import os

import numpy as np
import torch.distributed as dist

import tensorfeed as tfd

if "RANK" in os.environ:
    dist.init_process_group("gloo")  # tensorfeed reads rank and world size from here

ds = tfd.MemoryDataset({"id": np.arange(1_001), "label": np.arange(1_001) % 10 == 0})
# ddp="drop": ranks get the same number of rows, the remainder is dropped (and counted);
# ddp="pad" (default) repeats a few rows instead. Samplers split the same way.
loader = tfd.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, ddp="drop")
sampler = tfd.BalancedSampler("label", dataset=ds, seed=0)
balanced = tfd.DataLoader(ds, batch_size=64, sampler=sampler)

rows = sum(len(b["id"]) for b in loader)
print(
    f"rank {dist.get_rank() if dist.is_initialized() else 0}: {rows} rows, "
    f"{len(balanced)} balanced batches"
)
if dist.is_initialized():
    dist.destroy_process_group()
