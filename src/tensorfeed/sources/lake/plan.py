"""What a lake dataset reads (``LakeSpec``, from its constructor's arguments or a URL) and what
one epoch reads (``Plan``: the pinned files and their row groups, as numpy arrays).

NOTE [ A consistent epoch ]
The file list (size, mtime, and on S3 the ETag) is pinned when an epoch starts: at construction
and :meth:`LakeDataset.refresh` for the map-style dataset, at the start of every epoch for the
stream. Every row-group read is checked against the pinned identity after the bytes arrive; a
replaced or deleted file is a :class:`~tensorfeed.errors.SourceChangedError` naming the object,
never a silent mix of versions. Files added during an epoch are picked up by the next one (stream)
or by ``refresh()`` (map-style; build a new DataLoader afterwards, since the length changed).
Under ``torch.distributed``, ``tfd.DataLoader`` gives every rank the plan rank 0 listed (NOTE
[ One view of the source for the job ] in ``job_view.py``), and workers receive their process's
plan, so a file added at the moment an epoch starts is in every shard's epoch or in none. A
resumed stream epoch reads the files its checkpoint names (``manifest.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pyarrow as pa

from ...errors import ConfigError
from .fs import (
    FileEntry,
    Location,
    S3Options,
    display_uri,
    filesystem_for,
    parse_location,
    parse_storage_options,
)
from .pruning import normalize_filter

FORMATS = ("parquet", "csv", "json")


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

    def open_filesystem(self) -> Any:
        """The given ``filesystem``, or one for the lake's scheme (on S3: for its bucket)."""
        if self.filesystem is not None:
            return self.filesystem
        loc = self.locations[0]
        return filesystem_for(loc.scheme, self.s3, loc.path.split("/", 1)[0])


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

    def used_files(self) -> list[str]:
        """The pinned files that hold a unit of this epoch (credential-free display names)."""
        used = set(self.unit_file.tolist())
        return [f.display for i, f in enumerate(self.files) if i in used]

    def unit_name(self, u: int) -> str:
        f = self.files[int(self.unit_file[u])].display
        rg = int(self.unit_rg[u])
        return f"row group {rg} of {f}" if rg >= 0 else f


def _lake_spec(
    uri: Any,
    format: str,
    partitioning: str | None,
    columns: Sequence[str] | None,
    filter: Any,
    storage_options: Mapping[str, Any] | None,
    filesystem: Any,
    needed: Sequence[str],
) -> LakeSpec:
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if partitioning not in ("hive", None):
        raise ConfigError(f"partitioning must be 'hive' or None, got {partitioning!r}")
    items = [uri] if isinstance(uri, str | os.PathLike) else list(uri)
    if not items:
        raise ConfigError("uri must name at least one file, directory or glob")
    locations = tuple(parse_location(u) for u in items)
    if isinstance(columns, str):
        columns = [columns]
    if columns is not None and len(columns) == 0:
        raise ConfigError("columns must name at least one column (or be None for all)")
    expr, _ = normalize_filter(filter)
    s3 = parse_storage_options(storage_options)
    if storage_options and locations[0].scheme != "s3":
        raise ConfigError("storage_options apply to s3:// lakes only; this lake is on local disk")
    return LakeSpec(
        locations=locations,
        shown=display_uri(uri),
        format=format,
        partitioning=partitioning,
        columns=tuple(columns) if columns is not None else None,
        filter=filter if expr is not None else None,
        s3=s3,
        filesystem=filesystem,
        needed=tuple(needed),
    )


def _options_from_url(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``s3://bucket/prefix?format=csv&partitioning=none`` -> (uri, options)."""
    opts = dict(options)
    if "?" in url and not os.path.exists(url):
        url, _, query = url.partition("?")
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k in ("format", "shuffle_buffer", "seed"):
                opts.setdefault(k, int(v) if k != "format" else v)
            elif k == "partitioning":
                opts.setdefault(k, None if v.lower() in ("", "none") else v)
            elif k == "columns":
                opts.setdefault(k, [c for c in v.split(",") if c])
            elif k in ("endpoint_url", "region", "anon"):
                so = dict(opts.get("storage_options") or {})
                so.setdefault(k, v.lower() in ("1", "true") if k == "anon" else v)
                opts["storage_options"] = so
            else:
                raise ConfigError(
                    f"unknown lake URL option {k!r}; use format, partitioning, columns, "
                    "endpoint_url, region, anon (pass credentials as storage_options)"
                )
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "format" not in opts:
        low = url.lower()
        if low.endswith((".csv", ".csv.gz", ".tsv")):
            opts["format"] = "csv"
        elif low.endswith((".json", ".jsonl", ".ndjson")):
            opts["format"] = "json"
    return url, opts
