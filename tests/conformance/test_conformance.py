"""One conformance suite for every source (STYLE.md habit 6).

Each source is built over the same N rows with ids 0..N-1, then checked for: pickling into
``spawn`` workers, every row exactly once per epoch with 0 and 2 workers, resume == uninterrupted
(through a JSON round trip of the state), the same batches whatever num_workers (map-style), and a
state dict from another dataset refused, and a checkpoint resumed on other worker counts
(each row once, then the next epoch as a fresh run's).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import tensorfeed as tfd

N = 240
BATCH = 16


@dataclass
class Source:
    make: Callable[[], Any]
    map_style: bool
    # Kafka orders messages within a partition only: compare each partition's sequence
    partition_of: Callable[[int], int] | None = None
    # other configurations of the same rows (with or without a shuffle buffer), also resumed
    # on other topologies
    variants: tuple[Callable[[], Any], ...] = ()


def batch_ids(batch: Any) -> list[int]:
    if isinstance(batch, dict):
        return batch["id"].tolist()
    img = batch[0]  # images: the id is written into the first two pixels
    return (img[:, 0, 0, 0].long() + 256 * img[:, 1, 0, 0].long()).tolist()


def _rows():
    rng = np.random.default_rng(0)
    return np.arange(N), rng.random(N)


# --------------------------------------------------------------------------- sources


def _memory(tmp, stream=False):
    ids, v = _rows()
    if stream:
        return Source(
            lambda: tfd.MemoryStream({"id": ids, "v": v}, chunk_rows=10, shuffle_buffer=40),
            False,
            variants=(lambda: tfd.MemoryStream({"id": ids, "v": v}, chunk_rows=10),),
        )
    return Source(lambda: tfd.MemoryDataset({"id": ids, "v": v}), True)


def _sqlite(tmp, stream=False):
    path = tmp / "conf.db"
    ids, v = _rows()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v REAL)")
        db.executemany("INSERT INTO items VALUES (?, ?)", zip(ids.tolist(), v.tolist()))
    url = f"sqlite:///{path}"
    if stream:
        return Source(
            lambda: tfd.SQLStream(url, table="items", key="id"),
            False,
            variants=(lambda: tfd.SQLStream(url, table="items", key="id", shuffle_buffer=30),),
        )
    return Source(lambda: tfd.SQLDataset(url, table="items", key="id"), True)


def _postgres(tmp, stream, pg_url):
    psycopg = pytest.importorskip("psycopg")
    table = f"conf_{uuid.uuid4().hex[:8]}"
    ids, v = _rows()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, v DOUBLE PRECISION)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)", list(zip(ids.tolist(), v.tolist()))
            )
    if stream:
        return Source(
            lambda: tfd.SQLStream(pg_url, table=table, key="id"),
            False,
            variants=(lambda: tfd.SQLStream(pg_url, table=table, key="id", shuffle_buffer=30),),
        )
    return Source(lambda: tfd.SQLDataset(pg_url, table=table, key="id"), True)


def _lake(tmp, stream=False):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, v = _rows()
    root = tmp / "lake"
    for part in range(3):
        d = root / f"part={part}"
        d.mkdir(parents=True)
        sel = ids % 3 == part
        pq.write_table(
            pa.table({"id": ids[sel], "v": v[sel]}), d / "data.parquet", row_group_size=25
        )
    if stream:
        return Source(
            lambda: tfd.LakeStream(str(root), shuffle_buffer=30),
            False,
            variants=(lambda: tfd.LakeStream(str(root)),),
        )
    return Source(lambda: tfd.LakeDataset(str(root)), True)


def _images(tmp, stream=False):
    from PIL import Image

    root = tmp / "imgs"
    for i in range(N):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.zeros((4, 4, 3), dtype=np.uint8)
        px[0, 0, 0], px[0, 0, 1] = i % 256, i // 256  # channel 0/1 of pixel (0, 0)
        Image.fromarray(px).save(d / f"{i:04d}.png")
    return Source(lambda: tfd.ImageFolder(str(root)), True)


def _kafka(tmp, stream=True):
    from tensorfeed.sources._kafka_mock import MockCluster

    cluster = MockCluster(partitions=3)
    topic = f"conf-{uuid.uuid4().hex[:6]}"
    cluster.create_topic(topic, 3)
    ids, v = _rows()
    cluster.produce(
        topic, [json.dumps({"id": int(i), "v": float(x)}).encode() for i, x in zip(ids, v)]
    )
    _keepalive.append(cluster)
    # cluster.produce assigns message i to partition i % 3
    return Source(
        lambda: tfd.KafkaStream(cluster.bootstrap, [topic], end="now"),
        False,
        partition_of=lambda i: i % 3,
    )


_keepalive: list[Any] = []


@pytest.fixture(scope="module", autouse=True)
def _close_clusters():
    yield
    while _keepalive:  # close mock clusters here, not during interpreter shutdown
        _keepalive.pop().close()


SOURCES = {
    "memory": lambda tmp, pg: _memory(tmp),
    "memory-stream": lambda tmp, pg: _memory(tmp, True),
    "sqlite": lambda tmp, pg: _sqlite(tmp),
    "sqlite-stream": lambda tmp, pg: _sqlite(tmp, True),
    "postgres": lambda tmp, pg: _postgres(tmp, False, pg),
    "postgres-stream": lambda tmp, pg: _postgres(tmp, True, pg),
    "lake": lambda tmp, pg: _lake(tmp),
    "lake-stream": lambda tmp, pg: _lake(tmp, True),
    "images": lambda tmp, pg: _images(tmp),
    "kafka-stream": lambda tmp, pg: _kafka(tmp),
}


def _build(request, tmp_path_factory):
    name = request.param
    pg = request.getfixturevalue("pg_url") if name.startswith("postgres") else None
    return SOURCES[name](tmp_path_factory.mktemp(name), pg)


@pytest.fixture(scope="module", params=sorted(SOURCES))
def source(request, tmp_path_factory):
    return _build(request, tmp_path_factory)


@pytest.fixture(scope="module", params=sorted(n for n in SOURCES if "stream" not in n))
def map_source(request, tmp_path_factory):
    return _build(request, tmp_path_factory)


@pytest.fixture(scope="module", params=sorted(n for n in SOURCES if "stream" in n))
def stream_source(request, tmp_path_factory):
    return _build(request, tmp_path_factory)


def loader_for(src: Source, workers: int, **kw) -> tfd.DataLoader:
    shuffle = True if src.map_style else None
    return tfd.DataLoader(
        src.make(), batch_size=BATCH, shuffle=shuffle, num_workers=workers, seed=11, **kw
    )


def epoch_ids(loader) -> list[list[int]]:
    return [batch_ids(b) for b in loader]


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_exactly_once(source, workers):
    seen = sum(epoch_ids(loader_for(source, workers)), [])
    assert sorted(seen) == list(range(N))


def test_pickles_into_spawn_workers(source):
    ds = source.make()
    clone = pickle.loads(pickle.dumps(ds))
    assert type(clone) is type(ds) and repr(clone) == repr(ds)
    # a spawn worker gets the dataset only through pickle: no inherited handle can help it
    loader = tfd.DataLoader(ds, batch_size=BATCH, num_workers=1, multiprocessing_context="spawn")
    assert sorted(sum(epoch_ids(loader), [])) == list(range(N))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_equals_uninterrupted(source, workers):
    full = epoch_ids(loader_for(source, workers))
    loader = loader_for(source, workers)
    it = iter(loader)
    head = [batch_ids(next(it)) for _ in range(5)]
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    resumed = loader_for(source, workers)
    resumed.load_state_dict(state)
    tail = epoch_ids(resumed)
    if source.partition_of is None:
        # streams too: each worker's order is fixed and in_order interleaves workers round robin
        assert head + tail == full
    else:
        assert _per_partition(source, head + tail) == _per_partition(source, full)


def _per_partition(source: Source, batches: list[list[int]]) -> Any:
    if source.partition_of is None:
        return batches
    out: dict[int, list[int]] = {}
    for i in (i for b in batches for i in b):
        out.setdefault(source.partition_of(i), []).append(i)
    return out


@pytest.mark.parametrize(("a", "b"), [(2, 0), (0, 3), (3, 1)])
@pytest.mark.parametrize("cut", [0, 3, "last"])
def test_resume_on_another_topology(source, a, b, cut):
    """NOTE [ Elastic map-style checkpoints ] and [ Elastic stream checkpoints ]: cut an epoch
    on ``a`` workers (before any batch, after 3, right after the last), resume on ``b``: every
    row of the epoch once; the next epoch is a fresh run's on ``b`` workers. A stream is checked
    with and without a shuffle buffer."""
    for make in (source.make, *source.variants):
        _resumes_on_another_topology(Source(make, source.map_style, source.partition_of), a, b, cut)


def _resumes_on_another_topology(src: Source, a: int, b: int, cut: int | str) -> None:
    loader = loader_for(src, a)
    if cut == "last":
        cut = len(epoch_ids(loader_for(src, a)))
    it = iter(loader)
    head = [batch_ids(next(it)) for _ in range(int(cut))]
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    resumed = loader_for(src, b)
    resumed.load_state_dict(state)
    rest = epoch_ids(resumed)
    got = [i for batch in head + rest for i in batch]
    assert sorted(got) == list(range(N)), f"{len(got)} rows, {len(set(got))} distinct"
    fresh = loader_for(src, b)
    fresh.set_epoch(1)
    assert _per_partition(src, epoch_ids(resumed)) == _per_partition(src, epoch_ids(fresh))


def test_a_killed_worker_restarts_from_the_last_batch(source, caplog):
    """NOTE [ Worker restarts ]: a worker SIGKILLed after 3 batches, max_worker_restarts=1:
    the epoch goes on from the last batch handed out, every row once, in the uninterrupted
    order (within a partition for Kafka); the restart is logged with the source."""
    full = epoch_ids(loader_for(source, 2))
    loader = loader_for(source, 2, max_worker_restarts=1)
    caplog.set_level(logging.WARNING, logger="tensorfeed")
    got: list[list[int]] = []
    for i, batch in enumerate(loader):
        got.append(batch_ids(batch))
        if i == 2:
            os.kill(loader._iterator._workers[0].pid, signal.SIGKILL)
    assert sorted(i for b in got for i in b) == list(range(N))
    assert _per_partition(source, got) == _per_partition(source, full)
    assert "restart 1 of 1 from the last batch" in caplog.text
    assert source.make().describe() in caplog.text


def test_row_by_row_iteration_resumes_exactly_once(stream_source):
    """A stream iterated row by row (a plain torch DataLoader's way): a checkpoint after k rows
    counts exactly those k (it once lagged a row behind, and the resume repeated it)."""
    for src in (stream_source.make, *stream_source.variants):
        it = iter(src())
        head = [int(next(it)["id"]) for _ in range(37)]
        state = json.loads(json.dumps(it.state_dict()))
        del it
        again = iter(src())
        again.load_state_dict(state)
        rest = [int(row["id"]) for row in again]
        assert sorted(head + rest) == list(range(N)), f"{len(head) + len(rest)} rows"


def test_same_batches_whatever_num_workers(map_source):
    # (iterable sources are split by worker, so their order depends on num_workers by design)
    assert epoch_ids(loader_for(map_source, 0)) == epoch_ids(loader_for(map_source, 2))


def test_state_from_another_dataset_is_refused(source):
    other = tfd.DataLoader(tfd.MemoryDataset({"id": np.arange(5)}), batch_size=2)
    next(iter(other))
    with pytest.raises(tfd.StateError):
        loader_for(source, 0).load_state_dict(other.state_dict())


def test_repr_and_errors_carry_no_password(source):
    text = repr(source.make())
    assert "password" not in text.lower() or "***" in text
    assert os.environ.get("PGPASSWORD", "\0") not in text
