"""A Hypothesis state machine for elastic resume: ranks read batches at their own pace, the job
checkpoints and comes back on another number of ranks and workers, again and again, over
MemoryDataset and SQLite. Invariant: no row is delivered twice beyond the padding each segment
adds (ddp="pad"), and by the end of the epoch every row was delivered."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tensorfeed as tfd
from tensorfeed import loader_state
from tensorfeed.sampling import EpochSampler

N = 77
BS = 5


class ElasticJob(RuleBasedStateMachine):
    """R loaders, one per (simulated) rank, each with an explicitly ranked EpochSampler."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[int] = []
        self.pad_budget = 0
        self.loaders: list[tfd.DataLoader] = []
        self.iters: list = []
        self.done: list[bool] = []

    def _start(self, ranks: int, workers: int, state: dict | None, remaining: int = N) -> None:
        self.loaders, self.iters, self.done = [], [], []
        for r in range(ranks):
            sampler = EpochSampler(N, shuffle=True, seed=9, rank=r, world_size=ranks)
            loader = tfd.DataLoader(self.ds, batch_size=BS, sampler=sampler, num_workers=workers)
            if state is not None:
                loader.load_state_dict(json.loads(json.dumps(state)))
            self.loaders.append(loader)
            self.iters.append(iter(loader))
            self.done.append(False)
        self.pad_budget += -remaining % ranks  # ddp="pad" repeats this many rows in the segment

    @initialize(
        source=st.sampled_from(["memory", "sqlite"]),
        ranks=st.integers(1, 4),
        workers=st.sampled_from([0, 0, 0, 1]),
    )
    def start(self, source: str, ranks: int, workers: int) -> None:
        if source == "memory":
            self.ds = tfd.MemoryDataset({"id": np.arange(N)})
        else:
            self.ds = tfd.SQLDataset(_sqlite_url(), "t", key="id")
        self._start(ranks, workers, None)

    @rule(rank=st.integers(0, 3), batches=st.integers(1, 4))
    def read(self, rank: int, batches: int) -> None:
        r = rank % len(self.iters)
        for _ in range(batches):
            if self.done[r]:
                return
            try:
                self.delivered += [int(i) for i in next(self.iters[r])["id"]]
            except StopIteration:
                self.done[r] = True

    @rule(ranks=st.integers(1, 4), workers=st.sampled_from([0, 0, 0, 1]))
    def checkpoint_and_resume_elsewhere(self, ranks: int, workers: int) -> None:
        states = [loader.state_dict() for loader in self.loaders]
        sampler = self.loaders[0]._epoch_sampler
        job_sampler = sampler.merge_states([loader_state.sampler_state(s) for s in states])
        job = loader_state.for_workers(states[0], job_sampler, 0, 0)
        job["tensorfeed"] = states[0]["tensorfeed"]
        self.iters = []
        done = job_sampler["done"]
        self._start(ranks, workers, job, N - done["prefix"] - len(done["extra"]))

    @invariant()
    def no_row_twice_beyond_padding(self) -> None:
        repeats = len(self.delivered) - len(set(self.delivered))
        assert repeats <= self.pad_budget, (repeats, self.pad_budget)

    @precondition(lambda self: bool(self.iters))
    @rule()
    def finish_the_epoch(self) -> None:
        for r, it in enumerate(self.iters):
            if not self.done[r]:
                self.delivered += [int(i) for b in it for i in b["id"]]
                self.done[r] = True
        assert sorted(set(self.delivered)) == list(range(N))
        self.delivered, self.pad_budget = [], 0
        self._start(len(self.loaders), 0, None)  # a fresh epoch 1 of the same job


_DB: list[str] = []


def teardown_module() -> None:
    for path in _DB:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _sqlite_url() -> str:
    if not _DB:
        path = tempfile.mkdtemp(prefix="tfd-hyp-") + "/t.db"
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(N)])
        con.commit()
        con.close()
        _DB.append(path)
    return f"sqlite:///{_DB[0]}"


ElasticJob.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestElasticJob = ElasticJob.TestCase
