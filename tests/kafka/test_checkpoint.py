"""Exactly once per bounded epoch (0 and 2 workers, two DDP ranks) and offsets as training state:
resume == uninterrupted, also after SIGKILL, also with a new group id."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tensorfeed as tfd
from tests.resume_helpers import assert_resumes_exactly_once, read

from .kafka_helpers import by_partition, pairs, telemetry

HERE = Path(__file__).parent


def full_run(cluster, name: str) -> dict[int, list[int]]:
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10)
    return by_partition([pr for cb in s.iter_batches() for pr in pairs(cb.table.to_pydict())])


def read_all(loader) -> list[tuple[int, int]]:
    return [pr for b in loader for pr in pairs(b)]


@pytest.mark.parametrize("workers", [0, 2])
def test_exactly_once_per_epoch(cluster, topic, workers):
    name = topic(300, partitions=4)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10)
    loader = tfd.DataLoader(s, batch_size=32, num_workers=workers, persistent_workers=workers > 0)
    for _epoch in range(2):  # each bounded epoch replays the topic from `start`
        seen = read_all(loader)
        assert len(seen) == 300 == len(set(seen))
        parts = by_partition(seen)
        assert all(offs == list(range(len(offs))) for offs in parts.values())  # in order
    assert s.counts(loader) == {"delivered": 300, "skipped": 0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_exactly_once_across_two_ddp_ranks(cluster, topic, tmp_path):
    name = topic(240, partitions=6)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(HERE / "ddp_reader.py"),
        cluster.bootstrap,
        name,
        str(tmp_path),
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    sets = [{tuple(p) for p in r["pairs"]} for r in ranks]
    assert not sets[0] & sets[1]
    assert len(sets[0]) + len(sets[1]) == 240
    assert {p for p, _ in sets[0]}.isdisjoint({p for p, _ in sets[1]})  # partitions, not rows
    assert sum(len(r["pairs"]) for r in ranks) == 240  # no duplicates within a rank either
    # each rank's checkpoint holds exactly its own partitions, at their ends
    offsets = {(p, o) for r in ranks for _, p, o in r["offsets"]}
    ends = {}
    for p, o in sets[0] | sets[1]:
        ends[p] = max(ends.get(p, 0), o + 1)
    assert {(p, o) for p, o in offsets if o} == set(ends.items())


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_uninterrupted_with_new_group(cluster, topic, workers):
    name = topic(260, partitions=4)
    expect = full_run(cluster, name)
    s = tfd.KafkaStream(cluster.bootstrap, name, group_id="run-a", timeout=10)
    loader = tfd.DataLoader(s, batch_size=16, num_workers=workers)
    before: list[tuple[int, int]] = []
    for i, b in enumerate(loader):
        before += pairs(b)
        if i == 5:
            state = loader.state_dict()
            break
    del loader
    # the state records, per partition, the offset after the last row handed out (not prefetched)
    handed = {}
    for p, o in before:
        handed[p] = max(handed.get(p, 0), o + 1)
    offsets = s.offsets(state)
    assert {p: o for (_, p), o in offsets.items() if p in handed} == handed
    assert all(o == 0 for (_, p), o in offsets.items() if p not in handed)
    # more messages arrive before the resume: the resumed epoch still ends where it would have
    cluster.produce(name, [telemetry(1000 + i) for i in range(20)])

    s2 = tfd.KafkaStream(cluster.bootstrap, name, group_id="run-b", timeout=10)
    resumed = tfd.DataLoader(s2, batch_size=16, num_workers=workers)
    resumed.load_state_dict(state)
    after = read_all(resumed)
    joined = by_partition(before + after)
    assert joined == expect


@pytest.mark.slow
def test_resume_after_sigkill(cluster, topic, tmp_path):
    name = topic(300, partitions=4)
    expect = full_run(cluster, name)
    state_path, seen_path = tmp_path / "state.pt", tmp_path / "seen.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "kill_reader.py"),
            cluster.bootstrap,
            name,
            str(state_path),
            str(seen_path),
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "SAVED"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = [tuple(p) for p in json.loads(seen_path.read_text())]
    state = torch.load(state_path, weights_only=False)

    s = tfd.KafkaStream(cluster.bootstrap, name, group_id="after-kill", timeout=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = tfd.DataLoader(s, batch_size=10, num_workers=2)
        loader.load_state_dict(state)
        after = read_all(loader)
    assert by_partition(before + after) == expect


def test_state_from_other_stream_is_refused(cluster, topic):
    a, b = topic(20), topic(20)
    la = tfd.DataLoader(tfd.KafkaStream(cluster.bootstrap, a, timeout=5), batch_size=4)
    next(iter(la))
    lb = tfd.DataLoader(tfd.KafkaStream(cluster.bootstrap, b, timeout=5), batch_size=4)
    with pytest.raises(tfd.StateError):
        lb.load_state_dict(la.state_dict())


def test_state_with_other_worker_count_is_refused(cluster, topic):
    name = topic(80, partitions=4)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5)
    it = iter(tfd.DataLoader(s, batch_size=8))
    next(it)
    from tensorfeed.sampling import World

    pos = s._advance({}, next(s.iter_batches()).table)
    with pytest.raises(tfd.StateError, match="different number"):
        list(s._iter_tables(World(0, 1, 1, 2), 0, pos))


@pytest.mark.parametrize("hop", [(2, 0, 3), (0, 4, 1), (3, 2, 0)])
def test_a_checkpoint_resumes_exactly_once_on_another_worker_count(cluster, topic, hop):
    """Partitions are the fixed splits: the offsets of all shards merge and split anew."""
    name = topic(300, partitions=5)
    expect = [pr for prs in full_run(cluster, name).items() for pr in _pairs_of(*prs)]

    def make(workers):
        s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10)
        return tfd.DataLoader(s, batch_size=16, num_workers=workers)

    assert_resumes_exactly_once(make, expect, [hop], cuts=(0, 3), key=pairs)


def _pairs_of(partition: int, offsets: list[int]) -> list[tuple[int, int]]:
    return [(partition, o) for o in offsets]


def test_a_regrouped_epoch_keeps_its_end_and_its_counts(cluster, topic):
    """Messages produced after the checkpoint stay out of the resumed epoch on a new worker
    count, and counts() of the next checkpoint covers every shard once."""
    name = topic(200, partitions=4)

    def make(workers):
        s = tfd.KafkaStream(cluster.bootstrap, name, timeout=10, end="now")
        return tfd.DataLoader(s, batch_size=10, num_workers=workers)

    head, state = read(make, 2, pairs, take=5)  # worker 1 has handed out 2 batches, worker 0 3
    cluster.produce(name, [telemetry(i) for i in range(30)], partition=[i % 4 for i in range(30)])
    mid, state = read(make, 3, pairs, state, take=4)
    stream = tfd.KafkaStream(cluster.bootstrap, name, timeout=10)
    assert stream.counts(state) == {"delivered": 90, "skipped": 0}
    tail, _ = read(make, 0, pairs, state)
    got = head + mid + tail
    assert len(got) == 200 and len(set(got)) == 200  # the 30 new messages are not in it


@pytest.mark.parametrize("workers", [0, 2])
def test_a_recreated_topic_is_named_when_the_checkpoint_is_loaded(cluster, topic, workers):
    """The checkpoint's offsets no longer exist: the topic was deleted and recreated (here, on
    another cluster under the same name) and holds fewer messages than were delivered."""
    from tensorfeed.sources._kafka_mock import MockCluster

    name = topic(120, partitions=2)
    _, state = read(
        lambda w: tfd.DataLoader(
            tfd.KafkaStream(cluster.bootstrap, name, timeout=10), batch_size=16, num_workers=w
        ),
        workers,
        pairs,
        take=4,
    )
    other = MockCluster(brokers=1)
    try:
        other.create_topic(name, 2)
        other.produce(name, [telemetry(i) for i in range(6)], partition=[i % 2 for i in range(6)])
        loader = tfd.DataLoader(tfd.KafkaStream(other.bootstrap, name, timeout=10), batch_size=16)
        with pytest.raises(
            tfd.SourceChangedError,
            match=rf"{name}:0: holds offsets below 3 but "
            r"the checkpoint resumes at \d+ \(the topic was deleted and recreated",
        ):
            loader.load_state_dict(state)
    finally:
        other.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_on_change_continue_goes_on_past_a_recreated_partition(cluster, topic, workers):
    """NOTE [ Continuing a Kafka epoch over deleted offsets ]: one partition now holds fewer
    messages than were delivered (recreated), the other still holds the checkpoint's offsets.
    With on_change="continue" the recreated one is done (its pinned end moves down to what it
    holds) and the other delivers exactly its offsets from the checkpoint to the pinned end."""
    from tensorfeed.sources._kafka_mock import MockCluster

    name = topic(120, partitions=2)

    def make(bootstrap, w):
        stream = tfd.KafkaStream(bootstrap, name, timeout=10)
        return tfd.DataLoader(stream, batch_size=16, num_workers=w, on_change="continue")

    head, state = read(lambda w: make(cluster.bootstrap, w), workers, pairs, take=6)
    end = {p: state["tensorfeed"]["source"]["end"][f"{name}:{p}"] for p in (0, 1)}  # pinned
    assert sum(end.values()) == 120
    at = {p: max((o for q, o in head if q == p), default=-1) + 1 for p in (0, 1)}
    assert set(head) == {(p, o) for p in (0, 1) for o in range(at[p])}
    keep = max(at, key=lambda p: end[p] - at[p])  # more left: it holds its offsets still
    gone = 1 - keep
    other = MockCluster(brokers=1)
    try:
        other.create_topic(name, 2)
        other.produce(name, [telemetry(i) for i in range(3)], partition=gone)
        other.produce(name, [telemetry(i) for i in range(100)], partition=keep)
        loader = make(other.bootstrap, workers)
        loader.load_state_dict(state)
        rest = read_all(loader)
    finally:
        other.close()
    assert at[gone] > 3 and end[keep] - at[keep] >= 12  # 96 of 120 delivered
    assert sorted(rest) == [(keep, o) for o in range(at[keep], end[keep])]
    assert loader.stats.source_changes == {
        "partitions": {f"{name}:{gone}": {"change": "recreated", "then": at[gone], "now": 3}},
        "messages_skipped": end[gone] - at[gone],
    }


def test_continuing_moves_deleted_offsets_to_what_the_partition_holds():
    """The arithmetic of the NOTE for retention, which librdkafka's mock cluster cannot do
    (it answers DeleteRecords with _UNSUPPORTED_FEATURE)."""
    from tensorfeed.sources.kafka.reader import resume_moves

    marks = {"t:0": (50, 200), "t:1": (0, 200), "t:2": (300, 400)}
    nxt = {"t:0": 20, "t:1": 70, "t:2": 120}
    unbounded = resume_moves(nxt, marks, None)
    assert sorted(unbounded) == ["t:0", "t:2"]  # t:1 still holds offset 70
    assert [unbounded[k]["now"] for k in ("t:0", "t:2")] == [50, 300]
    assert [unbounded[k]["skipped"] for k in ("t:0", "t:2")] == [30, 180]
    bounded = resume_moves(nxt, marks, {"t:0": 150, "t:1": 150, "t:2": 250})
    # t:2's end went with the deleted offsets: the partition is done, 130 messages lost
    assert (bounded["t:2"]["now"], bounded["t:2"]["end"], bounded["t:2"]["skipped"]) == (
        250,
        250,
        130,
    )
    assert (bounded["t:0"]["now"], bounded["t:0"]["end"]) == (50, 150)
    assert "offsets 20..49 were deleted (retention)" in bounded["t:0"]["problem"]


def test_row_iteration_checkpoints_too(cluster, topic):
    """A plain torch DataLoader (row by row) over the stream is checkpointable as well."""
    name = topic(40, partitions=2)
    expect = full_run(cluster, name)
    s = tfd.KafkaStream(cluster.bootstrap, name, timeout=5)
    it = iter(s)
    before = [(r["partition"], r["offset"]) for r in itertools.islice(it, 15)]
    state = it.state_dict()
    it2 = iter(tfd.KafkaStream(cluster.bootstrap, name, timeout=5))
    it2.load_state_dict(state)
    after = [(r["partition"], r["offset"]) for r in it2]
    assert by_partition(before + after) == expect


def test_commit_on_checkpoint_writes_the_checkpoint_offsets(cluster, topic):
    name = topic(60, partitions=2)
    s = tfd.KafkaStream(
        cluster.bootstrap, name, group_id="g-auto", commit_on_checkpoint=True, timeout=5
    )
    loader = tfd.DataLoader(s, batch_size=8)
    it = iter(loader)
    seen = pairs(next(it)) + pairs(next(it))
    state = loader.state_dict()  # the checkpoint commits
    committed = s.committed()
    assert committed == s.offsets(state)
    assert sum(committed.values()) == len(seen)
    # windows delegate to their stream
    w = tfd.KafkaStream(
        cluster.bootstrap,
        name,
        group_id="g-auto-w",
        commit_on_checkpoint=True,
        timeout=5,
        poll_batch=4,
    )
    wl = tfd.DataLoader(w.windows(key="device_id", size=2, step=1, features=["seq"]), batch_size=4)
    wit = iter(wl)
    for _ in range(4):
        next(wit)
    st = wl.state_dict()
    assert w.offsets(st) and w.committed() == w.offsets(st)
