"""File inputs that cannot hurt the reader (#13): a cache file never runs code and is checked,
IDX headers are checked before any body is read or decompressed, every error names the file
(and an annotation file's row)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

import tensorfeed as tfd

from .files_helpers import Image, tagged_pixels, write_idx, write_mnist


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "t"
    for i in range(6):
        d = root / ("a" if i < 3 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tagged_pixels(i)).save(d / f"{i}.png")
    return root


# --------------------------------------------------------------------------- cache files


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _cache_file(cached) -> str:
    assert cached.path is not None and os.path.exists(cached.path + ".sha256")
    return cached.path


def test_a_rewritten_or_truncated_cache_is_named_and_rebuilt_on_request(tree, tmp_path):
    where = tmp_path / "cache"
    path = _cache_file(tfd.ImageFolder(tree).cache(where))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF  # one byte of pixels changed
    _write(path, bytes(data))
    with pytest.raises(tfd.DataError, match=r"cache file .* does not match its checksum.*rebuild"):
        tfd.ImageFolder(tree).cache(where)
    _write(path, bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(tfd.DataError, match="does not match its checksum"):
        tfd.ImageFolder(tree).cache(where)
    rebuilt = tfd.ImageFolder(tree).cache(where, rebuild=True)
    assert rebuilt.path == path and rebuilt[4][1] == 1
    assert tfd.ImageFolder(tree).cache(where).path == path  # intact again: reused
    os.remove(path + ".sha256")
    with pytest.raises(tfd.DataError, match="has no checksum file"):
        tfd.ImageFolder(tree).cache(where)
    # a cache an older tensorfeed wrote (format 1, no checksum yet) is simply rebuilt
    old = pa.table({"x": [1]}).replace_schema_metadata({b"tensorfeed.cache_format": b"1"})
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, old.schema) as writer:
        writer.write_table(old)
    again = tfd.ImageFolder(tree).cache(where)
    assert again.path == path and os.path.exists(path + ".sha256") and again[4][1] == 1


class _Marker:
    """Unpickling it creates a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_cache_file_with_pickled_rows_is_refused_and_never_unpickled(tree, tmp_path):
    """Someone rewrites the cache with a row of kind 3 (pickle) holding code, and writes a
    matching checksum too: the rows are refused when opened, the code never runs."""
    where = tmp_path / "cache"
    path = _cache_file(tfd.ImageFolder(tree).cache(where))
    with open(path, "rb") as f:  # into memory: the file is rewritten below
        table = pa.ipc.open_file(pa.BufferReader(f.read())).read_all()
    marker = tmp_path / "code-ran"
    evil = pickle.dumps(_Marker(str(marker)))
    images = table.column("image").to_pylist()
    images[0] = evil
    kinds = table.column("kind").to_numpy().copy()
    kinds[0] = 3
    table = table.set_column(0, "image", pa.array(images, pa.large_binary()))
    table = table.set_column(table.column_names.index("kind"), "kind", pa.array(kinds))
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    from tensorfeed.cache import _sha256

    _write(path + ".sha256", (_sha256(path) + "\n").encode())
    cached = tfd.ImageFolder(tree).cache(where)
    with pytest.raises(tfd.DataError, match=r"holds pickled objects.*tampered"):
        cached[0]
    worker_copy = pickle.loads(pickle.dumps(cached))  # what a worker gets: it maps the file
    with pytest.raises(tfd.DataError, match="holds pickled objects"):
        worker_copy.__getitems__([1, 0])
    assert not marker.exists()


def test_a_loader_returning_objects_caches_in_memory_only(tree, tmp_path):
    ds = tfd.ImageFolder(tree, loader=lambda p: {"name": os.path.basename(p)})
    assert ds.cache("memory")[2] == ({"name": "2.png"}, 0)
    with pytest.raises(tfd.ConfigError, match=r"cannot be cached in a file.*never pickles"):
        ds.cache(tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


# --------------------------------------------------------------------------- IDX files


def _idx_header(magic: int, dims: list[int]) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)


def _mnist_dir(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw, n_train=10, n_test=4)
    return raw


def test_idx_dimensions_that_overflow_64_bits_are_named(tmp_path):
    raw = _mnist_dir(tmp_path)
    body = _idx_header(0x803, [2**32 - 1, 2**32 - 1, 2**32 - 1]) + b"\0" * 32  # 48 bytes
    (raw / "train-images-idx3-ubyte").write_bytes(body)
    with pytest.raises(
        tfd.DataError, match=r"train-images-idx3-ubyte has 48 bytes but its header .* says \d{29}"
    ):
        tfd.MNIST(tmp_path)


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path):
    raw = _mnist_dir(tmp_path)
    (raw / "train-images-idx3-ubyte").unlink()
    bomb = raw / "train-images-idx3-ubyte.gz"
    # 10 images of 28 x 28 in the header, then 48 MB of zeros (a ~50 KB file)
    with gzip.open(bomb, "wb") as f:
        f.write(_idx_header(0x803, [10, 28, 28]))
        zeros = b"\0" * (1 << 20)
        for _ in range(48):
            f.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(tfd.DataError, match=r"holds more than the 7840 bytes its header"):
            tfd.MNIST(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes allocated for a 7,840-byte array"
    # a header claiming more than a gzip file of that size can hold is refused unread
    with gzip.open(bomb, "wb") as f:
        f.write(_idx_header(0x803, [2**31, 2**16, 2**8]) + b"\0" * 100)
    with pytest.raises(tfd.DataError, match=r"more than a .*-byte gzip file can hold"):
        tfd.MNIST(tmp_path)
    with gzip.open(bomb, "wb") as f:  # truncated inside the body
        f.write(_idx_header(0x803, [10, 28, 28]) + b"\0" * 100)
    with pytest.raises(tfd.DataError, match=r"ends after 100 of the 7840 bytes"):
        tfd.MNIST(tmp_path)


def test_gzipped_and_plain_idx_files_still_read_the_same(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    for gz in (False, True):
        raw = tmp_path / ("gz" if gz else "plain") / "MNIST" / "raw"
        for split in ("train", "t10k"):
            write_idx(raw / f"{split}-images-idx3-ubyte", images, gz=gz)
            write_idx(raw / f"{split}-labels-idx1-ubyte", labels, gz=gz)
        ds = tfd.MNIST(raw.parent.parent)
        assert np.array_equal(ds.data.numpy(), images) and ds.targets.tolist() == list(range(7))


# --------------------------------------------------------------------------- annotations


def test_an_annotation_path_with_a_nul_byte_names_its_row(tree, tmp_path):
    table = pa.table({"file": ["a/0.png", "a/1\x00.png"], "y": [0, 1]})
    with pytest.raises(tfd.DataError, match=r"row 1 of .*: the path .* holds a NUL byte"):
        tfd.AnnotationsDataset(table, tree, "file", "y")
