"""LakeDataset / LakeStream over local lakes: index, pushdown, formats, samplers, exactly-once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.errors import SourceChangedError
from tests.resume_helpers import assert_resumes_exactly_once

from .conftest import (
    N_ROWS,
    REGIONS,
    ROW_GROUP,
    ROWS_PER_FILE,
    YEARS,
    ids_of,
    lake_tables,
    write_local,
)


def _reference(root: Path) -> pa.Table:
    return pads.dataset(str(root), format="parquet", partitioning="hive").to_table()


# --------------------------------------------------------------------------- index


def test_len_getitem_and_partition_types(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake))
    assert len(ds) == N_ROWS
    assert ds.num_row_groups == len(YEARS) * len(REGIONS) * -(-ROWS_PER_FILE // ROW_GROUP)
    assert ds.schema.field("year").type == pa.int32()
    assert ds.schema.field("region").type == pa.string()
    ids = [ds[i]["id"] for i in range(len(ds))]
    assert sorted(ids) == list(range(N_ROWS))
    row = ds[ROWS_PER_FILE * 3 + 5]  # fourth file in path order: year=2021/region=US
    assert (row["year"], row["region"], row["id"]) == (2021, "US", ROWS_PER_FILE * 3 + 5)
    assert ds[-1]["id"] == N_ROWS - 1
    with pytest.raises(IndexError):
        ds[N_ROWS]


def test_getitems_groups_by_row_group_and_keeps_order(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake))
    idx = [355, 3, 120, 4, 359, 0, 61, 61]
    batch = ds.__getitems__(idx)
    assert batch.table.column("id").to_pylist() == idx
    ref = _reference(local_lake)
    for name in ("x", "age", "year", "region"):
        assert batch.table.column(name).to_pylist() == ref.take(idx).column(name).to_pylist()
    # each row group touched was decoded once: the process cache holds exactly those
    starts = np.concatenate([[0], np.cumsum(ds.row_group_sizes())])
    touched = set((np.searchsorted(starts, idx, side="right") - 1).tolist())
    assert set(ds._local["cache"]) == touched


def test_columns_pushdown_and_supervised_samples(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake), columns=["id", "year"])
    assert ds.schema.names == ["id", "year"]
    assert set(ds[0]) == {"id", "year"}
    sup = tfd.LakeDataset(str(local_lake), features=["age", "x"], target="label")
    x, y = sup[7]
    assert x.dtype == torch.float32 and x.shape == (2,) and y == 1
    loader = tfd.DataLoader(sup, batch_size=50)
    X, Y = next(iter(loader))
    assert X.shape == (50, 2) and Y.dtype == torch.int64


def _counting_fs():
    """A local filesystem that counts open calls and bytes read per path (pyarrow.fs.PyFileSystem
    over a Python handler): the lake reads through it like through any other filesystem."""
    from pyarrow import fs as pafs

    class Counting(pafs.FileSystemHandler):
        def __init__(self) -> None:
            self.local = pafs.LocalFileSystem()
            self.opens: list[str] = []
            self.read_bytes: dict[str, int] = {}

        def get_type_name(self) -> str:
            return "counting"

        def normalize_path(self, path: str) -> str:
            return path

        def get_file_info(self, paths):
            return self.local.get_file_info(paths)

        def get_file_info_selector(self, selector):
            return self.local.get_file_info(selector)

        def open_input_file(self, path: str):
            self.opens.append(path)
            handler = self

            class Reader:
                def __init__(self) -> None:
                    self.f = open(path, "rb")  # noqa: SIM115 - closed by pyarrow via close()
                    self.closed = False

                def read(self, n: int = -1) -> bytes:
                    data = self.f.read(n)
                    handler.read_bytes[path] = handler.read_bytes.get(path, 0) + len(data)
                    return data

                def seek(self, off: int, whence: int = 0) -> int:
                    return self.f.seek(off, whence)

                def tell(self) -> int:
                    return self.f.tell()

                def close(self) -> None:
                    self.closed = True
                    self.f.close()

                def readable(self) -> bool:
                    return True

                def seekable(self) -> bool:
                    return True

                def writable(self) -> bool:
                    return False

                def size(self) -> int:
                    return os.path.getsize(path)

            return pa.PythonFile(Reader(), mode="r")

        def open_input_stream(self, path: str):
            return self.open_input_file(path)

        def create_dir(self, *a):
            raise NotImplementedError

        def delete_dir(self, *a):
            raise NotImplementedError

        def delete_dir_contents(self, *a, **k):
            raise NotImplementedError

        def delete_root_dir_contents(self):
            raise NotImplementedError

        def delete_file(self, *a):
            raise NotImplementedError

        def move(self, *a):
            raise NotImplementedError

        def copy_file(self, *a):
            raise NotImplementedError

        def open_output_stream(self, *a):
            raise NotImplementedError

        def open_append_stream(self, *a):
            raise NotImplementedError

    h = Counting()
    return pafs.PyFileSystem(h), h


def test_filter_pushdown_never_opens_excluded_partitions(local_lake: Path) -> None:
    fs, h = _counting_fs()
    ds = tfd.LakeDataset(
        str(local_lake), filter=[("year", "=", 2021), ("region", "=", "EU")], filesystem=fs
    )
    assert len(ds) == ROWS_PER_FILE
    list(tfd.DataLoader(ds, batch_size=25))
    opened = {Path(p).parent.parent.name + "/" + Path(p).parent.name for p in h.opens}
    assert opened == {"year=2021/region=EU"}
    # an expression works the same way
    fs2, h2 = _counting_fs()
    ds2 = tfd.LakeDataset(str(local_lake), filter=pads.field("year") >= 2022, filesystem=fs2)
    assert sorted(ids_of([ds2[i] for i in range(len(ds2))])) == list(
        range(4 * ROWS_PER_FILE, N_ROWS)
    )
    assert all("year=2022" in p for p in h2.opens)


def test_index_reads_footers_only_and_statistics_prune_row_groups(tmp_path: Path) -> None:
    # one 8-row-group file of incompressible floats: ~64 KiB per row group
    n = 8 * 4096
    rng = np.random.default_rng(1)
    t = pa.table({"id": np.arange(n, dtype=np.int64), "a": rng.random(n), "b": rng.random(n)})
    path = tmp_path / "big" / "part.parquet"
    path.parent.mkdir()
    pq.write_table(t, path, row_group_size=4096, compression="none")
    size = path.stat().st_size
    fs, h = _counting_fs()
    ds = tfd.LakeDataset(str(path.parent), filesystem=fs)
    assert len(ds) == n and ds.num_row_groups == 8
    assert sum(h.read_bytes.values()) < size / 4, "building the index read data pages"
    # a filter on a data column: statistics exclude 6 of 8 row groups, never downloaded
    fs, h = _counting_fs()
    ds = tfd.LakeDataset(str(path.parent), filter=[("id", ">=", 4096 * 6 + 10)], filesystem=fs)
    assert len(ds) == 2 * 4096 - 10
    # row group 6 straddles the bound (its filter column is read once); 7 matches whole
    assert ds._plan.unit_partial.tolist() == [True, False]
    got = ids_of(tfd.DataLoader(ds, batch_size=1000))
    assert got == list(range(4096 * 6 + 10, n))
    assert sum(h.read_bytes.values()) < size / 2
    # columns are pushed down too
    fs, h = _counting_fs()
    one = tfd.LakeDataset(str(path.parent), columns=["a"], filesystem=fs)
    before = sum(h.read_bytes.values())
    one.__getitems__(list(range(0, n, 4096)))
    assert sum(h.read_bytes.values()) - before < size / 2 + 65536


def test_row_filter_on_data_and_partition_columns(local_lake: Path) -> None:
    ref = _reference(local_lake)
    expr = ((pads.field("year") == 2021) & (pads.field("age") >= 50)) | (pads.field("x") > 1.5)
    want = sorted(ref.filter(expr).column("id").to_pylist())
    ds = tfd.LakeDataset(str(local_lake), filter=expr)
    assert len(ds) == len(want)
    assert (
        sorted(ids_of([ds.__getitems__(list(range(len(ds))))[i] for i in range(len(ds))])) == want
    )
    st = tfd.LakeStream(str(local_lake), filter=expr)
    assert sorted(ids_of(tfd.DataLoader(st, batch_size=9))) == want
    dnf = [[("year", "in", [2020, 2022]), ("label", "=", 1)], [("region", "!=", "EU")]]
    ds = tfd.LakeDataset(str(local_lake), filter=dnf, columns=["id"])
    want = sorted(ref.filter(pq.filters_to_expression(dnf)).column("id").to_pylist())
    assert sorted(ds.column("id").tolist()) == want
    assert ds.schema.names == ["id"]


# --------------------------------------------------------------------------- formats, uris


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_ndjson_lakes(tmp_path: Path, fmt: str) -> None:
    tables = lake_tables()
    root = tmp_path / fmt
    for rel, t in tables.items():
        p = root / rel.replace(".parquet", ".csv" if fmt == "csv" else ".jsonl")
        p.parent.mkdir(parents=True, exist_ok=True)
        from .conftest import write_table

        write_table(t, p, fmt)
    ds = tfd.LakeDataset(str(root), format=fmt, filter=[("year", ">=", 2021), ("age", "<", 60)])
    ref = pa.concat_tables(
        [
            t.append_column("year", pa.array([int(k[5:9])] * t.num_rows, pa.int32()))
            for k, t in tables.items()
        ]
    )
    want = ref.filter((pads.field("year") >= 2021) & (pads.field("age") < 60))
    assert len(ds) == want.num_rows
    got = ds.__getitems__(list(range(len(ds)))).table
    assert sorted(got.column("id").to_pylist()) == sorted(want.column("id").to_pylist())
    assert got.schema.field("x").type == pa.float64()
    st = tfd.LakeStream(str(root), format=fmt, columns=["id", "region"])
    assert sorted(ids_of(tfd.DataLoader(st, batch_size=64))) == list(range(N_ROWS))


def test_glob_list_file_url_and_from_url(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake / "year=202[01]" / "*" / "*.parquet"))
    assert len(ds) == 4 * ROWS_PER_FILE and ds.schema.field("year").type == pa.int32()
    files = [
        str(local_lake / "year=2022/region=US/part-0.parquet"),
        str(local_lake / "year=2020/region=EU/part-0.parquet"),
    ]
    ds = tfd.LakeDataset(files)
    assert len(ds) == 2 * ROWS_PER_FILE and ds[0]["year"] == 2020  # sorted path order
    ds = tfd.LakeDataset.from_url(f"file://{local_lake}?columns=id,region")
    assert ds.schema.names == ["id", "region"] and len(ds) == N_ROWS
    st = tfd.LakeStream.from_url(str(local_lake), shuffle_buffer=10)
    assert isinstance(st, tfd.LakeStream)
    opened = tfd.open(str(local_lake))
    assert isinstance(opened, tfd.LakeDataset) and len(opened) == N_ROWS


def test_schema_widening_rule(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([0, 1], pa.int32()), "v": pa.array([1, 2], pa.int64())}),
        root / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": pa.array([2], pa.int64()), "v": pa.array([0.5], pa.float32())}),
        root / "b.parquet",
    )
    ds = tfd.LakeDataset(str(root))
    assert ds.schema.field("id").type == pa.int64() and ds.schema.field("v").type == pa.float64()
    assert ds.__getitems__([0, 1, 2]).table.column("v").to_pylist() == [1.0, 2.0, 0.5]


# --------------------------------------------------------------------------- exactly once


@pytest.mark.parametrize("workers", [0, 2])
def test_map_style_exactly_once(local_lake: Path, workers: int) -> None:
    ds = tfd.LakeDataset(str(local_lake))
    for sampler in (None, ds.locality_sampler(seed=3, window=2), ds.sampler("uniform", seed=1)):
        loader = tfd.DataLoader(
            ds, batch_size=13, shuffle=sampler is None, sampler=sampler, num_workers=workers
        )
        got = ids_of(loader)
        assert sorted(got) == list(range(N_ROWS))
        assert got != list(range(N_ROWS))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("buffer", [0, 50])
def test_stream_exactly_once(local_lake: Path, workers: int, buffer: int) -> None:
    st = tfd.LakeStream(str(local_lake), shuffle_buffer=buffer, seed=4)
    loader = tfd.DataLoader(st, batch_size=32, num_workers=workers)
    for epoch in range(2):
        got = ids_of(loader)
        assert sorted(got) == list(range(N_ROWS)), f"epoch {epoch}"
        if workers == 0:  # in order without a buffer; two workers interleave their shards
            assert (got != list(range(N_ROWS))) == (buffer > 0)


def test_stream_shards_by_row_group(tmp_path: Path) -> None:
    from tensorfeed.sampling import World

    root = tmp_path / "lake"
    write_local(root, lake_tables())
    st = tfd.LakeStream(str(root))
    seen: list[int] = []
    for shard in range(3):
        world = World(rank=shard // 3, world_size=1, worker=shard, num_workers=3)
        tables = list(st._iter_tables(world, 0, 0))
        assert all(t.num_rows <= ROW_GROUP for t in tables)
        seen += [i for t in tables for i in t.column("id").to_pylist()]
    assert sorted(seen) == list(range(N_ROWS))


def test_stream_resume_mid_epoch(local_lake: Path) -> None:
    st = tfd.LakeStream(str(local_lake), filter=[("age", ">=", 40)])
    loader = tfd.DataLoader(st, batch_size=10)
    full = ids_of(loader)
    it = iter(loader)
    head = ids_of([next(it) for _ in range(7)])
    state = loader.state_dict()
    again = tfd.DataLoader(
        tfd.LakeStream(str(local_lake), filter=[("age", ">=", 40)]), batch_size=10
    )
    again.load_state_dict(state)
    assert head + ids_of(again) == full


@pytest.mark.parametrize("filtered", [False, True])
def test_stream_checkpoint_resumes_exactly_once_on_another_worker_count(
    local_lake: Path, filtered: bool
) -> None:
    """Row groups are the fixed splits; with a filter, units are read partially and counted."""
    flt = [("age", ">=", 40)] if filtered else None
    want = ids_of(tfd.DataLoader(tfd.LakeStream(str(local_lake), filter=flt), batch_size=10))

    def make(workers: int) -> tfd.DataLoader:
        return tfd.DataLoader(
            tfd.LakeStream(str(local_lake), filter=flt), batch_size=10, num_workers=workers
        )

    assert len(want) > 100
    assert_resumes_exactly_once(make, want, [(2, 0, 3), (0, 3, 2)], cuts=(0, 3, "last"))


@pytest.mark.parametrize("filtered", [False, True])
def test_a_shuffled_stream_and_its_split_resume_exactly_once_on_another_worker_count(
    local_lake: Path, filtered: bool
) -> None:
    """NOTE [ A shuffle buffer that regroups ] over row groups (partly filtered ones counted),
    and a tfd.split part of it (NOTE [ Checkpoints of filtered streams ])."""
    flt = [("age", ">=", 40)] if filtered else None

    def stream() -> tfd.LakeStream:
        return tfd.LakeStream(str(local_lake), filter=flt, shuffle_buffer=25, seed=2)

    def make(workers: int) -> tfd.DataLoader:
        return tfd.DataLoader(stream(), batch_size=10, num_workers=workers)

    def make_part(workers: int) -> tfd.DataLoader:
        part = tfd.split(stream(), {"train": 0.7, "val": 0.3}, key="id")["train"]
        return tfd.DataLoader(part, batch_size=10, num_workers=workers)

    want = ids_of(make(0))
    assert len(want) > 100 and want != sorted(want)
    assert_resumes_exactly_once(make, want, [(2, 0, 3), (0, 3, 2)], cuts=(0, 3, "last"))
    part = ids_of(make_part(0))
    assert 0 < len(part) < len(want)
    assert_resumes_exactly_once(make_part, part, [(2, 0, 3)], cuts=(0, 3, "last"))


def _stream_checkpoint(root: Path, workers: int = 2) -> tuple[list[int], dict]:
    loader = tfd.DataLoader(tfd.LakeStream(str(root)), batch_size=10, num_workers=workers)
    it = iter(loader)
    head = ids_of([next(it) for _ in range(4)])
    state = loader.state_dict()
    del it
    return head, state


def test_a_resumed_stream_epoch_reads_its_own_files_not_one_added_since(local_lake: Path) -> None:
    head, state = _stream_checkpoint(local_lake)
    part = sorted((local_lake / "year=2022" / "region=EU").glob("*.parquet"))[0]
    added = pq.read_table(part).slice(0, 30)
    added = added.set_column(0, "id", pa.array(np.arange(N_ROWS, N_ROWS + 30)))
    pq.write_table(added, part.with_name("zz-new.parquet"))
    for workers in (2, 0):  # the same topology, and another
        resumed = tfd.DataLoader(
            tfd.LakeStream(str(local_lake)), batch_size=10, num_workers=workers
        )
        resumed.load_state_dict(state)
        assert sorted(head + ids_of(resumed)) == list(range(N_ROWS))
        assert N_ROWS + 29 in ids_of(resumed)  # the next epoch lists the lake again


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_a_resumed_stream_names_a_file_replaced_or_removed_since(local_lake: Path, change) -> None:
    _, state = _stream_checkpoint(local_lake)
    victim = sorted(local_lake.rglob("*.parquet"))[1]
    if change == "removed":
        victim.unlink()
    else:
        pq.write_table(pq.read_table(victim), victim)  # same rows, a new file
        os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    resumed = tfd.DataLoader(tfd.LakeStream(str(local_lake)), batch_size=10)
    with pytest.raises(SourceChangedError, match=rf"1 file\(s\) {change}: .*{victim.name}"):
        resumed.load_state_dict(state)


# --------------------------------------------------------------------------- locality sampler


def test_locality_sampler_properties(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake))
    s = ds.locality_sampler(seed=0, window=3)
    order = list(s)
    assert sorted(order) == list(range(len(ds)))
    sizes = ds.row_group_sizes()
    starts = np.concatenate([[0], np.cumsum(sizes)])
    unit = np.searchsorted(starts, order, side="right") - 1
    positions = np.argsort(order)  # where each index landed
    for u in range(len(sizes)):  # a row group's rows stay within one window of rows
        p = positions[starts[u] : starts[u + 1]]
        assert p.max() - p.min() < 3 * sizes.max()
    for b in range(0, len(order), 16):  # so a batch touches at most two windows
        assert len(set(unit[b : b + 16].tolist())) <= 6
    s.set_epoch(1)
    assert list(s) != order
    # checkpoint mid-epoch and resume
    s2 = ds.locality_sampler(seed=0, window=3)
    s2.set_epoch(1)
    it = iter(s2)
    head = [next(it) for _ in range(100)]
    state = s2.state_dict()
    s3 = ds.locality_sampler(seed=0, window=3)
    s3.load_state_dict(state)
    assert head + list(s3) == list(s)
    # ranks take disjoint, covering shares
    shares = [
        list(ds.locality_sampler(seed=5, window=2, rank=r, world_size=3, ddp="drop"))
        for r in range(3)
    ]
    flat = [i for sh in shares for i in sh]
    assert len(flat) == len(set(flat)) == len(ds) // 3 * 3


# --------------------------------------------------------------------------- consistent epochs


def test_map_style_replaced_file_and_refresh(local_lake: Path) -> None:
    ds = tfd.LakeDataset(str(local_lake))
    victim = local_lake / "year=2022/region=US/part-0.parquet"
    assert ds[len(ds) - 1]["id"] == N_ROWS - 1  # cached now, and pinned
    time.sleep(0.01)
    t = lake_tables()["year=2022/region=US/part-0.parquet"]
    pq.write_table(pa.concat_tables([t, t]), victim, row_group_size=ROW_GROUP)
    with pytest.raises(SourceChangedError, match="changed under this epoch") as err:
        ds[len(ds) - ROW_GROUP * 2]
    assert str(victim) in str(err.value)
    extra = local_lake / "year=2023/region=EU/part-0.parquet"
    extra.parent.mkdir(parents=True)
    pq.write_table(t, extra)
    assert len(ds) == N_ROWS  # pinned until refresh()
    ds.refresh()
    assert len(ds) == N_ROWS + 2 * ROWS_PER_FILE


def test_stream_new_files_join_next_epoch_and_replacement_fails(local_lake: Path) -> None:
    st = tfd.LakeStream(str(local_lake))
    loader = tfd.DataLoader(st, batch_size=16)
    it = iter(loader)
    first = ids_of([next(it)])
    extra = local_lake / "year=2023/region=EU/part-0.parquet"
    extra.parent.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "id": np.arange(1000, 1010),
                "age": np.arange(10),
                "x": np.zeros(10),
                "label": np.zeros(10, np.int64),
            }
        ),
        extra,
    )
    rest = ids_of(it)
    assert sorted(first + rest) == list(range(N_ROWS)), "a file added mid-epoch leaked in"
    assert sorted(ids_of(loader)) == list(range(N_ROWS)) + list(range(1000, 1010))
    # a file replaced while the epoch runs is an error naming it
    it = iter(loader)
    next(it)
    victim = local_lake / "year=2022/region=US/part-0.parquet"
    pq.write_table(
        pa.table(
            {
                "id": np.arange(5),
                "age": np.arange(5),
                "x": np.zeros(5),
                "label": np.zeros(5, np.int64),
            }
        ),
        victim,
    )
    with pytest.raises(SourceChangedError, match="year=2022/region=US"):
        list(it)


def test_many_files_hold_no_descriptor_each(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(150):
        pq.write_table(
            pa.table({"id": np.arange(i * 4, i * 4 + 4), "v": np.ones(4)}),
            root / f"part-{i:04d}.parquet",
        )
    fds = lambda: len(os.listdir("/proc/self/fd"))
    before = fds()
    ds = tfd.LakeDataset(str(root), filter=[("v", ">", 0)])
    st = tfd.LakeStream(str(root), filter=[("v", ">", 0)])
    assert len(ds) == 600 and len(ids_of(tfd.DataLoader(st, batch_size=100))) == 600
    assert sorted(ds.column("id").tolist()) == list(range(600))
    assert fds() - before < 100  # at most the bounded per-thread reader cache stays open


def test_fast_batches_match_the_generic_conversion(local_lake: Path) -> None:
    from tensorfeed.columns import ColumnBatch, ConvertOptions

    idx = [5, 300, 17, 121, 359, 0]
    for kw in (
        {"columns": ["id", "age", "x", "label"]},
        {"features": ["age", "x"], "target": "label"},
        {"features": ["x"], "target": "x"},
    ):
        b = tfd.LakeDataset(str(local_lake), **kw).__getitems__(idx)
        for opts in (ConvertOptions(), ConvertOptions(torch.float64)):
            fast, slow = b.to_batch(opts), ColumnBatch.to_batch(b, opts)
            pairs = (
                list(zip(fast, slow))
                if isinstance(fast, tuple)
                else [(fast[k], slow[k]) for k in slow]
            )
            assert isinstance(fast, type(slow)) and len(pairs) == len(slow)
            for a, c in pairs:
                assert a.dtype == c.dtype and a.shape == c.shape and torch.equal(a, c)
    # strings and partitions take the general path and still convert
    b = tfd.LakeDataset(str(local_lake)).__getitems__(idx)
    assert b.to_batch()["region"] == ColumnBatch.to_batch(b)["region"]


@pytest.mark.parametrize("change", ["added", "removed", "replaced"])
def test_a_lake_changed_since_the_checkpoint_names_the_files(local_lake, change):
    import json

    loader = tfd.DataLoader(tfd.LakeDataset(str(local_lake)), batch_size=32, shuffle=True)
    it = iter(loader)
    next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    del it
    part = next(local_lake.rglob("*.parquet"))
    if change == "added":
        pq.write_table(
            pa.table({"id": [10**6], "age": [1], "x": [0.0], "label": [0]}),
            part.with_name("part-9.parquet"),
        )
    elif change == "removed":
        part.unlink()
    else:
        table = pq.read_table(part).slice(1)
        pq.write_table(table, part)
    resumed = tfd.DataLoader(tfd.LakeDataset(str(local_lake)), batch_size=32, shuffle=True)
    with pytest.raises(tfd.SourceChangedError, match=rf"1 file\(s\) {change}: .*part-"):
        resumed.load_state_dict(state)
