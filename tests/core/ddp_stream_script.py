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
# 13 chunks of 8 rows: rank 0 gets 7 chunks, rank 1 gets 6 -> uneven on purpose;
# with rows=8 only rank 0 has data at all
rows = int(sys.argv[4]) if len(sys.argv) > 4 else 104
stream = tfd.MemoryStream({"id": np.arange(rows)}, chunk_rows=8)
loader = tfd.DataLoader(stream, batch_size=8, num_workers=workers, ddp=policy)
try:
    ids = [b["id"].tolist() for b in loader]
    result = {"ids": ids, "stats": loader.stats.as_dict()}
except tfd.ConfigError as exc:
    result = {"error": str(exc)}
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
dist.barrier()
dist.destroy_process_group()
