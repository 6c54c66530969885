"""One view of the source for the whole job: under ``torch.distributed`` rank 0 resolves what is
read and every rank reads that.

NOTE [ One view of the source for the job ]
Each process of a DDP job builds its own dataset object, and each would resolve the source on
its own: list the lake, export a PostgreSQL snapshot and read the key index, ask Kafka for the
end offsets of ``end="now"``. With writers active, ranks (on different nodes, moments apart)
would then read different data, and an epoch's positions would not mean the same rows on every
rank: rows twice or never. So ``tfd.DataLoader`` has rank 0's view broadcast to all ranks
(``broadcast_object_list``) and the others adopt it:

- when the loader is built, for a map-style source (before its sampler is sized): SQLDataset's
  key index and exported snapshot (other ranks' workers import rank 0's snapshot, which rank 0
  keeps open), LakeDataset's plan (the pinned file list with sizes, mtimes and ETags);
- when each epoch starts (and when a checkpoint is loaded), for a stream: SQLStream's exported
  snapshot on PostgreSQL, LakeStream's plan of the epoch, KafkaStream's pinned end offsets.

A source takes part by implementing ``_job_view()`` (a picklable view, called on rank 0) and
``_adopt_job_view(view)`` (called on the others). Without a process group nothing happens.
"""

from __future__ import annotations

from typing import Any

from .sampling import dist_rank_world


def share(source: Any) -> bool:
    """Give every rank rank 0's view of ``source`` (a collective when the job has several
    ranks and the source takes part); True if it did."""
    view_of = getattr(source, "_job_view", None)
    rank, ranks = dist_rank_world()
    if ranks == 1 or not callable(view_of):
        return False
    import torch.distributed as dist

    box = [view_of() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if rank != 0:
        source._adopt_job_view(box[0])
    return True
