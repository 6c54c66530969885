"""A stream's checkpoint on other numbers of workers and ranks (NOTE [ Elastic stream
checkpoints ] in stream_state.py), on MemoryStream; the SQL, lake and Kafka streams have the same
checks in their own test folders, and two-node runs are in test_elastic_resume.py."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfeed as tfd
from tensorfeed.stream_shuffle import split_order
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


def _shuffled(workers: int, buffer: int = 32, seed: int = 0):
    return tfd.DataLoader(
        _stream(shuffle_buffer=buffer, seed=seed), batch_size=8, num_workers=workers
    )


@pytest.mark.parametrize(("a", "b", "c"), [(2, 0, 4), (0, 3, 1), (4, 2, 0), (1, 1, 2)])
def test_a_shuffle_buffer_stream_resumes_exactly_once_on_any_worker_count(a, b, c):
    """NOTE [ A shuffle buffer that regroups ]: chained hops, cut before any batch, mid-split,
    mid-drain and right after the last batch."""
    assert_resumes_exactly_once(_shuffled, range(N), [(a, b, c)], cuts=(0, 1, 7, 30, "last"))


def test_a_shuffle_buffer_resumes_the_same_batches_on_its_own_topology():
    whole, _ = read(_shuffled, 2, "id")
    head, state = read(_shuffled, 2, "id", take=5)
    tail, _ = read(_shuffled, 2, "id", state)
    assert head + tail == whole


def test_a_regrouped_shuffle_position_names_the_rows_done_per_split():
    """What a shard handed out is a prefix of each split's (seed, epoch, split) order, so the
    regrouped position is rows per split, found without reading the data."""
    head, state = read(lambda w: _shuffled(w, buffer=20), 2, "id", take=3)  # 24 rows
    loader = _shuffled(0, buffer=20)
    loader.load_state_dict(state)
    done = loader.state_dict()["fetcher_state"]["dataset_iter_state"]["position"]["done"]
    per_split = {int(c): (16 if n == -1 else n) for c, n in done.items()}
    assert sum(per_split.values()) == len(head) == 24
    for c in range(19):
        rows = min(16, N - 16 * c)
        order = split_order(0, 0, c, rows) + 16 * c
        assert set(order[: per_split.get(c, 0)].tolist()) == {i for i in head if i // 16 == c}


def test_a_shuffle_buffer_mixes_splits_and_shuffles_within_them():
    whole, _ = read(lambda w: _shuffled(w, buffer=64), 0, "id")
    assert sorted(whole) == list(range(N)) and whole != sorted(whole)
    # rows of one 16-row chunk are spread, and a window of 32 rows holds several chunks
    first_window = {i // 16 for i in whole[:32]}
    assert len(first_window) >= 4
    chunk0 = [whole.index(i) for i in range(16)]
    assert chunk0 != sorted(chunk0)
    other, _ = read(lambda w: _shuffled(w, buffer=64, seed=1), 0, "id")
    assert other != whole  # the seed decides the order
    again, _ = read(lambda w: _shuffled(w, buffer=64), 0, "id")
    assert again == whole


def test_a_split_is_permuted_the_same_whatever_the_topology():
    """The order of each split's rows depends on (seed, epoch, split) only."""

    def split_order(rows):
        return {c: [i for i in rows if i // 16 == c] for c in range(19)}

    one, _ = read(_shuffled, 0, "id")
    three, _ = read(_shuffled, 3, "id")
    assert split_order(one) == split_order(three)


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
