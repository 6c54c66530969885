"""Elastic resume: a checkpoint taken on one topology resumes the same epoch on another.

Run: python examples/essentials_elastic_resume.py
 or: torchrun --nproc_per_node=2 examples/essentials_elastic_resume.py
It reads part of an epoch with 2 DataLoader workers, saves the model with
torch.distributed.checkpoint and the loader's position as JSON next to it, then resumes on 0
workers (and, run again under torchrun with another --nproc_per_node, on that many ranks): the
rest of the epoch, every row once.
"""

import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import tensorfeed as tfd

if "RANK" in os.environ:
    dist.init_process_group("gloo")
rank = dist.get_rank() if dist.is_initialized() else 0
warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process
ckpt = [os.environ.get("CKPT_DIR") or tempfile.mkdtemp(prefix="tfd-elastic-")]
if dist.is_initialized():
    dist.broadcast_object_list(ckpt, src=0)  # one checkpoint directory for the whole job
ckpt = ckpt[0]

ds = tfd.MemoryDataset({"id": np.arange(960), "x": np.random.default_rng(0).random(960)})
model = torch.nn.Linear(1, 1)


def loader(workers: int) -> tfd.DataLoader:
    return tfd.DataLoader(ds, batch_size=32, shuffle=True, seed=0, num_workers=workers)


train = loader(workers=2)
it = iter(train)
seen = [int(i) for _ in range(5) for i in next(it)["id"]]
state = train.state_dict()  # under torchrun: a collective, the same job state on every rank
dcp.save({"model": model.state_dict()}, checkpoint_id=ckpt)  # tensors: DCP
if rank == 0:  # the loader's position: JSON, not a tensor, and the same on every rank
    with open(os.path.join(ckpt, "loader.json"), "w") as f:
        json.dump(state, f)
del it

# ... the job is preempted and comes back with another number of workers (or ranks) ...
if dist.is_initialized():
    dist.barrier()
restored = {"model": torch.nn.Linear(1, 1).state_dict()}
dcp.load(restored, checkpoint_id=ckpt)
resumed = loader(workers=0)
with open(os.path.join(ckpt, "loader.json")) as f:
    resumed.load_state_dict(json.load(f))  # each rank takes its share of the rest
rest = [int(i) for batch in resumed for i in batch["id"]]

if not dist.is_initialized():
    assert sorted(seen + rest) == list(range(len(ds)))  # every row once, nothing twice
print(f"rank {rank}: {len(seen)} rows before the checkpoint, {len(rest)} after")
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
if rank == 0 and not os.environ.get("CKPT_DIR"):
    shutil.rmtree(ckpt)  # a demonstration: keep nothing
