"""The shape of a ``tfd.DataLoader`` checkpoint: checked field by field, and moved between worker
counts for map-style sources.

A state dict is torchdata's (``StatefulDataLoader.state_dict()``) plus a ``"tensorfeed"`` block.
torchdata's part has one shape with ``num_workers=0`` (the sampler's state and counters at the
top level) and another with workers (a ``_snapshot`` of the main process and one entry per
worker), and it loads only into a loader with the same worker count. For a map-style source the
workers hold nothing (what is done is the sampler's, NOTE [ Elastic map-style checkpoints ] in
``epoch_progress.py``), so :func:`for_workers` rebuilds either shape for any worker count. A
stream's position lives in its workers (one shard each): ``stream_state.py`` moves it (NOTE
[ Elastic stream checkpoints ]); :func:`check_stream_topology` covers states without a job block.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torchdata.stateful_dataloader import stateful_dataloader as _td
from torchdata.stateful_dataloader.worker import _DATASET_STATE, _FETCHER_STATE, _WORKER_ID

from .errors import SourceChangedError, StateError

# torchdata's own key names, so a rename there fails here loudly instead of writing stale keys
_Multi = _td._StatefulMultiProcessingDataLoaderIter
_Single = _td._StatefulSingleProcessDataLoaderIter
_SNAPSHOT, _MAIN, _WORKERS = _Multi._SNAPSHOT, _Multi._MAIN_SNAPSHOT, _Multi._WORKER_SNAPSHOTS
_SAMPLER = _td._INDEX_SAMPLER_STATE
_NUM_YIELDED = _Single._NUM_YIELDED


def _int(block: dict[str, Any], key: str, where: str, lo: int | None = 0) -> int:
    v = block.get(key)
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise StateError(f"{where}[{key!r}] must be an int, got {v!r}")
    if lo is not None and v < lo:
        raise StateError(f"{where}[{key!r}] must be >= {lo}, got {v}")
    return int(v)


def check_block(ours: Any) -> dict[str, Any]:
    """The ``"tensorfeed"`` block of a state dict, its fields checked."""
    if not isinstance(ours, dict):
        raise StateError("this state dict was not made by tfd.DataLoader.state_dict()")
    where = "state_dict['tensorfeed']"
    _int(ours, "epoch", where)
    _int(ours, "seed", where, lo=None)
    if not isinstance(ours.get("dataset"), str):
        raise StateError(f"{where}['dataset'] must be a str, got {ours.get('dataset')!r}")
    if "ranks" in ours:
        _int(ours, "ranks", where, lo=1)
    return ours


def workers_of(state: dict[str, Any]) -> int:
    """The worker count a torchdata state was taken with."""
    snap = state.get(_SNAPSHOT)
    if snap is None:
        if _NUM_YIELDED not in state:
            raise StateError("the state dict holds neither a snapshot nor a position")
        return 0
    if not isinstance(snap, dict) or not isinstance(snap.get(_MAIN), dict):
        raise StateError("state_dict['_snapshot'] is not a torchdata snapshot")
    return _int(snap[_MAIN], _Multi._NUM_WORKERS, "state_dict['_snapshot']['_main_snapshot']", 1)


def sampler_state(state: dict[str, Any]) -> Any:
    """The index sampler's state inside a torchdata state (either shape)."""
    snap = state.get(_SNAPSHOT)
    return state.get(_SAMPLER) if snap is None else snap[_MAIN].get(_SAMPLER)


def steps_since_snapshot(state: dict[str, Any]) -> int:
    """Batches handed out after the snapshot the state holds (0 without workers)."""
    if state.get(_SNAPSHOT) is None:
        return 0
    return _int(state, _Multi._STEPS_SINCE_SNAPSHOT, "state_dict")


def for_workers(
    state: dict[str, Any], sampler: dict[str, Any], num_workers: int, base_seed: int
) -> dict[str, Any]:
    """torchdata's state for a map-style loader with ``num_workers`` workers, resuming the
    index sampler at ``sampler`` (exact: nothing to fast-forward)."""
    snap = state.get(_SNAPSHOT)
    main = state if snap is None else snap[_MAIN]
    steps = (
        int(state.get(_NUM_YIELDED, 0))
        if snap is None
        else int(snap.get(_Multi._SNAPSHOT_STEP, 0)) + steps_since_snapshot(state)
    )
    finished = bool(state.get(_td._ITERATOR_FINISHED, False))
    common = {
        _SAMPLER: copy.deepcopy(sampler),
        _td._SAMPLER_ITER_STATE: None,
        _td._SAMPLER_ITER_YIELDED: steps,
        _td._ITERABLEDATASET_LEN_CALLED: None,
        _td._SHARED_SEED: main.get(_td._SHARED_SEED),
    }
    base = main.get(_Multi._BASE_SEED, base_seed)
    return shaped(common, [None] * max(num_workers, 1), num_workers, base, steps, finished)


def shaped(
    common: dict[str, Any],
    fetchers: list[Any],
    num_workers: int,
    base_seed: int,
    steps: int,
    finished: bool,
) -> dict[str, Any]:
    """torchdata's state of one shape or the other for ``num_workers``: the main process's
    ``common`` fields, and ``fetchers[i]`` as the fetcher state of worker ``i`` (the only one
    without workers), the next batch due from worker 0."""
    if num_workers == 0:
        (fetcher,) = fetchers
        return {
            **common,
            _NUM_YIELDED: steps,
            _FETCHER_STATE: fetcher,
            _DATASET_STATE: None,
            _td._ITERATOR_FINISHED: finished,
        }
    return {
        _SNAPSHOT: {
            _Multi._SNAPSHOT_STEP: steps,
            _Multi._LAST_YIELDED_WORKER_ID: num_workers - 1,  # the next batch goes to worker 0
            _MAIN: {**common, _Multi._NUM_WORKERS: num_workers, _Multi._BASE_SEED: base_seed},
            _WORKERS: {
                f"worker_{i}": {_WORKER_ID: i, _DATASET_STATE: None, _FETCHER_STATE: f}
                for i, f in enumerate(fetchers)
            },
        },
        _Multi._STEPS_SINCE_SNAPSHOT: 0,
        _td._ITERATOR_FINISHED: finished,
    }


def check_stream_topology(
    state: dict[str, Any], ours: dict[str, Any], num_workers: int, ranks: int, source: str
) -> None:
    """A stream's checkpoint loads only into the worker and rank counts it was taken with."""
    taken_workers = workers_of(state)
    taken_ranks = int(ours.get("ranks", ranks))
    if (taken_workers, taken_ranks) != (num_workers, ranks):
        raise StateError(
            f"this checkpoint of {source} was taken with {taken_workers} worker(s) on "
            f"{taken_ranks} rank(s); a stream resumes on the same topology only (this loader has "
            f"{num_workers} worker(s) on {ranks} rank(s)): each worker's position is its own "
            "shard's"
        )


def raise_if_changed(source: Any, old: Any) -> None:
    """A SourceChangedError naming what changed, if ``source`` can tell from the manifest ``old``
    its checkpoint kept (``_change_manifest`` / ``_describe_change``: SQL keys, lake files)."""
    describe = getattr(source, "_describe_change", None)
    what = describe(old) if callable(describe) and old is not None else None
    if what:
        raise SourceChangedError(
            f"{source.describe()} changed since this checkpoint: {what}. Resuming its epoch "
            "would deliver rows twice or not at all; start a new epoch instead (a new loader "
            "without load_state_dict, or set_epoch)"
        )
