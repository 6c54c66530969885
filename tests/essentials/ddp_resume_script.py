"""One run of an elastic resume (test_elastic_resume.py): under torchrun (gloo, CPU) or alone.

``python ddp_resume_script.py OUT WORKERS take STEPS``: read epoch 0 for ``STEPS + rank`` batches
(ranks drift apart on purpose), take the job's checkpoint (a collective), and have rank 0 save it
to ``OUT/state.json``. ``... resume``: load ``OUT/state.json``, read the rest of epoch 0 and all of
epoch 1. Each rank writes what it delivered to ``OUT/<mode>-rank<r>.json``.

``TFD_RESUME_SOURCE`` picks the source: ``memory`` (a shuffled MemoryDataset, the default),
``stream`` (a MemoryStream) or ``sqlite:PATH`` (a SQLStream keyed by ``id`` over table ``t``).
Streams keep DDP ranks in step batch by batch, so every rank reads ``STEPS`` batches of them.
"""

import json
import os
import sys

import numpy as np

import tensorfeed as tfd

out_dir, workers, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
distributed = "WORLD_SIZE" in os.environ
if distributed:
    import torch.distributed as dist

    dist.init_process_group("gloo")
rank = dist.get_rank() if distributed else 0
N = 96
kind = os.environ.get("TFD_RESUME_SOURCE", "memory")
data = {"id": np.arange(N), "x": np.arange(N) * 0.5}
if kind == "memory":
    ds = tfd.MemoryDataset(data)
    loader = tfd.DataLoader(ds, batch_size=4, shuffle=True, seed=11, num_workers=workers)
else:
    stream = (
        tfd.MemoryStream(data, chunk_rows=4)
        if kind == "stream"
        else tfd.SQLStream(f"sqlite:///{kind.split(':', 1)[1]}", table="t", key="id")
    )
    loader = tfd.DataLoader(stream, batch_size=4, seed=11, num_workers=workers)
result: dict[str, list[int]] = {}
if mode == "take":
    steps = int(sys.argv[4]) + (rank if kind == "memory" else 0)
    it = iter(loader)
    result["epoch0"] = [i for _ in range(steps) for i in next(it)["id"].tolist()]
    state = loader.state_dict()  # every rank calls it: it gathers the ranks' positions
    if rank == 0:
        with open(os.path.join(out_dir, "state.json"), "w") as f:
            json.dump(state, f)
    del it
else:
    with open(os.path.join(out_dir, "state.json")) as f:
        loader.load_state_dict(json.load(f))
    result["epoch0"] = [i for b in loader for i in b["id"].tolist()]
    result["epoch1"] = [i for b in loader for i in b["id"].tolist()]
with open(os.path.join(out_dir, f"{mode}-rank{rank}.json"), "w") as f:
    json.dump(result, f)
if distributed:
    dist.barrier()
    dist.destroy_process_group()
