"""Reproducible whatever the worker count: seeds, epochs and each worker's generators."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, get_worker_info

import tensorfeed as tfd
from tensorfeed.sampling import shard_seed

from .conftest import ids, make_data


def test_seed_everything_seeds_python_numpy_and_torch():
    tfd.seed_everything(123)
    first = (random.random(), np.random.random(), torch.rand(2).tolist())
    tfd.seed_everything(123)
    assert (random.random(), np.random.random(), torch.rand(2).tolist()) == first
    tfd.seed_everything(124)
    assert random.random() != first[0]
    assert tfd.seed_everything(0) is None
    assert not torch.are_deterministic_algorithms_enabled()  # no other global side effect


def test_same_batches_for_every_worker_count_and_across_runs():
    ds = tfd.MemoryDataset(make_data(150))
    runs = {
        w: ids(tfd.DataLoader(ds, batch_size=16, shuffle=True, num_workers=w, seed=11))
        for w in (0, 1, 2, 4)
    }
    assert runs[0] == runs[1] == runs[2] == runs[4]
    assert runs[0] == ids(tfd.DataLoader(ds, batch_size=16, shuffle=True, seed=11))
    assert runs[0] != ids(tfd.DataLoader(ds, batch_size=16, shuffle=True, seed=12))
    flat = sorted(i for b in runs[0] for i in b)
    assert flat == sorted(ds.column("id").tolist())


def test_each_epoch_has_a_new_order_and_set_epoch_replays_one():
    ds = tfd.MemoryDataset(make_data(80))
    loader = tfd.DataLoader(ds, batch_size=10, shuffle=True, seed=3)
    e0, e1, e2 = ids(loader), ids(loader), ids(loader)
    assert e0 != e1 != e2 and loader.epoch == 2
    loader.set_epoch(1)
    assert ids(loader) == e1
    other = tfd.DataLoader(ds, batch_size=10, shuffle=True, seed=3, num_workers=2)
    other.set_epoch(2)
    assert ids(other) == e2


class _WorkerProbe(Dataset):
    """Reports, from inside __getitems__, which worker ran it and the first numbers of its
    random, numpy and torch generators (the first call in each worker only)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reported = False

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        info = get_worker_info()
        first = not self.reported
        self.reported = True
        probe = (
            (random.random(), float(np.random.random()), float(torch.rand(())))
            if first
            else (-1.0, -1.0, -1.0)
        )
        return [
            {"worker": info.id if info else -1, "py": probe[0], "np": probe[1], "torch": probe[2]}
            for _ in indices
        ]


def _expected(seed: int) -> tuple[float, float, float]:
    rs = random.Random(seed)
    np_rs = np.random.RandomState(seed % 2**32)
    g = torch.Generator().manual_seed(seed)
    return rs.random(), float(np_rs.random_sample()), float(torch.rand((), generator=g))


@pytest.mark.parametrize("epoch", [0, 1])
def test_every_worker_is_seeded_distinctly_from_seed_epoch_rank_worker(epoch):
    loader = tfd.DataLoader(_WorkerProbe(8), batch_size=2, num_workers=2, seed=21)
    loader.set_epoch(epoch)
    seen = {}
    for b in loader:
        for w, p, n, t in zip(
            b["worker"].tolist(), b["py"].tolist(), b["np"].tolist(), b["torch"].tolist()
        ):
            if p >= 0:
                seen[w] = (p, n, t)
    assert sorted(seen) == [0, 1]
    for w, got in seen.items():
        assert got == pytest.approx(_expected(shard_seed(21, epoch, 0, w)), abs=1e-7)
    assert seen[0] != seen[1]
    assert len({v for vals in seen.values() for v in vals}) == 6  # all distinct


def test_stream_batches_are_the_same_across_runs():
    data = make_data(200)

    def run(workers):
        stream = tfd.MemoryStream(data, shuffle_buffer=32, seed=4, chunk_rows=16)
        return ids(tfd.DataLoader(stream, batch_size=10, num_workers=workers))

    assert run(2) == run(2)
    assert sorted(i for b in run(2) for i in b) == sorted(data["id"].tolist())
