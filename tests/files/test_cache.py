"""ds.cache("memory") / ds.cache(path) for any map-style dataset: same samples, files read once."""

from __future__ import annotations

import os
import pickle
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import tensorfeed as tfd
from tensorfeed.dataset import cache_dataset
from tensorfeed.sources.files import tensor_loader

from .files_helpers import ids_of_images, write_mnist, write_tree

CALLS: list[str] = []


def counting_loader(path: str) -> torch.Tensor:
    """Counts the files it opens (in this process)."""
    CALLS.append(path)
    return tensor_loader(path)


def failing_loader(path: str) -> torch.Tensor:
    if path.endswith("0007.png"):
        raise OSError("disk on fire")
    return tensor_loader(path)


def _epoch(ds, workers=0, **kw) -> list:
    return [
        (x.clone(), y.clone())
        for x, y in tfd.DataLoader(
            ds, batch_size=5, shuffle=True, seed=1, num_workers=workers, **kw
        )
    ]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    write_tree(root, {"a": 9, "b": 6, "c": 8})
    return root


@pytest.mark.parametrize("where", ["memory", "file"])
def test_cached_samples_and_batches_equal_the_source(big_tree, tmp_path, where):
    src = tfd.ImageFolder(
        big_tree,
        transform=lambda t: t[:, :4, :4],
        target_transform=lambda y: y + 100,
        decode="tensor",
    )
    cached = src.cache("memory" if where == "memory" else str(tmp_path / "cache"))
    assert len(cached) == len(src) == 23
    for i in (0, 7, 22, -1):
        (x1, y1), (x2, y2) = src[i], cached[i]
        assert torch.equal(x1, x2) and y1 == y2 and x1.shape == (3, 4, 4) and y1 >= 100
    assert cached.classes == src.classes and cached.class_to_idx == src.class_to_idx
    assert cached.targets == src.targets
    reference = _epoch(src)
    assert _same(_epoch(cached), reference)
    assert _same(_epoch(cached, workers=2), reference)
    np.testing.assert_array_equal(cached.column("target"), src.column("target"))


def test_memory_cache_is_one_buffer_per_column(big_tree):
    cached = tfd.ImageFolder(big_tree).cache("memory")
    table = cached.table
    assert all(table.column(name).num_chunks == 1 for name in table.column_names)
    assert table.column("image").chunk(0).buffers()[2].size == 23 * 3 * 6 * 5
    assert pickle.loads(pickle.dumps(cached)).table.equals(table)


def test_file_cache_is_reused_and_the_second_run_opens_no_image(big_tree, tmp_path):
    where = tmp_path / "cache"
    CALLS.clear()
    first = tfd.ImageFolder(big_tree, loader=counting_loader).cache(str(where))
    assert len(CALLS) == 23  # built once: every file read exactly once
    files = sorted(os.listdir(where))
    assert len(files) == 2 and first.path == str(where / files[0])  # the file, its checksum
    assert files[0].endswith(".arrow") and files[1] == files[0] + ".sha256"
    reference = _epoch(first)
    CALLS.clear()
    second = tfd.ImageFolder(big_tree, loader=counting_loader).cache(str(where))  # a "later run"
    assert _same(_epoch(second), reference) and _same(_epoch(second), reference)
    assert CALLS == []  # no image file opened by the second run
    assert sorted(os.listdir(where)) == files


def test_cache_serves_workers_without_touching_the_images(big_tree, tmp_path):
    """Garbage in every image (same size, same mtime): the fingerprint cannot tell, and the
    cached epoch still delivers the original pixels, so no worker decoded a file."""
    where = str(tmp_path / "cache")
    reference = _epoch(tfd.ImageFolder(big_tree).cache(where))
    for path in big_tree.rglob("*.png"):
        st = path.stat()
        path.write_bytes(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    later = tfd.ImageFolder(big_tree).cache(where)
    assert _same(_epoch(later, workers=2), reference)
    with pytest.raises(tfd.DataError, match="cannot be decoded"):
        tfd.ImageFolder(big_tree)[0]  # the source itself is unreadable now


def test_changed_source_rebuilds_the_cache(big_tree, tmp_path):
    where = tmp_path / "cache"
    old = tfd.ImageFolder(big_tree).cache(str(where))
    old_file = old.path
    target = big_tree / "b" / "0010.png"
    from .files_helpers import Image, tagged_pixels

    Image.fromarray(tagged_pixels(999)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    new = tfd.ImageFolder(big_tree).cache(str(where))
    name = os.path.basename(new.path)
    assert new.path != old_file and sorted(os.listdir(where)) == [name, name + ".sha256"]
    assert ids_of_images(new[10][0][None]) == [999]


def test_cache_file_name_and_atomic_write(big_tree, tmp_path):
    path = tmp_path / "sub" / "imgs.arrow"
    with pytest.raises(OSError, match="disk on fire"):  # the loader's own error, as in torchvision
        tfd.ImageFolder(big_tree, loader=failing_loader).cache(str(path))
    assert not path.exists() and os.listdir(path.parent) == []  # no half-written cache
    cached = tfd.ImageFolder(big_tree).cache(str(path))
    assert cached.path == str(path) and path.exists()
    mtime = path.stat().st_mtime_ns
    assert tfd.ImageFolder(big_tree).cache(str(path)).path == str(path)
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    fewer = tfd.ImageFolder(big_tree, is_valid_file=lambda p: not p.endswith("0003.png"))
    assert len(fewer.cache(str(path))) == 22 and path.stat().st_mtime_ns != mtime  # rebuilt
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(tfd.ConfigError, match=r"not an \.arrow cache"):
        tfd.ImageFolder(big_tree).cache(str(tmp_path / "plain.txt"))


@pytest.mark.parametrize("where", ["memory", "file"])
def test_cache_pickles_into_spawn_workers(big_tree, tmp_path, where):
    src = tfd.ImageFolder(big_tree)
    cached = src.cache("memory" if where == "memory" else str(tmp_path / "c"))
    state = cached.__getstate__()
    assert (state["_table"] is None) == (where == "file")  # a file cache crosses as its path
    loader = tfd.DataLoader(cached, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    ids = [i for x, _ in loader for i in ids_of_images(x)]
    assert sorted(ids) == list(range(23))


def test_skipped_files_stay_skipped_in_the_cache(big_tree, tmp_path):
    (big_tree / "a" / "0002.png").write_bytes(b"corrupt")
    with pytest.raises(tfd.DataError, match=r"0002\.png"):
        tfd.ImageFolder(big_tree).cache("memory")
    src = tfd.ImageFolder(big_tree, on_error="skip")
    for where in ("memory", str(tmp_path / "c")):
        cached = src.cache(where)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ids = [i for x, _ in tfd.DataLoader(cached, batch_size=4) for i in ids_of_images(x)]
            with pytest.raises(tfd.DataError, match="leaves it out"):
                cached[2]
        assert sorted(ids) == [i for i in range(23) if i != 2]
        assert cached.num_skipped == 1 and cached.skipped[0].index == 2
    strict = tfd.ImageFolder(big_tree).cache(str(tmp_path / "c"))  # same files: cache reused
    with pytest.raises(tfd.DataError, match=r"0002\.png.*on_error='skip'"):
        strict.__getitems__([1, 2])


def test_any_map_dataset_memory_and_sqlite(tmp_path):
    data = {"id": np.arange(50), "x": np.linspace(0, 1, 50), "name": [f"n{i}" for i in range(50)]}
    mem = tfd.MemoryDataset(data)
    for where in ("memory", str(tmp_path / "m")):
        cached = mem.cache(where)
        assert cached[7] == mem[7]
        got = [b["id"].tolist() for b in tfd.DataLoader(cached, batch_size=8, shuffle=True)]
        assert got == [b["id"].tolist() for b in tfd.DataLoader(mem, batch_size=8, shuffle=True)]
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL, label INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, i / 10, i % 2) for i in range(40)])
    try:
        sql = tfd.SQLDataset(f"sqlite:///{db}", table="t", key="id", features=["v"], target="label")
    except (ImportError, AttributeError) as exc:  # pragma: no cover - SQL source not built yet
        pytest.skip(f"SQLDataset unavailable: {exc}")
    for where in ("memory", str(tmp_path / "s")):
        cached = sql.cache(where)
        x1, y1 = next(iter(tfd.DataLoader(sql, batch_size=40)))
        x2, y2 = next(iter(tfd.DataLoader(cached, batch_size=40, num_workers=2)))
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert sorted(os.listdir(tmp_path / "s"))[0].endswith(".arrow")


def test_mnist_cache_and_loader_resume(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", n_train=40)
    src = tfd.MNIST(tmp_path)
    cached = src.cache("memory")
    assert torch.equal(cached[11][0], src[11][0]) and cached.fingerprint() == src.fingerprint()
    loader = tfd.DataLoader(cached, batch_size=6, shuffle=True)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    resumed = tfd.DataLoader(src, batch_size=6, shuffle=True)
    resumed.load_state_dict(state)  # a checkpoint of the cache resumes on the source
    rest = [x[:, 0, 0, 0].tolist() for x, _ in resumed]
    assert rest == [
        x[:, 0, 0, 0].tolist() for x, _ in list(tfd.DataLoader(src, batch_size=6, shuffle=True))[1:]
    ]


def test_streams_cannot_be_cached():
    with pytest.raises(tfd.ConfigError, match="only map-style"):
        cache_dataset(tfd.MemoryStream({"a": np.arange(3)}), "memory")
    with pytest.raises(tfd.ConfigError, match="chunk_rows"):
        cache_dataset(tfd.MemoryDataset({"a": np.arange(3)}), "memory", chunk_rows=0)


def test_empty_dataset_and_small_chunks(tmp_path):
    empty = tfd.MemoryDataset({"a": pa.array([], pa.int64())})
    assert len(empty.cache("memory")) == 0 and len(empty.cache(str(tmp_path / "e"))) == 0
    mem = tfd.MemoryDataset({"a": np.arange(10)})
    cached = cache_dataset(mem, str(tmp_path / "small"), chunk_rows=3)
    assert [cached[i]["a"] for i in range(10)] == list(range(10))


def test_gather_over_many_chunks_equals_arrow_take():
    from tensorfeed.cache import _Gather

    rng = np.random.default_rng(0)
    batches = []
    for b, n in enumerate([5, 1, 7, 4]):
        uniform = [bytes([b, i]) * 3 for i in range(n)]
        ragged = [bytes(range(i + b)) for i in range(n)]
        batches.append(
            pa.record_batch(
                {
                    "uniform": pa.array(uniform, pa.large_binary()),
                    "ragged": pa.array(ragged, pa.large_binary()),
                    "shape": pa.array([[b, i] for i in range(n)], pa.list_(pa.int32())),
                    "name": pa.array([None if i == 2 else f"{b}-{i}" for i in range(n)]),
                }
            )
        )
    table = pa.Table.from_batches(batches)
    gather = _Gather(table)
    assert gather.widths[0] == [6, 6, 6, 6] and gather.widths[1] == [None, 1, None, None]
    for idx in (rng.permutation(17), np.array([3, 3, 16, 0]), np.array([6]), np.arange(5, 12)):
        assert gather.take(idx).equals(
            table.take(pa.array(idx)).replace_schema_metadata({b"tensorfeed.owned": b"1"})
        )
    single = _Gather(table.combine_chunks())
    assert single.take(np.array([16, 0])).column("uniform").to_pylist() == [
        bytes([3, 3]) * 3,
        bytes([0, 0]) * 3,
    ]


def test_gather_matches_arrow_take_across_chunks_nulls_and_types():
    """The cache's gather (numpy for null-free numbers, Arrow for the rest) is Arrow's take."""
    from tensorfeed.cache import _Gather

    schema = pa.schema(
        [("i", pa.int32()), ("f", pa.float64()), ("u", pa.uint8()), ("s", pa.string())]
    )
    a = pa.table(
        {"i": [1, 2, 3], "f": [0.5, None, 1.5], "u": [7, 8, 9], "s": ["a", None, "c"]}, schema
    )
    b = pa.table(
        {"i": [4, 5, 6], "f": [2.5, 3.5, 4.5], "u": [1, 2, 3], "s": ["d", "e", "f"]}, schema
    )
    table = pa.concat_tables([a, b])  # two chunks: NULLs in the first only
    gather = _Gather(table)
    for idx in ([4, 0, 5, 2, 3, 1], [5, 3], [1, 1, 0], []):
        rows = np.array(idx, dtype=np.int64)
        got = gather.take(rows)
        assert got.schema.remove_metadata() == schema
        assert got.to_pylist() == table.take(rows).to_pylist()
    single = _Gather(b.combine_chunks())
    assert single.take(np.array([2, 0])).column("i").to_pylist() == [6, 4]
