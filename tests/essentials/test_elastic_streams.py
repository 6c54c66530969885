"""A stream's checkpoint on other numbers of workers and ranks (NOTE [ Elastic stream
checkpoints ] in stream_state.py), on MemoryStream; the SQL, lake and Kafka streams have the same
checks in their own test folders, and two-node runs are in test_elastic_resume.py."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfeed as tfd
from tests.resume_helpers import assert_resumes_exactly_once, read

N = 301  # chunks of 16 rows: 19 chunks, the last one short


def _stream(**kw):
    return tfd.MemoryStream({"id": np.arange(N), "x": np.arange(N) * 0.5}, chunk_rows=16, **kw)


def _loader(workers: int, **kw):
    return tfd.DataLoader(_stream(), batch_size=8, num_workers=workers, **kw)


@pytest.mark.parametrize(("a", "b", "c"), [(0, 2, 1), (2, 0, 4), (1, 4, 2), (4, 2, 0), (2, 3, 1)])
def test_memory_stream_resumes_exactly_once_on_any_worker_count(a, b, c):
    assert_resumes_exactly_once(_loader, range(N), [(a, b, c)], cuts=(0, 1, 7, "last"))


def test_a_regrouped_position_says_what_each_split_has_delivered():
    _, state = read(
        _loader, 2, "id", take=3
    )  # worker 0: 16 rows (chunk 0), worker 1: 8 (of chunk 1)
    loader = _loader(0)
    loader.load_state_dict(state)
    position = loader.state_dict()["fetcher_state"]["dataset_iter_state"]["position"]
    assert position == {"rows": 0, "done": {"0": -1, "1": 8}}


def test_the_same_topology_resumes_the_same_batches_as_the_uninterrupted_run():
    whole, _ = read(_loader, 2, "id")
    head, state = read(_loader, 2, "id", take=5)
    tail, _ = read(_loader, 2, "id", state)
    assert head + tail == whole


def test_a_shuffle_buffer_stream_resumes_on_the_same_topology_only():
    def make(workers):
        return tfd.DataLoader(_stream(shuffle_buffer=32), batch_size=8, num_workers=workers)

    _, state = read(make, 2, "id", take=3)
    with pytest.raises(tfd.StateError, match=r"shuffle buffer.*same numbers of DataLoader workers"):
        make(0).load_state_dict(state)
    head, state = read(make, 2, "id", take=3)
    tail, _ = read(make, 2, "id", state)
    assert sorted(head + tail) == list(range(N))


def test_a_checkpoint_taken_between_snapshots_keeps_its_topology():
    def make(workers):
        return _loader(workers, snapshot_every_n_steps=4)

    _, state = read(make, 2, "id", take=3)
    with pytest.raises(tfd.StateError, match=r"snapshot_every_n_steps > 1"):
        make(1).load_state_dict(state)


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (-3, "must be a row count >= 0"),
        ({"rows": 1}, "must be a row count >= 0 or {'rows': int, 'done'"),
        ({"rows": 0, "done": {"x": 1}}, "'done'"),
        ({"rows": 0, "done": {"1": -2}}, "'done'"),
        (10_000, "past the end of its splits"),
    ],
)
def test_a_bad_position_is_a_state_error_naming_it(position, message):
    _, state = read(_loader, 2, "id", take=3)
    worker = state["_snapshot"]["_worker_snapshots"]["worker_1"]
    worker["fetcher_state"]["dataset_iter_state"]["position"] = position
    with pytest.raises(tfd.StateError, match=f"shard 1 of 2.*{message}|{message}.*"):
        _loader(0).load_state_dict(state)


def test_a_job_block_for_other_ranks_is_checked():
    _, state = read(_loader, 2, "id", take=3)
    state["tensorfeed"]["ranks"] = 2
    with pytest.raises(tfd.StateError, match=r"\['other_ranks'\] must be a list of 1 rank states"):
        _loader(2).load_state_dict(state)
    _, one_process = read(_loader, 0, "id", take=3)
    del one_process["tensorfeed"]
    state["tensorfeed"]["stream"]["other_ranks"] = [one_process]
    with pytest.raises(tfd.StateError, match=r"rank 1 is not a state of 2 worker\(s\)"):
        _loader(2).load_state_dict(state)
