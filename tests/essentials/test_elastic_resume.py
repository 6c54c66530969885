"""Elastic resume of map-style sources: a checkpoint taken with R ranks x W workers loads into R'
ranks x W' workers and the resumed job delivers exactly the rest of the epoch, each row once;
later epochs are those of a fresh run. Bad states get a StateError naming the field."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorfeed as tfd
from tensorfeed.sampling import EpochSampler

N = 103
BS = 8


def _memory():
    return tfd.MemoryDataset({"id": np.arange(N), "x": np.arange(N) * 0.25})


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("elastic") / "rows.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, i * 0.25) for i in range(N)])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _source(kind: str, db: str):
    if kind == "memory":
        return _memory()
    if kind == "sqlite":
        return tfd.SQLDataset(db, "t", key="id")
    if kind == "split":
        return tfd.split(_memory(), {"train": 0.8, "val": 0.2}, key="id")["train"]
    raise AssertionError(kind)


def _loader(ds, workers: int, sampler=None):
    if sampler is not None:
        return tfd.DataLoader(ds, batch_size=BS, sampler=sampler, num_workers=workers)
    return tfd.DataLoader(ds, batch_size=BS, shuffle=True, seed=5, num_workers=workers)


def _ids(batches) -> list[int]:
    return [i for b in batches for i in b["id"].tolist()]


def _cut_and_resume(make, w_from: int, w_to: int, cut: int):
    """(delivered before the cut, after it, a fresh run's epoch 0 and 1, resumed epoch 1)."""
    fresh = make(0)
    epoch0, epoch1 = _ids(fresh), _ids(fresh)
    first = make(w_from)
    it = iter(first)
    head = [i for _ in range(cut) for i in next(it)["id"].tolist()]
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint file holds
    del it
    second = make(w_to)
    second.load_state_dict(state)
    return head, _ids(second), epoch0, epoch1, _ids(second)


@pytest.mark.parametrize(
    ("kind", "w_from", "w_to", "cut"),
    [
        ("memory", 2, 0, 5),
        ("memory", 0, 2, 5),
        ("memory", 1, 2, 0),  # before any worker handed out a batch
        ("memory", 2, 1, 13),  # right after the last batch
        ("sqlite", 2, 0, 7),
        ("sqlite", 0, 2, 3),
        ("split", 2, 0, 4),
    ],
)
def test_resume_on_another_worker_count_is_exactly_the_rest(kind, w_from, w_to, cut, sqlite_db):
    def make(w):
        return _loader(_source(kind, sqlite_db), w)

    head, tail, epoch0, epoch1, resumed_epoch1 = _cut_and_resume(make, w_from, w_to, cut)
    assert head + tail == epoch0  # the same order too: one topology of ranks
    assert sorted(head + tail) == sorted(epoch0) and len(set(head + tail)) == len(epoch0)
    assert resumed_epoch1 == epoch1


@pytest.mark.parametrize(("w_first", "w_second"), [(0, 0), (2, 2), (2, 0)])
def test_a_checkpoint_right_after_a_resume_keeps_the_position(w_first, w_second):
    def make(w):
        return _loader(_memory(), w)

    epoch0 = _ids(make(0))
    first = make(w_first)
    it = iter(first)
    head = [i for _ in range(4) for i in next(it)["id"].tolist()]
    state = json.loads(json.dumps(first.state_dict()))
    del it
    second = make(w_second)
    second.load_state_dict(state)
    it2 = iter(second)  # started, nothing handed out since the load
    again = json.loads(json.dumps(second.state_dict()))
    del it2
    third = make(0)
    third.load_state_dict(again)
    assert head + _ids(third) == epoch0


@pytest.mark.parametrize("sampler_kind", ["weighted", "balanced"])
def test_drawing_samplers_resume_on_another_worker_count(sampler_kind):
    ds = tfd.MemoryDataset({"id": np.arange(N), "y": np.arange(N) % 3})

    def make(w):
        if sampler_kind == "weighted":
            s = tfd.WeightedSampler(np.linspace(1, 2, N), replacement=False, seed=2)
        else:
            s = tfd.BalancedSampler("y", dataset=ds, seed=2)
        return _loader(ds, w, sampler=s)

    head, tail, epoch0, epoch1, resumed_epoch1 = _cut_and_resume(make, 2, 0, 6)
    assert head + tail == epoch0 and resumed_epoch1 == epoch1


def _rank_samplers(n, world, policy="pad", seed=3):
    out = []
    for r in range(world):
        s = EpochSampler(n, shuffle=True, seed=seed, rank=r, world_size=world, ddp=policy)
        s.set_epoch(4)
        out.append(s)
    return out


def _take(samplers, counts):
    """Each rank's first ``counts[r]`` indices of its current segment; their states."""
    taken, states = [], []
    for s, k in zip(samplers, counts):
        it = iter(s)
        taken += [next(it) for _ in range(k)]
        states.append(s.state_dict())
    return taken, states


@pytest.mark.parametrize(
    ("world", "counts", "new_world"),
    [
        (4, [10, 10, 10, 10], 2),
        (4, [10, 11, 12, 10], 1),  # ranks drifted apart
        (2, [20, 23], 4),
        (1, [37], 3),
        (4, [0, 0, 0, 0], 2),  # before anything was delivered
    ],
)
@pytest.mark.parametrize("n", [96, 103])
def test_rank_states_merge_and_resume_on_any_rank_count(world, counts, new_world, n):
    samplers = _rank_samplers(n, world)
    taken, states = _take(samplers, counts)
    job = samplers[0].merge_states(states)
    assert len(json.dumps(job)) < 400  # the size does not grow with rows delivered
    rest: list[int] = []
    resumed = _rank_samplers(n, new_world)
    for s in resumed:
        s.load_state_dict(job)
        rest += list(s)
    # every row exactly once, plus the padding the resumed segment adds (repeats of early rows)
    assert len(set(taken)) == len(taken)
    counts_by_row = np.bincount(np.asarray(taken + rest), minlength=n)
    assert (counts_by_row >= 1).all()
    assert counts_by_row.sum() - n == resumed[0].uneven
    # a second checkpoint inside the resumed segment composes with the first
    again = _rank_samplers(n, new_world)
    for s in again:
        s.load_state_dict(job)
    taken2, states2 = _take(again, [3] * new_world)
    final = _rank_samplers(n, 1)[0]
    final.load_state_dict(again[0].merge_states(states2))
    assert sorted(taken + taken2 + list(final)) == list(range(n))


def test_same_topology_in_step_continues_like_the_uninterrupted_epoch():
    full = [list(s) for s in _rank_samplers(103, 4)]
    samplers = _rank_samplers(103, 4)
    _, states = _take(samplers, [9] * 4)
    job = samplers[0].merge_states(states)
    for r, s in enumerate(_rank_samplers(103, 4)):
        s.load_state_dict(job)
        assert full[r][:9] + list(s) == full[r]


def test_a_rank_state_needs_the_same_rank_count():
    samplers = _rank_samplers(50, 2)
    _, states = _take(samplers, [3, 3])
    other = _rank_samplers(50, 4)[0]
    with pytest.raises(tfd.StateError, match=r"rank 0 of 2 ranks.*load the job.s state"):
        other.load_state_dict(states[0])


def _state(workers=0, cut=3):
    loader = _loader(_memory(), workers)
    it = iter(loader)
    for _ in range(cut):
        next(it)
    return loader.state_dict()


def _sampler_state(state):
    snap = state.get("_snapshot")
    return (snap["_main_snapshot"] if snap else state)["_index_sampler_state"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: _sampler_state(s)["done"].update(prefix=-32),
            r"\['prefix'\] must be an int in \[0, 103\], got -32",
        ),
        (
            lambda s: _sampler_state(s)["done"].update(prefix=10**9),
            r"\['prefix'\] must be an int in \[0, 103\]",
        ),
        (
            lambda s: _sampler_state(s)["done"].update(extra=[5]),
            r"\['extra'\] holds positions outside",
        ),
        (lambda s: _sampler_state(s)["done"].update(prefix="24"), r"\['prefix'\] must be an int"),
        (
            lambda s: _sampler_state(s).pop("done"),
            r"neither 'done' \(a job's state\) nor 'yielded'",
        ),
        (
            lambda s: _sampler_state(s).update(epoch=-1),
            r"sampler state\['epoch'\] must be >= 0, got -1",
        ),
        (lambda s: _sampler_state(s).update(seed=6), r"seed=6 in the state, 5 here"),
        (lambda s: _sampler_state(s).update(num_items=50), r"num_items=50 in the state, 103 here"),
        (
            lambda s: s["tensorfeed"].update(epoch="0"),
            r"\['tensorfeed'\]\['epoch'\] must be an int",
        ),
        (
            lambda s: s["tensorfeed"].update(epoch=2),
            r"sampler state is of epoch 0, the loader's of epoch 2",
        ),
        (lambda s: s["tensorfeed"].pop("dataset"), r"\['dataset'\] must be a str"),
        (lambda s: s.pop("tensorfeed"), r"not made by tfd.DataLoader.state_dict"),
        (lambda s: s.pop("_num_yielded", None) or s.pop("_snapshot", None), "neither a snapshot"),
    ],
)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_state_is_refused_at_load_naming_the_field(edit, message, workers):
    state = copy.deepcopy(_state(workers))
    edit(state)
    for target_workers in (0, 3):
        with pytest.raises(tfd.StateError, match=message):
            _loader(_memory(), target_workers).load_state_dict(state)


# -- a real job: torchrun ranks, two nodes ---------------------------------------------------------
SCRIPT = Path(__file__).with_name("ddp_resume_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _run(
    out: Path,
    workers: int,
    mode: str,
    *extra: str,
    nodes: int = 0,
    procs: int = 0,
    source: str = "memory",
) -> None:
    """The script alone (procs=0), on one torchrun, or on ``nodes`` torchrun invocations of
    ``procs`` processes each, started together as the nodes of one job on 127.0.0.1."""
    args = [str(SCRIPT), str(out), str(workers), mode, *extra]
    if procs == 0:
        cmds = [[sys.executable, *args]]
    elif nodes == 0:
        cmds = [
            [
                *_torchrun(),
                f"--nproc_per_node={procs}",
                "--rdzv-backend=c10d",
                "--rdzv-endpoint=127.0.0.1:0",
                *args,
            ]
        ]
    else:
        cmds = node_commands(args, nodes, procs)
    run_together(cmds, {**os.environ, "TFD_RESUME_SOURCE": source})


def node_commands(args: list[str], nodes: int, procs: int) -> list[list[str]]:
    """``nodes`` torchrun invocations of ``procs`` processes each: one job on 127.0.0.1."""
    port = _free_port()
    return [
        [
            *_torchrun(),
            f"--nnodes={nodes}",
            f"--node_rank={r}",
            f"--nproc_per_node={procs}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            *args,
        ]
        for r in range(nodes)
    ]


def run_together(cmds: list[list[str]], env: dict[str, str] | None = None) -> None:
    """Start every command, then wait for all; each must exit 0 (its stderr tail if not)."""
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for c in cmds
    ]
    for p in running:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]


def _delivered(out: Path, mode: str, ranks: int, epoch: str) -> list[list[int]]:
    return [json.loads((out / f"{mode}-rank{r}.json").read_text())[epoch] for r in range(ranks)]


def _fresh_epoch1(rank: int, world: int) -> list[int]:
    s = EpochSampler(96, shuffle=True, seed=11, rank=rank, world_size=world)
    s.set_epoch(1)
    return list(s)


@pytest.mark.slow
def test_two_node_four_rank_checkpoint_resumes_on_two_ranks_and_on_one(tmp_path):
    _run(tmp_path, 1, "take", "3", nodes=2, procs=2)  # ranks read 3, 4, 5 and 6 batches
    head = [i for ids in _delivered(tmp_path, "take", 4, "epoch0") for i in ids]
    assert len(head) == 4 * (3 + 4 + 5 + 6) and len(set(head)) == len(head)
    state = (tmp_path / "state.json").read_text()
    for ranks in (2, 1):
        (tmp_path / "state.json").write_text(state)
        _run(tmp_path, 1 if ranks == 2 else 2, "resume", procs=ranks if ranks > 1 else 0)
        rest = [i for ids in _delivered(tmp_path, "resume", ranks, "epoch0") for i in ids]
        assert sorted(head + rest) == list(range(96)), ranks  # each row once across all ranks
        for r, ids in enumerate(_delivered(tmp_path, "resume", ranks, "epoch1")):
            assert ids == _fresh_epoch1(r, ranks)


@pytest.mark.slow
def test_one_process_checkpoint_resumes_on_two_ranks(tmp_path):
    _run(tmp_path, 2, "take", "5")
    head = _delivered(tmp_path, "take", 1, "epoch0")[0]
    _run(tmp_path, 0, "resume", procs=2)
    rest = [i for ids in _delivered(tmp_path, "resume", 2, "epoch0") for i in ids]
    assert sorted(head + rest) == list(range(96))
    for r, ids in enumerate(_delivered(tmp_path, "resume", 2, "epoch1")):
        assert ids == _fresh_epoch1(r, 2)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["stream", "sqlite"])
def test_two_node_stream_checkpoint_resumes_on_two_ranks_and_on_one(tmp_path, source):
    """A stream's job checkpoint from 2 nodes x 2 ranks resumes on 2 ranks and on 1 process
    with 2 workers: each of the 96 rows once in epoch 0, and all of them in epoch 1."""
    if source == "sqlite":
        db = tmp_path / "rows.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL)")
            conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i * 0.5) for i in range(96)])
        source = f"sqlite:{db}"
    _run(tmp_path, 1, "take", "3", nodes=2, procs=2, source=source)
    head = [i for ids in _delivered(tmp_path, "take", 4, "epoch0") for i in ids]
    assert len(head) == 4 * 3 * 4 and len(set(head)) == len(head)
    state = (tmp_path / "state.json").read_text()
    for ranks in (2, 1):
        (tmp_path / "state.json").write_text(state)
        _run(
            tmp_path,
            1 if ranks == 2 else 2,
            "resume",
            procs=ranks if ranks > 1 else 0,
            source=source,
        )
        rest = [i for ids in _delivered(tmp_path, "resume", ranks, "epoch0") for i in ids]
        assert sorted(head + rest) == list(range(96)), ranks  # each row once across all ranks
        later = [i for ids in _delivered(tmp_path, "resume", ranks, "epoch1") for i in ids]
        assert sorted(later) == list(range(96)), ranks
