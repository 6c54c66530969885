"""Hive partitions and filters: what prunes files (partition values), row groups (statistics,
in ``formats``) and rows (the row filter), and the early, precise errors of a bad filter.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from ...errors import ConfigError, NotFoundError

_ROW = "__tensorfeed_row__"


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


def row_positions(table: pa.Table, expr: Any) -> np.ndarray:
    """Row numbers of ``table`` where ``expr`` is true (NULL counts as false)."""
    t = table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return t.filter(expr).column(_ROW).to_numpy()
