"""Building the plan of an epoch from metadata: list, prune, read footers, index row groups.

NOTE [ How the lake index is built ]
1. List the files (sizes, mtimes; ETags once opened) and pin them: that list *is* the epoch.
2. Parse Hive partition values from the paths (``year=2024/region=EU``); types are inferred over
   all files (integers -> int32/int64, anything else -> string).
3. Prune files by partition values with ``pyarrow.dataset`` (no file is opened to do it).
4. Read the footers of the surviving Parquet files (in threads: on S3 these are round trips),
   unify their schemas (
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import DataError, NotFoundError
from .formats import FileFacts, read_facts
from .fs import FileEntry, list_files
from .manifest import check_versions, keep_pinned
from .plan import LakeSpec, Plan
from .pruning import (
    infer_partitions,
    normalize_filter,
    parse_hive,
    partition_columns,
    partition_expression,
    provisional_schema,
    referenced_columns,
    row_positions,
    validate_filter,
)
from .read import read_unit_table
from .schema import cast_to, unify_schemas

log = logging.getLogger("tensorfeed.lake")


class FactsCache:
    """File facts kept across a stream's epochs: a file listed again with the same size and
    mtime is not opened again."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, int, int | None], FileFacts] = {}

    def get(self, e: FileEntry) -> FileFacts | None:
        return self._d.get((e.path, e.size, e.mtime_ns))

    def put(self, f: FileFacts) -> None:
        e = f.entry
        self._d[(e.path, e.size, e.mtime_ns)] = f

    def retain(self, entries: Sequence[FileEntry]) -> None:
        live = {(e.path, e.size, e.mtime_ns) for e in entries}
        self._d = {k: v for k, v in self._d.items() if k in live}


class _Progress:
    """Progress of one pass of an index build (footers, then partial row groups): a tqdm bar on
    stderr when it is a terminal and the pass takes over a second or two, and ``tensorfeed.lake``
    log lines (every ``every`` seconds, and at the end) with files and row groups done and rate."""

    def __init__(self, what: str, total: int, unit: str, every: float = 10.0) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.done = self.row_groups = self.opened = 0
        self.t0 = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.bar: Any = None
        if total > 1:
            from tqdm import tqdm

            # disable=None: no bar unless stderr is a terminal; delay: none for a quick pass
            self.bar = tqdm(total=total, desc=what, unit=unit, disable=None, leave=False, delay=2)

    def step(self, row_groups: int, opened: bool = True) -> None:
        with self.lock:
            self.done += 1
            self.row_groups += row_groups
            self.opened += opened
            if self.bar is not None:
                self.bar.update(1)
            now = time.monotonic()
            if now - self.last >= self.every and self.done < self.total:
                self.last = now
                self._log(logging.INFO, "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        # a pass that opened nothing (every file's facts cached from an earlier epoch) is quiet
        self._log(logging.INFO if self.opened else logging.DEBUG, " done")

    def _log(self, level: int, state: str) -> None:
        if not log.isEnabledFor(level):
            return
        dt = time.monotonic() - self.t0
        groups = f", {self.row_groups} row groups" if self.unit == "file" else ""
        rate = self.done / dt if dt > 0 else 0.0
        log.log(
            level,
            f"{self.what}{state}: {self.done}/{self.total} {self.unit}s{groups} in {dt:.1f}s "
            f"({rate:,.0f} {self.unit}s/s)",
        )


def _pool_map(fn: Any, items: Sequence[Any], threads: int) -> list[Any]:
    if len(items) <= 1 or threads <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def build_plan(
    spec: LakeSpec,
    *,
    resolve_partial: bool,
    cache: FactsCache | None = None,
    epoch: int = 0,
    threads: int = 8,
    checkpoint: Any = None,
) -> tuple[Any, Plan]:
    """List, prune and index the lake (see NOTE [ How the lake index is built ]); with
    ``checkpoint`` (a checkpoint's manifest) only the files it names, unchanged."""
    fs, files = list_files(spec.locations, spec.format, spec.s3, spec.filesystem)
    if checkpoint is not None:
        files = keep_pinned(files, checkpoint, spec.shown)
    s3 = spec.s3_or_none()
    raw = (
        [parse_hive(f.path) for f in files] if spec.partitioning == "hive" else [{} for _ in files]
    )
    part_schema, part_values = infer_partitions(raw)
    pexprs = [partition_expression(part_schema, v) for v in part_values]
    expr, dnf_names = normalize_filter(spec.filter)

    def facts(i: int, keep: Sequence[str] = (), progress: _Progress | None = None) -> FileFacts:
        hit = cache.get(files[i]) if cache is not None else None
        if hit is not None:
            if progress is not None:
                progress.step(len(hit.rg_rows), opened=False)
            return hit
        f = read_facts(fs, files[i], spec, keep, pexprs[i], part_schema, stats_expr)
        if cache is not None:
            cache.put(f)
        if progress is not None:
            progress.step(len(f.rg_rows))
        return f

    # 3. prune by partition values, before opening anything
    survivors = list(range(len(files)))
    guess_refs: list[str] = []
    # row groups are pruned by statistics only when the filter reads data columns
    stats_expr = None
    if expr is not None:
        prov, guess_refs = provisional_schema(expr, part_schema)
        stats_expr = expr if (guess_refs or prov is None) else None
    if expr is not None and len(part_schema):
        if prov is None:  # the filter does not bind on stand-ins: learn the real types first
            first = facts(0)
            prov = pa.schema([*first.schema, *part_schema])
            _check_filter(spec, expr, prov, dnf_names)
        survivors = _prune_partitions(fs, files, part_values, pexprs, expr, prov)

    # 4. footers of the survivors (threads: round trips on S3)
    keep = tuple(guess_refs)
    progress = _Progress(f"indexing {spec.shown}", len(survivors), "file")
    try:
        surv_facts: list[FileFacts] = _pool_map(
            lambda i: facts(i, keep, progress), survivors, threads if s3 else 4
        )
    finally:
        progress.close()
    if cache is not None:
        cache.retain([files[i] for i in survivors])
    schema_facts = surv_facts or [facts(0, keep)]
    for f in schema_facts:
        _check_partition_clash(f, part_schema)
    first_full = pa.schema([*schema_facts[0].schema, *part_schema])
    wanted = _wanted_columns(spec)
    _check_columns(spec, first_full, wanted or [])
    filter_cols: list[str] = []
    if expr is not None:
        _check_filter(spec, expr, first_full, dnf_names)
        refs = referenced_columns(expr, first_full)
        filter_cols = [c for c in refs if c not in part_schema.names]
    unify_names = None
    if wanted is not None:
        unify_names = [c for c in wanted if c not in part_schema.names]
        unify_names += [c for c in filter_cols if c not in unify_names]
    data_schema = unify_schemas(
        [f.schema for f in schema_facts], [f.entry for f in schema_facts], unify_names
    )
    full = pa.schema([*data_schema, *part_schema])
    out_names = wanted if wanted is not None else full.names
    schema = pa.schema([full.field(n) for n in out_names])
    read_cols = tuple(n for n in out_names if n not in part_schema.names)
    row_filter = expr if filter_cols else None

    # 5. units, pruned by row-group statistics
    pinned = list(files)
    for i, f in zip(survivors, surv_facts):
        pinned[i] = f.entry
    if checkpoint is not None:
        check_versions([f.entry for f in surv_facts], checkpoint, spec.shown)
    units: list[tuple[int, int, int, int, bool]] = []  # file, rg, base, rows, partial
    for fi, f in zip(survivors, surv_facts):
        units.extend(_file_units(fi, f, row_filter))
    plan = _assemble(
        pinned,
        part_schema,
        part_values,
        data_schema,
        schema,
        read_cols,
        row_filter,
        tuple(filter_cols),
        units,
        epoch,
    )
    if resolve_partial and row_filter is not None:
        _resolve_partial(fs, spec, plan, dict(zip(survivors, surv_facts)), threads)
    elif not resolve_partial:
        for f in surv_facts:
            f.text_table = None
    return fs, plan


def _check_filter(spec: LakeSpec, expr: Any, schema: pa.Schema, dnf_names: Sequence[str]) -> None:
    for n in dnf_names:
        if n not in schema.names:
            raise NotFoundError(
                f"the filter names column {n!r}, which is not in the lake {spec.shown}; "
                f"available columns: {schema.names}"
            )
    validate_filter(expr, schema, spec.shown)


def _check_partition_clash(f: FileFacts, part_schema: pa.Schema) -> None:
    for name in part_schema.names:
        if name in f.schema.names:
            raise DataError(
                f"column {name!r} is both a Hive partition key in the path and a column inside "
                f"{f.entry.display}; rename one, or open the lake with partitioning=None"
            )


def _wanted_columns(spec: LakeSpec) -> list[str] | None:
    if spec.columns is None:
        return None
    cols = list(spec.columns)
    for n in spec.needed:
        if n not in cols:
            cols.append(n)
    return cols


def _check_columns(spec: LakeSpec, full: pa.Schema, wanted: Sequence[str]) -> None:
    for n in [*spec.needed, *wanted]:
        if n not in full.names:
            kind = "column" if n in (spec.columns or ()) else "column (a feature, target or key)"
            raise NotFoundError(
                f"{kind} {n!r} is not in the lake {spec.shown}; available columns: {full.names}"
            )


def _prune_partitions(
    fs: Any,
    files: list[FileEntry],
    part_values: list[tuple[Any, ...]],
    pexprs: list[Any],
    expr: Any,
    schema: pa.Schema,
) -> list[int]:
    import pyarrow.dataset as pads

    fmt = pads.ParquetFileFormat()
    frags = [
        fmt.make_fragment(f.path, fs, partition_expression=pe, file_size=f.size)
        for f, pe in zip(files, pexprs)
    ]
    dataset = pads.FileSystemDataset(frags, schema, fmt, fs)
    keep = {frag.path for frag in dataset.get_fragments(filter=expr)}
    return [i for i, f in enumerate(files) if f.path in keep]


def _file_units(fi: int, f: FileFacts, row_filter: Any) -> list[tuple[int, int, int, int, bool]]:
    bases = np.concatenate([[0], np.cumsum(f.rg_rows)[:-1]]).astype(np.int64)
    if not f.parquet:  # CSV / JSON: the whole file is one unit
        n = int(f.rg_rows[0])
        return [(fi, -1, 0, n, row_filter is not None)] if n else []
    out = []
    for rg in range(len(f.rg_rows)):
        if f.rg_rows[rg] == 0 or (
            row_filter is not None and f.kept is not None and rg not in f.kept
        ):
            continue
        partial = row_filter is not None and rg not in f.whole
        out.append((fi, rg, int(bases[rg]), int(f.rg_rows[rg]), partial))
    return out


def _assemble(
    files: list[FileEntry],
    part_schema: pa.Schema,
    part_values: list[tuple[Any, ...]],
    data_schema: pa.Schema,
    schema: pa.Schema,
    read_cols: tuple[str, ...],
    row_filter: Any,
    filter_cols: tuple[str, ...],
    units: list[tuple[int, int, int, int, bool]],
    epoch: int,
) -> Plan:
    arr = np.array(units, dtype=np.int64).reshape(-1, 5)
    partial = arr[:, 4].astype(bool)
    rows = arr[:, 3].copy()
    rows[partial] = -1
    return Plan(
        files=files,
        part_schema=part_schema,
        part_values=part_values,
        data_schema=data_schema,
        schema=schema,
        read_columns=read_cols,
        row_filter=row_filter,
        filter_columns=filter_cols,
        unit_file=arr[:, 0].astype(np.int32),
        unit_rg=arr[:, 1].astype(np.int32),
        unit_base=arr[:, 2].copy(),
        unit_total=arr[:, 3].copy(),
        unit_partial=partial,
        unit_rows=rows,
        sel_off=np.full(len(arr), -1, np.int64),
        sel=np.zeros(0, np.int32),
        epoch=epoch,
    )


def _resolve_partial(
    fs: Any, spec: LakeSpec, plan: Plan, facts: dict[int, FileFacts], threads: int
) -> None:
    """Map-style: read the filter columns of each partial unit once; keep matching row numbers."""
    todo = np.flatnonzero(plan.unit_partial)
    progress = _Progress(f"filtering {spec.shown}", len(todo), "row group")

    def positions(u: int) -> np.ndarray:
        pos = _positions(u)
        progress.step(1)
        return pos

    def _positions(u: int) -> np.ndarray:
        fi = int(plan.unit_file[u])
        f = facts.get(fi)
        kept = f.text_table if f is not None else None
        if kept is not None and all(c in kept.column_names for c in plan.filter_columns):
            table = cast_to(
                kept.select(list(plan.filter_columns)),
                pa.schema([plan.data_schema.field(c) for c in plan.filter_columns]),
            )
            table = _with_partitions(table, plan, fi)
        else:
            table = read_unit_table(fs, spec, plan, u, plan.filter_columns, validate=False)
        return row_positions(table, plan.row_filter)

    try:
        found = _pool_map(positions, list(todo), threads if spec.s3_or_none() else 2)
    finally:
        progress.close()
    offs = np.full(plan.num_units, -1, np.int64)
    sel_parts, off = [], 0
    for u, pos in zip(todo, found):
        offs[u] = off
        plan.unit_rows[u] = len(pos)
        sel_parts.append(pos.astype(np.int32))
        off += len(pos)
    plan.sel_off = offs
    plan.sel = np.concatenate(sel_parts) if sel_parts else np.zeros(0, np.int32)
    keep = plan.unit_rows != 0
    if not keep.all():
        _drop_units(plan, keep)
    for f in facts.values():
        f.text_table = None  # CSV/JSON filter columns are not needed any more


def _drop_units(plan: Plan, keep: np.ndarray) -> None:
    for name in (
        "unit_file",
        "unit_rg",
        "unit_base",
        "unit_total",
        "unit_partial",
        "unit_rows",
        "sel_off",
    ):
        setattr(plan, name, getattr(plan, name)[keep])


def _with_partitions(table: pa.Table, plan: Plan, fi: int) -> pa.Table:
    for f, col in zip(
        plan.part_schema, partition_columns(plan.part_schema, plan.part_values[fi], table.num_rows)
    ):
        table = table.append_column(f, col)
    return table
