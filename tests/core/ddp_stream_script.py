"""Run by torchrun (2 ranks, gloo): a stream with uneven shards through tfd.DataLoader."""

import json
import os
import sys

import numpy as np
import torch.distributed as dist

import tensorfeed as tfd

out_dir, policy, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
# 13 chunks of 8 rows: rank 0 gets 7 chunks, rank 1 gets 6 -> uneven on purpose
stream = tfd.MemoryStream({"id": np.arange(104)}, chunk_rows=8)
loader = tfd.DataLoader(stream, batch_size=8, num_workers=workers, ddp=policy)
ids = [b["id"].tolist() for b in loader]
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump({"ids": ids, "stats": loader.stats.as_dict()}, f)
dist.barrier()
dist.destroy_process_group()
