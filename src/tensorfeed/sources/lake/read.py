"""Reading one unit (a row group, or a whole CSV/JSON file) of a pinned lake plan.

Every read is checked against the identity pinned for the epoch *after* the bytes were read, so
a read that could have seen a replaced object is always followed by a check that sees the
replacement (see ``check_unchanged``). Open Parquet files (and their parsed footers) are kept per
process, keyed by pid, so nothing opened in a parent is used in a forked DataLoader worker.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import DataError
from .formats import _looks_like_io, describe_corrupt, read_text
from .fs import FileEntry, check_unchanged, current_identity, etag_of, is_transient, retrying, scrub
from .plan import LakeSpec, Plan
from .pruning import partition_columns
from .schema import cast_to

# (pid, thread, path, size, mtime) -> ParquetFile: a parsed footer is reused by the thread that
# opened it (a reader is not shared between threads), never by a forked child.
_OPEN: OrderedDict[tuple[int, int, str, int, int | None], Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()
_MAX_OPEN = 64


def _parquet_file(fs: Any, entry: FileEntry, spec: LakeSpec) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` for the pinned file, opened once per process."""
    import pyarrow.parquet as pq

    key = (os.getpid(), threading.get_ident(), entry.path, entry.size, entry.mtime_ns)
    with _OPEN_LOCK:
        pf = _OPEN.get(key)
        if pf is not None:
            _OPEN.move_to_end(key)
            return pf
    s3 = spec.s3_or_none()
    handle = retrying(lambda: fs.open_input_file(entry.path), f"opening {entry.display}", s3)
    now = entry.with_etag(etag_of(handle)) if entry.scheme == "s3" else None
    if now is not None:
        check_unchanged(entry, FileEntry(entry.path, handle.size(), entry.mtime_ns, "s3", now.etag))
    elif handle.size() != entry.size:
        check_unchanged(entry, current_identity(fs, entry, s3))
    try:
        pf = pq.ParquetFile(handle, pre_buffer=entry.scheme == "s3")
    except OSError as exc:
        if _looks_like_io(exc):
            raise
        raise describe_corrupt(entry, exc, s3) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise describe_corrupt(entry, exc, s3) from None
    with _OPEN_LOCK:
        _OPEN[key] = pf
        while len(_OPEN) > _MAX_OPEN:
            _OPEN.popitem(last=False)
    return pf


def forget_open_files() -> None:
    """Drop this thread's open files (after a network error a connection may be stale)."""
    me = (os.getpid(), threading.get_ident())
    with _OPEN_LOCK:
        for key in [k for k in _OPEN if k[:2] == me]:
            del _OPEN[key]


def _decode(fs: Any, spec: LakeSpec, plan: Plan, u: int, columns: Sequence[str]) -> pa.Table:
    """The raw rows of unit ``u`` (data columns only, file types), with errors named."""
    fi, rg = int(plan.unit_file[u]), int(plan.unit_rg[u])
    entry = plan.files[fi]
    s3 = spec.s3_or_none()

    def attempt() -> pa.Table:
        try:
            if rg < 0:
                handle = fs.open_input_file(entry.path)
                table = read_text(handle, spec.format)
                return table.select(list(columns)) if columns is not None else table
            pf = _parquet_file(fs, entry, spec)
            return pf.read_row_group(rg, columns=list(columns), use_threads=True)
        except OSError as exc:
            if _looks_like_io(exc) or is_transient(exc):
                forget_open_files()
                raise
            raise _Corrupt(exc) from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise _Corrupt(exc) from None

    try:
        table = retrying(attempt, f"reading {plan.unit_name(u)}", s3)
    except _Corrupt as bad:
        # a file replaced under us reads as garbage: say so rather than "corrupt"
        check_unchanged(entry, current_identity(fs, entry, s3))
        raise describe_corrupt(entry, bad.exc, s3, rg) from None
    return table


class _Corrupt(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


def read_unit_table(
    fs: Any,
    spec: LakeSpec,
    plan: Plan,
    u: int,
    columns: Sequence[str],
    *,
    validate: bool = True,
) -> pa.Table:
    """Unit ``u`` with ``columns`` (data columns, unified types) then every partition column,
    all physical rows (no row filter applied). Checked against the pinned identity."""
    fi = int(plan.unit_file[u])
    entry = plan.files[fi]
    data = _decode(fs, spec, plan, u, columns)
    if validate:
        check_unchanged(entry, current_identity(fs, entry, spec.s3_or_none()))
    if data.num_rows != int(plan.unit_total[u]):
        check_unchanged(entry, current_identity(fs, entry, spec.s3_or_none()))
        raise DataError(
            f"{plan.unit_name(u)} has {data.num_rows} rows but its metadata says "
            f"{int(plan.unit_total[u])}; the file is corrupt"
        )
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise DataError(f"{entry.display} has no column {missing[0]!r}")
    data = cast_to(data, pa.schema([plan.data_schema.field(c) for c in columns]))
    n = data.num_rows
    for f, col in zip(
        plan.part_schema, partition_columns(plan.part_schema, plan.part_values[fi], n)
    ):
        data = data.append_column(f, col)
    return data


def check_nulls(
    table: pa.Table,
    columns: Sequence[str],
    plan: Plan,
    u: int,
    rows: np.ndarray | None,
    first_row: int = 0,
) -> None:
    """A NULL in a column that becomes a tensor: a DataError naming the file and the row."""
    import pyarrow.compute as pc

    for c in columns:
        col = table.column(c)
        if col.null_count and _becomes_tensor(col.type):
            i = int(pc.index(pc.is_null(col), True).as_py())
            phys = int(rows[first_row + i]) if rows is not None else first_row + i
            row_in_file = int(plan.unit_base[u]) + phys
            entry = plan.files[int(plan.unit_file[u])]
            rg = int(plan.unit_rg[u])
            where = f" (row group {rg}, row {phys} of it)" if rg >= 0 else ""
            raise DataError(
                f"column {c!r} is NULL at row {row_in_file} of {entry.display}{where}; fill or "
                "filter it in the lake (a NULL cannot become a tensor)"
            )


def _becomes_tensor(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return True
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
        or pa.types.is_temporal(t)
    )


# --------------------------------------------------------------------------- read-ahead


class ReadAhead:
    """Pull tables from ``source`` on a background thread, at most ``depth`` ahead.

    pyarrow releases the GIL while it fetches and decodes, so the next row group is read while
    the consumer converts the current one. Memory: ``depth`` extra tables.
    """

    _DONE = object()

    def __init__(self, source: Iterator[Any], depth: int = 1) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source = source
        self._t = threading.Thread(target=self._run, daemon=True, name="tensorfeed-lake-readahead")
        self._t.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                while not self._stop.is_set():
                    try:
                        self._q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put((True, self._DONE))
        except BaseException as exc:  # delivered to the consumer, raised there
            self._put((False, exc))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                ok, item = self._q.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break


def scrubbed(text: str, spec: LakeSpec) -> str:
    return scrub(text, spec.s3_or_none())
