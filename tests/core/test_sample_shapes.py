"""Samples and batches have the shape a user expects, for every source that takes
``features=``/``target=``: ``x`` / ``X`` with features only, ``y`` / ``Y`` with a target only,
``(x, y)`` / ``(X, Y)`` with both; never ``(x, None)``. Checked through ``ds[i]``,
``__getitems__``, a plain torch DataLoader (torch's default collate and ``tfd.collate``),
``tfd.DataLoader`` with 0 and 2 workers, caches and ``transform=``."""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import tensorfeed as tfd

N, B = 50, 8
FEATURES = ["a", "b", "c"]
MODES: dict[str, dict[str, Any]] = {
    "x": {"features": FEATURES},
    "y": {"target": "label"},
    "xy": {"features": FEATURES, "target": "label"},
}


def _table() -> pa.Table:
    ids = np.arange(N, dtype=np.int64)
    # a == id (so batches tell which rows they hold), label == id too
    return pa.table({"id": ids, "a": ids * 1.0, "b": ids * 0.5, "c": ids * 3, "label": ids})


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


# --------------------------------------------------------------------------- the sources


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("shapes")
    table = _table()
    db = root / "rows.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a REAL, b REAL, c INTEGER, label INTEGER)"
        )
        rows = [tuple(r.values()) for r in table.to_pylist()]
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()
    lake = root / "lake"
    lake.mkdir()
    pq.write_table(table.slice(0, 30), lake / "part-0.parquet", row_group_size=10)
    pq.write_table(table.slice(30), lake / "part-1.parquet", row_group_size=10)
    out: dict[str, Any] = {"table": table, "sql": f"sqlite:///{db}", "lake": str(lake)}
    mc = None
    try:
        from tensorfeed.sources._kafka_mock import MockCluster

        mc = MockCluster(brokers=1)
        mc.create_topic("shapes", 2)
        mc.produce("shapes", [json.dumps(r).encode() for r in table.to_pylist()])
        out["kafka"] = mc.bootstrap
    except ImportError:
        pass
    yield out
    if mc is not None:
        mc.close()


MapMaker = Callable[[dict[str, Any], dict[str, Any]], Any]

MAPS: dict[str, MapMaker] = {
    "memory": lambda d, kw: tfd.MemoryDataset(d["table"], **kw),
    "sqlite": lambda d, kw: tfd.SQLDataset(d["sql"], table="t", key="id", **kw),
    "lake": lambda d, kw: tfd.LakeDataset(d["lake"], **kw),
}


def _kafka(d: dict[str, Any], kw: dict[str, Any]) -> Any:
    if "kafka" not in d:
        pytest.skip("confluent-kafka is in tensorfeed[kafka]")
    return tfd.KafkaStream(d["kafka"], "shapes", timeout=10, **kw)


STREAMS: dict[str, MapMaker] = {
    "memory": lambda d, kw: tfd.MemoryStream(d["table"], chunk_rows=16, **kw),
    "sqlite": lambda d, kw: tfd.SQLStream(d["sql"], table="t", key="id", chunk_rows=16, **kw),
    "lake": lambda d, kw: tfd.LakeStream(d["lake"], **kw),
    "kafka": _kafka,
}
STREAMS_WITH_TRANSFORM = ("lake", "kafka")


# --------------------------------------------------------------------------- checks


def _check_sample(s: Any, mode: str) -> None:
    if mode == "x":
        assert isinstance(s, torch.Tensor), type(s)
        assert s.shape == (len(FEATURES),) and s.dtype == torch.float32
    elif mode == "y":
        assert not isinstance(s, tuple | list | dict), type(s)
        assert int(s) in range(N)
    else:
        assert isinstance(s, tuple) and len(s) == 2
        assert isinstance(s[0], torch.Tensor) and s[0].shape == (len(FEATURES),)
        assert int(s[1]) == int(s[0][0])


def _ids(batch: Any, mode: str, scale: float = 1.0) -> list[int]:
    """The row ids in a collated batch, after checking its shape."""
    if mode == "x":
        assert isinstance(batch, torch.Tensor), type(batch)
        assert batch.dim() == 2 and batch.shape[1] == len(FEATURES)
        return (batch[:, 0] / scale).long().tolist()
    if mode == "y":
        assert isinstance(batch, torch.Tensor), type(batch)
        assert batch.dim() == 1 and batch.dtype == torch.int64
        return batch.tolist()
    assert isinstance(batch, tuple | list) and len(batch) == 2  # torch's default gives a list
    x, y = batch
    assert isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[1] == len(FEATURES)
    assert isinstance(y, torch.Tensor) and y.shape == (x.shape[0],)
    assert (x[:, 0] / scale).long().tolist() == y.tolist()
    return y.tolist()


def _check_loader(loader: Any, mode: str, scale: float = 1.0) -> None:
    batches = list(loader)
    xs = [b[0] for b in batches] if mode == "xy" else batches
    assert sum(len(x) for x in xs) == N  # rows, whatever the shape of a batch
    ids = [i for b in batches for i in _ids(b, mode, scale)]
    assert sorted(ids) == list(range(N))


# --------------------------------------------------------------------------- map-style


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", MAPS)
def test_map_samples_and_batches(data: dict[str, Any], source: str, mode: str) -> None:
    ds = MAPS[source](data, MODES[mode])
    _check_sample(ds[3], mode)
    got = ds.__getitems__([0, 7, 3])
    assert len(got) == 3
    for s in got:
        _check_sample(s, mode)
    for s in pickle.loads(pickle.dumps(ds.__getitems__([1, 2]))):
        _check_sample(s, mode)
    plain = torch.utils.data.DataLoader
    _check_loader(plain(ds, batch_size=B), mode)  # torch's default collate
    _check_loader(plain(ds, batch_size=B, collate_fn=tfd.collate), mode)
    _check_loader(tfd.DataLoader(ds, batch_size=B, shuffle=True), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", MAPS)
def test_map_batches_in_workers(data: dict[str, Any], source: str, mode: str) -> None:
    ds = MAPS[source](data, MODES[mode])
    _check_loader(tfd.DataLoader(ds, batch_size=B, num_workers=2), mode)
    if mode == "x":  # torch's default collate stacks into shared memory in a worker
        _check_loader(torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2), mode)


@pytest.mark.parametrize("where", ["memory", "file"])
@pytest.mark.parametrize("source", MAPS)
def test_cached_samples_and_batches(data: dict[str, Any], tmp_path: Any, source: str, where: str):
    for mode, kw in MODES.items():
        ds = MAPS[source](data, kw).cache("memory" if where == "memory" else str(tmp_path))
        _check_sample(ds[5], mode)
        for s in ds.__getitems__([4, 9]):
            _check_sample(s, mode)
        _check_loader(tfd.DataLoader(ds, batch_size=B), mode)
        _check_loader(torch.utils.data.DataLoader(ds, batch_size=B), mode)


@pytest.mark.parametrize("source", MAPS)
def test_transform_applies_to_x(data: dict[str, Any], source: str) -> None:
    for mode in ("x", "xy"):
        ds = MAPS[source](data, {**MODES[mode], "transform": _double})
        s = ds[4]
        x = s if mode == "x" else s[0]
        assert isinstance(x, torch.Tensor) and x.tolist() == [8.0, 4.0, 24.0]
        assert mode == "x" or s[1] == 4
        _check_loader(tfd.DataLoader(ds, batch_size=B), mode, scale=2)
        _check_loader(torch.utils.data.DataLoader(ds, batch_size=B), mode, scale=2)
        _check_loader(tfd.DataLoader(ds.cache(), batch_size=B, num_workers=2), mode, scale=2)


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", STREAMS)
def test_stream_samples_and_batches(data: dict[str, Any], source: str, mode: str) -> None:
    st = STREAMS[source](data, MODES[mode])
    samples = list(st)
    assert len(samples) == N
    for s in samples[:5]:
        _check_sample(s, mode)
    plain = torch.utils.data.DataLoader
    _check_loader(plain(st, batch_size=B), mode)
    _check_loader(plain(st, batch_size=B, collate_fn=tfd.collate), mode)
    _check_loader(tfd.DataLoader(st, batch_size=B), mode)
    _check_loader(tfd.DataLoader(st, batch_size=B, num_workers=2), mode)


@pytest.mark.parametrize("source", STREAMS_WITH_TRANSFORM)
def test_stream_transform_applies_to_x(data: dict[str, Any], source: str) -> None:
    st = STREAMS[source](data, {**MODES["x"], "transform": _double})
    first = next(iter(st))
    _check_sample(first, "x")
    _check_loader(tfd.DataLoader(st, batch_size=B), "x", scale=2)
    _check_loader(torch.utils.data.DataLoader(st, batch_size=B, num_workers=2), "x", scale=2)


# --------------------------------------------------------------------------- the batch object


def test_features_only_is_the_reported_case() -> None:
    """``sum(len(x) for x in loader)`` counts rows, not the 2 of ``(X, None)``."""
    ds = tfd.MemoryDataset(_table(), features=FEATURES)
    assert sum(len(x) for x in tfd.DataLoader(ds, batch_size=B)) == N
    assert sum(len(x) for x in ds) == N * len(FEATURES)


def test_a_fetched_batch_is_a_read_only_list_of_samples() -> None:
    from tensorfeed.columns import ColumnBatch, RowLocator, SampleSpec

    spec = SampleSpec(features=("a", "b"))
    batch = ColumnBatch(_table().slice(0, 4), spec, RowLocator("t"))
    assert isinstance(batch, list) and len(batch) == 4 and list.__len__(batch) == 0
    assert batch[-1].tolist() == [3.0, 1.5] and list.__len__(batch) == 4  # stored for stack
    assert torch.stack(batch).shape == (4, 2)
    assert tfd.collate(batch).shape == (4, 2)
    copy = pickle.loads(pickle.dumps(batch))
    assert list.__len__(copy) == 0 and len(copy) == 4 and copy[0].tolist() == [0.0, 0.0]
    dicts = ColumnBatch(_table().slice(0, 3), SampleSpec(), RowLocator("t"))
    assert [r["id"] for r in dicts] == [0, 1, 2] and list.__len__(dicts) == 0  # dicts: not stored
    assert (
        batch != copy
        and batch == batch
        and bool(batch)
        and not ColumnBatch(_table().slice(0, 0), spec, RowLocator("t"))
    )
    with pytest.raises(IndexError):
        batch[4]
    with pytest.raises(TypeError):
        batch[1:2]
