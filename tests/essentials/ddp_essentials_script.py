"""Run by torchrun (2 ranks, gloo, CPU): samplers and splits under DDP, 2 workers per rank.

Writes ``rank<r>.json`` into the directory given as the first argument.
"""

import json
import os
import sys

import numpy as np
import torch.distributed as dist

import tensorfeed as tfd

out_dir, workers = sys.argv[1], int(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
N = 103  # odd on purpose: the ranks cannot split it evenly
data = {"id": np.arange(N), "y": (np.arange(N) % 5 == 0).astype(np.int64)}
ds = tfd.MemoryDataset(data)


def run(loader):
    return [b["id"].tolist() for b in loader]


result = {}
for policy in ("drop", "pad"):
    loader = tfd.DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers, ddp=policy)
    result[f"map_{policy}"] = run(loader)
    result[f"map_{policy}_uneven"] = loader._epoch_sampler.uneven

weighted = tfd.WeightedSampler(np.ones(N), replacement=False, seed=1, ddp="drop")
# samplers run in the main process: which indices a rank gets does not depend on workers
result["weighted"] = run(tfd.DataLoader(ds, batch_size=8, sampler=weighted))
balanced = tfd.BalancedSampler("y", dataset=ds, seed=1)
result["balanced"] = run(tfd.DataLoader(ds, batch_size=8, sampler=balanced))
result["balanced_counts"] = balanced.class_counts()

stream = tfd.MemoryStream(data, chunk_rows=8)
train = tfd.split(stream, {"train": 0.7, "val": 0.3}, key="id")["train"]
stream_loader = tfd.DataLoader(train, batch_size=8, num_workers=workers, ddp="pad")
result["stream_split"] = run(stream_loader)
result["stream_split_padded"] = stream_loader.stats.ddp_padded

hard = tfd.HardExampleSampler(N, seed=0)
mine = np.arange(rank, N, 2)
hard.update(mine, mine.astype(float), all_ranks=True)  # every rank learns every rank's losses
result["hard_probs"] = hard.probabilities().round(12).tolist()

with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump({str(k): v for k, v in result.items()}, f)
dist.barrier()
dist.destroy_process_group()
