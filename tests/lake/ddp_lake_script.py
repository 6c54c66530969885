"""Run by ``torchrun --nproc_per_node=2`` from test_ddp.py: each rank writes the ids it read.

``python ddp_lake_script.py LAKE_DIR OUT_DIR``: rank r writes ``OUT_DIR/stream-r.txt`` (LakeStream
through tfd.DataLoader with 2 workers) and ``OUT_DIR/map-r.txt`` (LakeDataset with the locality
sampler, which splits the epoch across ranks by itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

import tensorfeed as tfd


def main() -> None:
    lake, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stream = tfd.LakeStream(lake, shuffle_buffer=20, seed=7)
    ids = [
        i for b in tfd.DataLoader(stream, batch_size=16, num_workers=2) for i in b["id"].tolist()
    ]
    (out / f"stream-{rank}.txt").write_text("\n".join(map(str, ids)))
    ds = tfd.LakeDataset(lake, columns=["id"])
    loader = tfd.DataLoader(ds, batch_size=16, sampler=ds.locality_sampler(seed=7, window=2))
    ids = [i for b in loader for i in b["id"].tolist()]
    (out / f"map-{rank}.txt").write_text("\n".join(map(str, ids)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
