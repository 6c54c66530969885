"""A stream's checkpoint for the whole job, and moving it to other numbers of workers and ranks.

NOTE [ Elastic stream checkpoints ]
A stream's position lives in its shards: shard ``k = rank * max(W, 1) + worker`` of
``N = R * max(W, 1)`` holds the position after the last batch it handed to the training loop
(torchdata records it with each batch, ``snapshot_every_n_steps=1``). ``tfd.DataLoader.state_dict()``
gathers every rank's torchdata state (a collective under ``torch.distributed``): rank 0's is the
state's torchdata part, as without DDP, and the others' are ``state["tensorfeed"]["stream"] =
{"workers": W, "other_ranks": [state of rank 1, ...]}``, so every rank gets the same state and
one file holds the whole job. Loading on the same W and R gives each rank its own part back, exactly.
Loading on other numbers asks the source to *regroup* (``StreamDataset._regroup``): the N shard
positions become N' positions that together cover exactly the rows not yet delivered. Sources
can do that because each reads fixed logical splits of its data (MemoryStream chunks, lake row
groups, SQL key buckets, Kafka partitions) and gives split ``i`` to shard ``i % N``, so a shard's
position says how far it got in each of its splits (``stream_splits.py``). The order within a
split never depends on the topology. A shuffle buffer regroups too (NOTE [ A shuffle buffer that
regroups ] in ``stream_shuffle.py``; a SQL stream's splits are its key buckets).
"""

from __future__ import annotations

import copy
from typing import Any

from torchdata.stateful_dataloader import stateful_dataloader as _td
from torchdata.stateful_dataloader.worker import _FETCHER_STATE

from .errors import StateError
from .loader_state import _SNAPSHOT, _WORKERS, _int, shaped, steps_since_snapshot, workers_of

_ITER_STATE = "dataset_iter_state"  # torchdata's _IterableDatasetFetcher keys (worker.py)
_ENDED = "fetcher_ended"


def _fetchers(rank_state: dict[str, Any]) -> list[Any]:
    """The fetcher state of each shard of one rank (None: the shard has not started)."""
    snap = rank_state.get(_SNAPSHOT)
    if snap is None:
        return [rank_state.get(_FETCHER_STATE)]
    workers = snap.get(_WORKERS)
    n = workers_of(rank_state)
    if not isinstance(workers, dict) or len(workers) != n:
        raise StateError(f"state_dict['_snapshot'] must hold {n} worker snapshots")
    out = []
    for i in range(n):
        w = workers.get(f"worker_{i}")
        if not isinstance(w, dict):
            raise StateError(f"state_dict['_snapshot'] has no snapshot of worker_{i}")
        out.append(w.get(_FETCHER_STATE))
    return out


def shard_positions(
    ranks: list[dict[str, Any]], source: str, epoch: int, exact: bool = True
) -> list[Any]:
    """The position of every shard of the job, in shard order (None: not started). ``exact``:
    refuse positions some batches older than the checkpoint (``snapshot_every_n_steps > 1``)."""
    out: list[Any] = []
    for r, rank_state in enumerate(ranks):
        if exact and steps_since_snapshot(rank_state):
            raise StateError(
                f"rank {r}'s checkpoint was taken {steps_since_snapshot(rank_state)} batch(es) "
                "after its last snapshot (snapshot_every_n_steps > 1): it resumes on the same "
                "numbers of workers and ranks only"
            )
        for fetcher in _fetchers(rank_state):
            it = fetcher.get(_ITER_STATE) if isinstance(fetcher, dict) else None
            if it is None:
                out.append(None)
                continue
            if not isinstance(it, dict) or it.get("source") != source:
                raise StateError(f"a shard's state in this checkpoint is not of {source!r}: {it!r}")
            if it.get("epoch") != epoch:
                raise StateError(
                    f"a shard's state is of epoch {it.get('epoch')!r}, the loader's of {epoch}"
                )
            out.append(it.get("position"))
    return out


def job_states(rank0: dict[str, Any], block: Any, ranks: int) -> tuple[int, list[dict[str, Any]]]:
    """``(workers, [torchdata state of each rank])`` of a stream's job checkpoint, checked:
    ``rank0`` is the state's torchdata part, ``block`` its ``["tensorfeed"]["stream"]``."""
    where = "state_dict['tensorfeed']['stream']"
    if not isinstance(block, dict):
        raise StateError(f"{where} must be a dict, got {type(block).__name__}")
    workers = _int(block, "workers", where)
    others = block.get("other_ranks")
    if not isinstance(others, list) or len(others) != ranks - 1:
        raise StateError(f"{where}['other_ranks'] must be a list of {ranks - 1} rank states")
    per_rank = [rank0, *others]
    for r, rank_state in enumerate(per_rank):
        if not isinstance(rank_state, dict) or workers_of(rank_state) != workers:
            raise StateError(f"the checkpoint of rank {r} is not a state of {workers} worker(s)")
    return workers, per_rank


def for_shards(
    positions: list[Any], source: str, epoch: int, num_workers: int, base_seed: int
) -> dict[str, Any]:
    """torchdata's state for one rank whose ``max(num_workers, 1)`` shards resume at
    ``positions`` (already regrouped for this rank)."""

    def fetcher(pos: Any) -> dict[str, Any]:
        it = {"epoch": epoch, "position": copy.deepcopy(pos), "source": source}
        return {_ITER_STATE: it, _ENDED: False}

    common = {
        _td._INDEX_SAMPLER_STATE: None,
        _td._SAMPLER_ITER_STATE: None,
        _td._SAMPLER_ITER_YIELDED: 0,
        _td._ITERABLEDATASET_LEN_CALLED: None,
        _td._SHARED_SEED: None,
    }
    return shaped(common, [fetcher(p) for p in positions], num_workers, base_seed, 0, False)


def gather(rank_state: dict[str, Any], ranks: int) -> list[dict[str, Any]]:
    """Every rank's torchdata state (a collective when ``ranks > 1``)."""
    if ranks == 1:
        return [copy.deepcopy(rank_state)]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks
    dist.all_gather_object(out, rank_state)
    return out
