"""A worker killed mid-epoch (SIGKILL) with max_worker_restarts=1: the epoch goes on from the last
batch handed out, every row once; with the default 0 the error names the source."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

import tensorfeed as tfd

N = 600


def _kill_a_worker(loader) -> None:
    os.kill(loader._iterator._workers[0].pid, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_a_killed_worker_is_restarted_from_the_last_batch(kind, caplog):
    data = {"id": np.arange(N)}
    ds = tfd.MemoryDataset(data) if kind == "map" else tfd.MemoryStream(data, chunk_rows=10)
    shuffle = True if kind == "map" else None
    loader = tfd.DataLoader(
        ds, batch_size=10, shuffle=shuffle, num_workers=2, max_worker_restarts=1
    )
    caplog.set_level(logging.WARNING, logger="tensorfeed")
    ids: list[int] = []
    for i, batch in enumerate(loader):
        ids += batch["id"].tolist()
        if i == 5:
            _kill_a_worker(loader)
    assert sorted(ids) == list(range(N))
    assert "restart 1 of 1 from the last batch" in caplog.text and "memory" in caplog.text
    assert sorted(i for b in loader for i in b["id"].tolist()) == list(range(N))  # next epoch


def test_without_restarts_the_error_names_the_source():
    ds = tfd.MemoryDataset({"id": np.arange(N)}, name="orders")
    loader = tfd.DataLoader(ds, batch_size=10, num_workers=2)
    with pytest.raises(RuntimeError, match=r"worker reading .*orders.* died.*max_worker_restarts"):
        for i, _ in enumerate(loader):
            if i == 3:
                _kill_a_worker(loader)


def test_max_worker_restarts_is_checked():
    with pytest.raises(tfd.ConfigError, match="max_worker_restarts must be an int >= 0"):
        tfd.DataLoader(tfd.MemoryDataset({"id": np.arange(3)}), max_worker_restarts=-1)
