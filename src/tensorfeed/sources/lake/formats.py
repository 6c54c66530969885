"""What one file tells the index: a Parquet footer (row groups, statistics pruning) or one read of a
CSV/newline-delimited JSON file, and how a file that cannot be decoded is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import DataError
from .fs import FileEntry, S3Options, check_unchanged, current_identity, etag_of, retrying, scrub
from .plan import LakeSpec
from .pruning import referenced_columns


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
