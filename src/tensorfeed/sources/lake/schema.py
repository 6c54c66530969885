"""The lake's schema, unified over its files, and casting a file's columns to it.

NOTE [ Schema unification ]), validate ``columns``/``filter``.
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

from collections.abc import Sequence

import pyarrow as pa

from ...errors import DataError
from .fs import FileEntry


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
