"""The storage of dataset caches: a map-style dataset's fetched rows kept in RAM or in a
memory-mapped Arrow file, and gathered from there batch by batch (``_Gather``). The dataset a
cache serves is ``tensorfeed.dataset.CachedDataset``, built by ``ds.cache()`` / ``cache_dataset``.

NOTE [ Dataset caches ]
``ds.cache("memory")`` / ``ds.cache(path)`` read every row of ``ds`` once through its own
``_fetch`` (for image sources: decoded pixels, see NOTE [ Image rows ]) and keep that Arrow table.
The cached dataset has the same length and indices, and turns fetched rows into samples with the
*source's* ``_batch``, so its samples are exactly the source's (transforms still run per access).

* ``"memory"``: one Arrow table whose columns are single contiguous buffers. There are no
  per-row Python objects, so fork workers share the pages without copy-on-read growth
  (pytorch#13246); a spawn worker receives a pickled copy. Lives as long as the dataset.
* a path: an Arrow IPC file, written once (to a temporary name, then renamed: a crash never
  leaves a half cache behind) and memory-mapped, so every worker and every later run shares one
  copy through the page cache. The file records ``ds.fingerprint()`` (for files: their paths,
  sizes and modification times; for SQL: the query and credential-free URL) and is reused only
  while the fingerprint and the row count match; otherwise it is rebuilt. ``path`` is a
  directory (the file is named after the dataset and its fingerprint, older caches of the same
  dataset there are removed) or a file name ending in ``.arrow``.

A cache file holds data only: Arrow columns, read back without running anything. A source whose
rows would hold Python objects (a loader returning them: pickled in memory) refuses a file
cache (``_refuse_file_cache``), and a file whose rows hold one anyway is refused when opened
(``_check_cached_rows``). Next to the file, ``<file>.sha256`` holds its SHA-256: a cache that no
longer matches it (rewritten, truncated) is a DataError naming the file when ``ds.cache(path)``
finds it, never silently read; ``ds.cache(path, rebuild=True)`` builds it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from .errors import ConfigError, DataError, NotFoundError

CACHE_FORMAT = "2"  # 2: written with a <file>.sha256 beside it
_META_FP = b"tensorfeed.fingerprint"
_META_ROWS = b"tensorfeed.rows"
_META_FORMAT = b"tensorfeed.cache_format"
_META_SOURCE = b"tensorfeed.source"
_TARGET_CHUNK_BYTES = 64 << 20  # rows fetched from the source at a time
# Record batches of a cache file: large, so a batch's gather seldom spans several of them.
_FILE_BATCH_BYTES = 1 << 30
# Schema metadata of a fetched table whose buffers nothing else references (see _Gather).
OWNED = {b"tensorfeed.owned": b"1"}


class Cacheable(Protocol):
    """What a cache reads from a dataset: the map-style contract of ``tensorfeed.dataset``
    (every ``MapDataset`` has it). Typed here so the storage needs nothing above it."""

    def __len__(self) -> int: ...

    def _fetch(self, indices: np.ndarray) -> pa.Table: ...

    def describe(self) -> str: ...

    def fingerprint(self) -> str: ...


# --------------------------------------------------------------------------- gathering rows


class _Gather:
    """``table.take(indices)`` for a cached table, without its costs on big tables.

    Arrow's take on a column of several chunks first concatenates the whole column (for a
    memory-mapped cache file, one copy of everything per batch), so rows are gathered chunk by
    chunk here. Binary columns whose values all have the same width (images of one shape) and
    integer/float columns without NULLs are gathered with numpy fancy indexing straight into the
    batch's buffer (for 1024 rows of a million: ~10 us a column, where ``pyarrow.compute.take``
    costs ~45 us, mostly per-call overhead).
    """

    def __init__(self, table: pa.Table) -> None:
        self.schema = table.schema
        self.batches = table.to_batches() or [pa.RecordBatch.from_pylist([], table.schema)]
        sizes = [b.num_rows for b in self.batches]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.widths = [
            [_uniform_width(b.column(j)) for b in self.batches] for j in range(table.num_columns)
        ]
        # numpy views of null-free integer/float columns (None where a batch has NULLs)
        self.plain = [
            [_plain_values(b.column(j)) for b in self.batches] for j in range(table.num_columns)
        ]

    def take(self, indices: np.ndarray) -> pa.Table:
        idx = np.asarray(indices, dtype=np.int64)
        groups: list[tuple[int, np.ndarray, np.ndarray | None]]
        if len(self.batches) == 1:
            groups = [(0, idx, None)]
        else:
            which = np.searchsorted(self.starts, idx, side="right") - 1
            order = np.argsort(which, kind="stable")
            cuts = np.flatnonzero(np.diff(which[order])) + 1
            groups = [
                (int(which[g[0]]), idx[g] - self.starts[which[g[0]]], g)
                for g in np.split(order, cuts)
                if len(g)
            ]
        cols = [self._column(j, groups, len(idx)) for j in range(len(self.schema))]
        # the gathered buffers belong to this batch alone: consumers may use them in place
        return pa.Table.from_arrays(cols, schema=self.schema).replace_schema_metadata(OWNED)

    def _column(self, j: int, groups: list[Any], n: int) -> pa.Array:
        if not groups:  # no rows asked for
            return pa.array([], type=self.schema.field(j).type)
        plain = self.plain[j]
        if all(plain[b] is not None for b, _, _ in groups):
            if len(groups) == 1 and groups[0][2] is None:
                b, local, _ = groups[0]
                values = np.take(plain[b], local)
            else:
                values = np.empty(n, dtype=plain[groups[0][0]].dtype)
                for b, local, pos in groups:
                    values[pos] = plain[b][local]
            typ = self.schema.field(j).type
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(values)])
        widths = {self.widths[j][b] for b, _, _ in groups}
        if len(widths) == 1 and None not in widths:
            width = int(widths.pop())
            if len(groups) == 1 and groups[0][2] is None:
                b, local, _ = groups[0]
                out = _values(self.batches[b].column(j), width)[local]
            else:
                out = np.empty((n, width), dtype=np.uint8)
                for b, local, pos in groups:
                    out[pos] = _values(self.batches[b].column(j), width)[local]
            offsets = np.arange(n + 1, dtype=np.int64) * width
            return pa.LargeBinaryArray.from_buffers(
                pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)]
            )
        if len(groups) == 1 and groups[0][2] is None:
            b, local, _ = groups[0]
            return self.batches[b].column(j).take(pa.array(local))
        pieces = [self.batches[b].column(j).take(pa.array(local)) for b, local, _ in groups]
        order = np.concatenate([pos for _, _, pos in groups])
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        return pa.concat_arrays(pieces).take(pa.array(inverse))


def _plain_values(arr: pa.Array) -> np.ndarray | None:
    """A zero-copy numpy view of a null-free integer or floating-point array, else None."""
    t = arr.type
    if arr.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return None
    return arr.to_numpy(zero_copy_only=True)


def _uniform_width(arr: pa.Array) -> int | None:
    """The common byte width of a null-free large_binary array's values, else None."""
    if not pa.types.is_large_binary(arr.type) or arr.null_count or len(arr) == 0:
        return None
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8
    )
    widths = np.diff(offsets)
    w = int(widths[0])
    return w if w > 0 and bool((widths == w).all()) else None


def _values(arr: pa.Array, width: int) -> np.ndarray:
    """``[len, width]`` uint8 view of a uniform-width large_binary array."""
    bufs = arr.buffers()
    first = int(np.frombuffer(bufs[1], dtype=np.int64, count=1, offset=arr.offset * 8)[0])
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    return data[first : first + len(arr) * width].reshape(len(arr), width)


# --------------------------------------------------------------------------- reading the source


def _chunks(
    dataset: Cacheable, chunk_rows: int | None, progress: bool | None
) -> Iterator[pa.Table]:
    """The source's rows in index order, fetched in chunks of about 64 MiB."""
    from tqdm import tqdm

    n = len(dataset)
    rows = chunk_rows or 256
    start = 0
    with tqdm(
        total=n,
        desc=f"caching {dataset.describe()}",
        unit="rows",
        disable=(None if progress is None else not progress),
        leave=False,
    ) as bar:
        while start < n:
            stop = min(n, start + rows)
            chunk = dataset._fetch(np.arange(start, stop, dtype=np.int64))
            if chunk.num_rows != stop - start:
                raise DataError(
                    f"{dataset.describe()} returned {chunk.num_rows} rows for indices "
                    f"{start}..{stop - 1}; a cache needs exactly one row per index"
                )
            yield chunk
            bar.update(stop - start)
            if chunk_rows is None and chunk.num_rows:
                per_row = max(1, chunk.nbytes // chunk.num_rows)
                rows = int(min(65536, max(256, _TARGET_CHUNK_BYTES // per_row)))
            start = stop


def _empty(dataset: Cacheable) -> pa.Table:
    return dataset._fetch(np.empty(0, dtype=np.int64))


def _read_all(dataset: Cacheable, chunk_rows: int | None, progress: bool | None) -> pa.Table:
    parts = list(_chunks(dataset, chunk_rows, progress)) or [_empty(dataset)]
    table = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
    return _without_owned(table.combine_chunks())


def _without_owned(table: pa.Table) -> pa.Table:
    """A stored table is shared by every batch: drop a fetch's "owned" mark from its schema."""
    meta = dict(table.schema.metadata or {})
    if meta.pop(b"tensorfeed.owned", None) is None:
        return table
    return table.replace_schema_metadata(meta or None)


# --------------------------------------------------------------------------- the cache file


def _slug(dataset: Cacheable) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", type(dataset).__name__).strip("-").lower() or "dataset"
    digest = hashlib.sha256(dataset.describe().encode()).hexdigest()[:8]
    return f"tensorfeed-{name}-{digest}"


def _cache_file(dataset: Cacheable, where: str) -> str:
    where = os.path.expanduser(where)
    if where.endswith((".arrow", ".ipc", ".feather")):
        parent = os.path.dirname(os.path.abspath(where))
        os.makedirs(parent, exist_ok=True)
        return where
    if os.path.exists(where) and not os.path.isdir(where):
        raise ConfigError(
            f"cache location {where} is a file that is not an .arrow cache; give a directory "
            "or a path ending in .arrow"
        )
    os.makedirs(where, exist_ok=True)
    return os.path.join(where, f"{_slug(dataset)}-{dataset.fingerprint()}.arrow")


def _sum_file(path: str) -> str:
    return path + ".sha256"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rebuild_hint(path: str) -> str:
    return f"delete it, or build it again with ds.cache({path!r}, rebuild=True)"


def _format_of(path: str) -> str | None:
    """The cache format a file's schema says it has (None: not a readable cache file)."""
    try:
        with pa.memory_map(path, "r") as mm:
            meta = pa.ipc.open_file(mm).schema.metadata or {}
        return meta.get(_META_FORMAT, b"").decode()
    except (OSError, pa.ArrowException, UnicodeDecodeError):
        return None


def _valid_cache(path: str, fingerprint: str, rows: int) -> bool:
    """Whether the cache file at ``path`` is this dataset's and intact: False if it is absent or
    another dataset's (then it is rebuilt), a DataError if it was changed since it was written."""
    if not os.path.isfile(path):
        return False
    try:
        with open(_sum_file(path)) as f:
            expected = f.read().strip()
    except FileNotFoundError:
        if _format_of(path) not in (None, CACHE_FORMAT):
            return False  # an older tensorfeed's cache (no checksum yet): rebuilt
        raise DataError(
            f"cache file {path} has no checksum file {_sum_file(path)} next to it (removed, "
            f"or the file was written by something else): {_rebuild_hint(path)}"
        ) from None
    if _sha256(path) != expected:
        raise DataError(
            f"cache file {path} does not match its checksum in {_sum_file(path)}: it was "
            f"rewritten or truncated since it was written; {_rebuild_hint(path)}"
        )
    try:
        with pa.memory_map(path, "r") as mm:
            reader = pa.ipc.open_file(mm)
            meta = reader.schema.metadata or {}
            for i in range(reader.num_record_batches):  # offsets in bounds: no read strays
                reader.get_batch(i).validate(full=True)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(f"cache file {path} is not a readable Arrow file ({exc})") from exc
    return (
        meta.get(_META_FP) == fingerprint.encode()
        and meta.get(_META_ROWS) == str(rows).encode()
        and meta.get(_META_FORMAT) == CACHE_FORMAT.encode()
    )


def _write_cache(
    dataset: Cacheable,
    path: str,
    fingerprint: str,
    chunk_rows: int | None,
    progress: bool | None,
) -> None:
    meta = {
        _META_FP: fingerprint.encode(),
        _META_ROWS: str(len(dataset)).encode(),
        _META_FORMAT: CACHE_FORMAT.encode(),
        _META_SOURCE: dataset.describe().encode(),
    }
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        writer = None
        schema = None
        pending: list[pa.Table] = []
        with pa.OSFile(tmp, "wb") as sink:
            refuse = getattr(dataset, "_refuse_file_cache", None)
            for chunk in _chunks(dataset, chunk_rows, progress):
                if callable(refuse):
                    refuse(chunk)
                if writer is None:
                    first = _without_owned(chunk).schema
                    schema = first.with_metadata({**(first.metadata or {}), **meta})
                    writer = pa.ipc.new_file(sink, schema)
                pending.append(_conform(chunk, schema, dataset))
                if sum(t.nbytes for t in pending) >= _FILE_BATCH_BYTES:
                    _write_batch(writer, pending)
                    pending = []
            if writer is None:
                empty = _without_owned(_empty(dataset))
                writer = pa.ipc.new_file(
                    sink, empty.schema.with_metadata({**(empty.schema.metadata or {}), **meta})
                )
            if pending:
                _write_batch(writer, pending)
            writer.close()
        _fsync(tmp)
        with open(tmp + ".sha256", "w") as f:
            f.write(_sha256(tmp) + "\n")
        os.replace(tmp + ".sha256", _sum_file(path))
        os.replace(tmp, path)  # atomic: readers see the old cache or the complete new one
    except BaseException:
        for leftover in (tmp, tmp + ".sha256"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        raise


def _write_batch(writer: Any, tables: list[pa.Table]) -> None:
    """Few, large record batches: a gather then touches few chunks (see _Gather)."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    writer.write_table(table.combine_chunks(), max_chunksize=None)


def _conform(chunk: pa.Table, schema: Any, dataset: Cacheable) -> pa.Table:
    plain = schema.remove_metadata()
    got = chunk.schema.remove_metadata()
    if got.equals(plain):
        return chunk.replace_schema_metadata(schema.metadata)
    try:
        return chunk.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise DataError(
            f"{dataset.describe()} returned rows with schema {got} after rows with {plain}; "
            f"they cannot be cached in one file ({exc})"
        ) from exc


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_cache(path: str) -> pa.Table:
    try:
        return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"cache file {path} is gone (deleted after the cache was built?)"
        ) from exc
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataError(f"cache file {path} is not a readable Arrow file ({exc})") from exc


def _remove_stale_siblings(path: str) -> None:
    """Older caches of the same dataset in the same directory (another fingerprint)."""
    folder, name = os.path.split(path)
    m = re.match(r"(tensorfeed-.+-[0-9a-f]{8})-[0-9a-f]+\.arrow$", name)
    if not m:
        return
    prefix = m.group(1) + "-"
    for other in os.listdir(folder or "."):
        if other != name and other.startswith(prefix) and other.endswith(".arrow"):
            for stale in (other, other + ".sha256"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, stale))
