"""The lake's plan: which files and row groups an epoch reads, built from metadata.

NOTE [ How the lake index is built ]
1. List the files (sizes, mtimes; ETags once opened) and pin them: that list *is* the epoch.
2. Parse Hive partition values from the paths (``year=2024/region=EU``); types are inferred over
   all files (integers -> int32/int64, anything else -> string).
3. Prune files by partition values with ``pyarrow.dataset`` (no file is opened to do it).
4. Read the footers of the surviving Parquet files (in threads: on S3 these are round trips),
   unify their schemas (NOTE [ Schema unification ]), validate ``columns``/``filter``.
5. Prune row groups by their statistics (``ParquetFileFragment.subset``). A row group whose
   statistics prove every row matches (the negated filter prunes it and its filter columns have
   no NULLs) is kept whole; any other survivor is *partial*: a map-style dataset reads just the
   filter columns of it once, now, and keeps the matching row numbers (int32); a stream evaluates
   the filter when it reads the row group. Filters on partition keys only never read data.
6. The result is a handful of numpy arrays, one entry per row group ("unit"): file, row group,
   rows, first row in the file, and for partial units an offset into one int32 selection array.
   Nothing per row is a Python object, so DataLoader workers share it without copy-on-read.

CSV and newline-delimited JSON have no footers: each file is one unit, and counting its rows (and
evaluating a row filter) reads it once when the index is built.

NOTE [ Schema unification ]
The first file (in sorted path order) defines the columns. Every other file must hold the same
columns (only the ones selected by ``columns=`` are checked); a column may differ in type only
by widening: integers of any width -> the widest integer, integers and floats -> float64,
float32/float64 -> float64, string/large_string -> string, an all-NULL column -> the other type.
Anything else is a DataError naming both files and the column. Values are cast to the unified
type when read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from ...errors import ConfigError, DataError, NotFoundError
from .fs import (
    FileEntry,
    Location,
    S3Options,
    check_unchanged,
    current_identity,
    etag_of,
    list_files,
    retrying,
    scrub,
)

FORMATS = ("parquet", "csv", "json")
_ROW = "__tensorfeed_row__"
log = logging.getLogger("tensorfeed.lake")


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class LakeSpec:
    """What a lake dataset reads: everything a worker needs, as picklable configuration."""

    locations: tuple[Location, ...]
    shown: str  # the uri for messages (no credentials)
    format: str = "parquet"
    partitioning: str | None = "hive"
    columns: tuple[str, ...] | None = None
    filter: Any = None  # a pyarrow.compute.Expression or None
    s3: S3Options = field(default_factory=S3Options)
    filesystem: Any = None  # a user-supplied pyarrow FileSystem, or None
    needed: tuple[str, ...] = ()  # features/target: must exist, read even if not in columns

    def s3_or_none(self) -> S3Options | None:
        return self.s3 if self.locations and self.locations[0].scheme == "s3" else None


def normalize_filter(filt: Any) -> tuple[Any, list[str]]:
    """A pyarrow Expression (or None) from an Expression or DNF tuples, plus the column names
    the DNF form names (for early, precise errors)."""
    if filt is None:
        return None, []
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if isinstance(filt, pc.Expression):
        return filt, []
    if isinstance(filt, tuple) and len(filt) == 3 and isinstance(filt[0], str):
        filt = [filt]
    if not isinstance(filt, list | tuple) or not filt:
        raise ConfigError(
            "filter must be a pyarrow expression (pyarrow.dataset.field('age') >= 18) or DNF "
            "tuples like [('age', '>=', 18), ('region', '=', 'EU')], "
            f"not {type(filt).__name__}"
        )
    groups = (
        filt if isinstance(filt[0], list | tuple) and not isinstance(filt[0][0], str) else [filt]
    )
    names: list[str] = []
    for g in groups:
        for term in g:
            if not (isinstance(term, tuple | list) and len(term) == 3 and isinstance(term[0], str)):
                raise ConfigError(f"filter term {term!r} is not a (column, op, value) tuple")
            names.append(term[0])
    try:
        return pq.filters_to_expression([list(map(tuple, g)) for g in groups]), names
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid filter {filt!r}: {exc}") from exc


# --------------------------------------------------------------------------- partitions

_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def parse_hive(path: str) -> dict[str, str | None]:
    """``key=value`` directory segments of ``path`` (URL-unquoted; the Hive NULL marker -> None)."""
    out: dict[str, str | None] = {}
    for seg in path.split("/")[:-1]:
        if "=" in seg:
            k, _, v = seg.partition("=")
            k = unquote(k)
            if k:
                v = unquote(v)
                out[k] = None if v == _HIVE_NULL or v == "" else v
    return out


def infer_partitions(raw: list[dict[str, str | None]]) -> tuple[pa.Schema, list[tuple[Any, ...]]]:
    names: list[str] = []
    for r in raw:
        for k in r:
            if k not in names:
                names.append(k)
    fields, cols = [], []
    for n in names:
        vals: list[Any] = [r.get(n) for r in raw]
        present = [v for v in vals if v is not None]
        typ: pa.DataType = pa.string()
        if present and all(re.fullmatch(r"[-+]?\d+", v) for v in present):
            ints = [int(v) for v in present]
            typ = pa.int32() if all(-(2**31) <= i < 2**31 for i in ints) else pa.int64()
            vals = [None if v is None else int(v) for v in vals]
        fields.append(pa.field(n, typ))
        cols.append(vals)
    values = list(zip(*cols)) if cols else [() for _ in raw]
    return pa.schema(fields), values


def partition_expression(schema: pa.Schema, values: tuple[Any, ...]) -> Any:
    import pyarrow.dataset as pads

    expr = None
    for f, v in zip(schema, values):
        term = (
            pads.field(f.name).is_null()
            if v is None
            else pads.field(f.name) == pa.scalar(v, f.type)
        )
        expr = term if expr is None else expr & term
    return expr


def partition_columns(schema: pa.Schema, values: tuple[Any, ...], n: int) -> list[pa.Array]:
    return [pa.repeat(pa.scalar(v, f.type), n) for f, v in zip(schema, values)]


# --------------------------------------------------------------------------- filters


_NO_MATCH = re.compile(r"No match for FieldRef\.Name\((.*?)\) in")


def _bind_error(expr: Any, schema: pa.Schema) -> Exception | None:
    try:
        schema.empty_table().filter(expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as exc:
        return exc
    return None


def provisional_schema(expr: Any, part_schema: pa.Schema) -> tuple[pa.Schema | None, list[str]]:
    """Partition fields + NULL-typed stand-ins for the data columns the filter names, enough to
    prune partitions before any file is opened. (None, names) if the filter will not bind."""
    names: list[str] = []
    for _ in range(512):
        schema = pa.schema([*part_schema, *(pa.field(n, pa.null()) for n in names)])
        err = _bind_error(expr, schema)
        if err is None:
            return schema, names
        m = _NO_MATCH.search(str(err))
        if m is None or m.group(1) in names:
            return None, names
        names.append(m.group(1))
    return None, names


def referenced_columns(expr: Any, schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` that ``expr`` reads (by binding without each one)."""
    out = []
    for i, f in enumerate(schema):
        err = _bind_error(expr, schema.remove(i))
        if err is not None and f.name in str(err):
            out.append(f.name)
    return out


def validate_filter(expr: Any, schema: pa.Schema, shown: str) -> None:
    err = _bind_error(expr, schema)
    if err is None:
        return
    m = _NO_MATCH.search(str(err))
    if m:
        raise NotFoundError(
            f"the filter names column {m.group(1)!r}, which is not in the lake {shown}; "
            f"available columns: {schema.names}"
        )
    raise ConfigError(f"the filter {expr} cannot be applied to the lake {shown}: {err}")


# --------------------------------------------------------------------------- schemas


def _widen(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        if pa.types.is_signed_integer(a) == pa.types.is_signed_integer(b):
            return a if a.bit_width >= b.bit_width else b
        return pa.int64()
    num = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in num) and any(f(b) for f in num):
        return pa.float64()
    strs = (pa.types.is_string, pa.types.is_large_string)
    if any(f(a) for f in strs) and any(f(b) for f in strs):
        return pa.string()
    return None


def unify_schemas(
    schemas: Sequence[pa.Schema], files: Sequence[FileEntry], wanted: Sequence[str] | None
) -> pa.Schema:
    """The lake's data schema (NOTE [ Schema unification ])."""
    first, first_file = schemas[0], files[0]
    names = list(wanted) if wanted is not None else list(first.names)
    types: dict[str, pa.DataType] = {}
    origin: dict[str, FileEntry] = {}
    for n in names:
        if n in first.names:
            types[n], origin[n] = first.field(n).type, first_file
    for s, f in zip(schemas, files):
        if wanted is None:
            for extra in s.names:
                if extra not in types:
                    raise DataError(
                        f"the lake's files have different schemas: column {extra!r} is in "
                        f"{f.display} but not in {first_file.display}; select the common "
                        "columns with columns=[...] or rewrite the files"
                    )
        for n in list(types):
            if n not in s.names:
                raise DataError(
                    f"the lake's files have different schemas: column {n!r} is in "
                    f"{origin[n].display} but not in {f.display}"
                )
            t = s.field(n).type
            w = _widen(types[n], t)
            if w is None:
                raise DataError(
                    f"the lake's files have different schemas: column {n!r} is {types[n]} in "
                    f"{origin[n].display} but {t} in {f.display}, and {t} does not widen to "
                    f"{types[n]} (see 'Schema unification' in docs/lake.md)"
                )
            types[n] = w
    return pa.schema([pa.field(n, types[n]) for n in names if n in types])


def cast_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a file's columns to the unified types (only where they differ)."""
    if table.schema.equals(schema):
        return table
    cols = []
    for f in schema:
        c = table.column(f.name)
        cols.append(c if c.type == f.type else c.cast(f.type))
    return pa.Table.from_arrays(cols, schema=schema)


# --------------------------------------------------------------------------- file facts


@dataclass
class FileFacts:
    """What the footer (or one read of a CSV/JSON file) told us about one file."""

    entry: FileEntry
    schema: pa.Schema  # physical (data) schema
    rg_rows: np.ndarray  # rows per row group (one "row group" for CSV/JSON)
    parquet: bool = True
    # statistics pruning for the filter, done while the footer was at hand (None: keep all)
    kept: frozenset[int] | None = None  # row groups that may hold matching rows
    whole: frozenset[int] = frozenset()  # row groups whose every row matches
    text_table: pa.Table | None = None  # CSV/JSON: filter columns kept for the row filter


def describe_corrupt(
    entry: FileEntry, exc: BaseException, s3: S3Options | None, rg: int | None = None
) -> DataError:
    where = f"row group {rg} of " if rg is not None and rg >= 0 else ""
    reason = " ".join(scrub(str(exc), s3).split())
    return DataError(
        f"{where}{entry.display} cannot be decoded: {reason} "
        "(the file is corrupt, truncated or not in the declared format)"
    )


def _looks_like_io(exc: BaseException) -> bool:
    text = str(exc)
    return "AWS Error" in text or "curl" in text.lower() or isinstance(exc, FileNotFoundError)


def read_facts(
    fs: Any,
    entry: FileEntry,
    spec: LakeSpec,
    keep: Sequence[str],
    pexpr: Any = None,
    part_schema: pa.Schema | None = None,
    expr: Any = None,
) -> FileFacts:
    """Open one file and read its footer (Parquet) or the whole file (CSV/JSON); the handle is
    closed before returning (a lake of many files never holds many descriptors)."""
    s3 = spec.s3_or_none()

    def attempt() -> FileFacts:
        handle = fs.open_input_file(entry.path)
        pinned = entry.with_etag(etag_of(handle)) if entry.scheme == "s3" else entry
        if handle.size() != entry.size:
            check_unchanged(entry, current_identity(fs, entry, s3))
        try:
            if spec.format == "parquet":
                return _parquet_facts(handle, pinned, pexpr, part_schema, expr)
            return _text_facts(handle, pinned, spec.format, keep)
        except OSError as exc:
            if _looks_like_io(exc):
                raise
            raise describe_corrupt(entry, exc, s3) from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise describe_corrupt(entry, exc, s3) from None
        finally:
            handle.close()

    return retrying(attempt, f"reading the metadata of {entry.display}", s3)


def _parquet_facts(
    handle: Any, entry: FileEntry, pexpr: Any, part_schema: pa.Schema | None, expr: Any
) -> FileFacts:
    import pyarrow.dataset as pads

    frag = pads.ParquetFileFormat().make_fragment(handle, partition_expression=pexpr)
    frag.ensure_complete_metadata()
    meta = frag.metadata
    rows = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64)
    facts = FileFacts(entry, frag.physical_schema, rows)
    if expr is not None:
        facts.kept, facts.whole = _prune_row_groups(frag, meta, expr, part_schema)
    return facts


_REFS: dict[tuple[str, pa.Schema], list[str]] = {}


def _prune_row_groups(
    frag: Any, meta: Any, expr: Any, part_schema: pa.Schema | None
) -> tuple[frozenset[int] | None, frozenset[int]]:
    """Row groups the statistics cannot exclude, and those they prove match entirely (the
    negated filter excludes them and the filter's columns hold no NULLs there). The fragment
    carries the file's partition values as its guarantee. Bound against this file's own
    schema; a filter that does not bind here is validated (and reported) later."""
    schema = pa.schema([*frag.physical_schema, *(part_schema or [])])
    try:
        kept = frozenset(rg.id for rg in frag.subset(filter=expr, schema=schema).row_groups)
        maybe_not = {rg.id for rg in frag.subset(filter=~expr, schema=schema).row_groups}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None, frozenset()
    key = (str(expr), schema)
    refs = _REFS.get(key)
    if refs is None:
        refs = _REFS[key] = referenced_columns(expr, schema)
        if len(_REFS) > 256:
            _REFS.pop(next(iter(_REFS)))
    cols = [c for c in refs if c in frag.physical_schema.names]
    whole = frozenset(rg for rg in kept if rg not in maybe_not and _no_nulls(meta, rg, cols))
    return kept, whole


def read_text(handle: Any, fmt: str) -> pa.Table:
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(handle)
    import pyarrow.json as pajson

    return pajson.read_json(handle)


def _text_facts(handle: Any, entry: FileEntry, fmt: str, keep: Sequence[str]) -> FileFacts:
    table = read_text(handle, fmt)
    kept = table.select([c for c in keep if c in table.column_names]) if keep else None
    return FileFacts(
        entry, table.schema, np.array([table.num_rows], np.int64), parquet=False, text_table=kept
    )


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """One epoch of a lake: pinned files and the units (row groups) to read, as numpy arrays."""

    files: list[FileEntry]
    part_schema: pa.Schema
    part_values: list[tuple[Any, ...]]
    data_schema: pa.Schema  # unified types of every data column of the files
    schema: pa.Schema  # the dataset's output columns (data then partition columns)
    read_columns: tuple[str, ...]  # data columns read from the files for a sample
    row_filter: Any  # expression still to apply inside partial units (None: no row filter)
    filter_columns: tuple[str, ...]  # data columns the row filter reads
    unit_file: np.ndarray  # int32
    unit_rg: np.ndarray  # int32 (-1: whole file)
    unit_base: np.ndarray  # int64 first row of the unit in its file
    unit_total: np.ndarray  # int64 physical rows of the unit
    unit_partial: np.ndarray  # bool: the row filter must be applied
    unit_rows: np.ndarray  # int64 selected rows (-1: not known yet, partial in a stream)
    sel_off: np.ndarray  # int64 offset into sel for partial units (map-style)
    sel: np.ndarray  # int32 selected row numbers inside partial units (map-style)
    epoch: int = 0

    @property
    def num_units(self) -> int:
        return len(self.unit_file)

    def starts(self) -> np.ndarray:
        s = np.zeros(len(self.unit_rows) + 1, np.int64)
        np.cumsum(self.unit_rows, out=s[1:])
        return s

    def selection(self, u: int) -> np.ndarray | None:
        if not self.unit_partial[u] or self.sel_off[u] < 0:
            return None
        off = int(self.sel_off[u])
        return self.sel[off : off + int(self.unit_rows[u])]

    def unit_name(self, u: int) -> str:
        f = self.files[int(self.unit_file[u])].display
        rg = int(self.unit_rg[u])
        return f"row group {rg} of {f}" if rg >= 0 else f


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
) -> tuple[Any, Plan]:
    """List, prune and index the lake (see NOTE [ How the lake index is built ])."""
    fs, files = list_files(spec.locations, spec.format, spec.s3, spec.filesystem)
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
            kind = "column" if n in (spec.columns or ()) else "column (a feature or target)"
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


def _no_nulls(meta: Any, rg: int, cols: Sequence[str]) -> bool:
    if meta is None:
        return False
    rgm = meta.row_group(rg)
    by_name = {rgm.column(i).path_in_schema: rgm.column(i) for i in range(rgm.num_columns)}
    for c in cols:
        col = by_name.get(c)
        st = col.statistics if col is not None else None
        if st is None or not st.has_null_count or st.null_count != 0:
            return False
    return True


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
    from .read import read_unit_table

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


def row_positions(table: pa.Table, expr: Any) -> np.ndarray:
    """Row numbers of ``table`` where ``expr`` is true (NULL counts as false)."""
    t = table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return t.filter(expr).column(_ROW).to_numpy()
