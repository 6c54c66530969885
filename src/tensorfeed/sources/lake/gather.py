"""Decoded row groups kept per process, and batches gathered from them with numpy.

A batch takes one numpy take per dtype per row group it touches, and its fixed-width numeric
columns become tensors without a round trip through Arrow (``_LakeBatch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ...columns import ColumnBatch, ConvertOptions, RowLocator

_CONVERT = ConvertOptions()


class _Decoded:
    """A decoded unit in the cache. Fixed-width numeric columns without NULLs are kept as one
    row-major ``[rows, columns]`` numpy matrix per dtype, so gathering a batch costs one numpy
    take per dtype per row group (a row's values share cache lines) instead of one per column;
    other columns stay Arrow arrays."""

    __slots__ = ("arrow", "groups", "layout", "nbytes")

    def __init__(self, table: pa.Table) -> None:
        by_dtype: dict[np.dtype[Any], list[tuple[int, np.ndarray]]] = {}
        self.arrow: dict[int, pa.Array] = {}
        for j, col in enumerate(table.columns):
            t = col.type
            arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
            if (pa.types.is_integer(t) or pa.types.is_floating(t)) and arr.null_count == 0:
                view = arr.to_numpy(zero_copy_only=True)
                by_dtype.setdefault(view.dtype, []).append((j, view))
            else:
                self.arrow[j] = arr
        self.groups: list[tuple[list[int], np.ndarray]] = []
        for dtype, cols in by_dtype.items():
            mat = np.empty((table.num_rows, len(cols)), dtype=dtype)
            for i, (_, view) in enumerate(cols):
                mat[:, i] = view
            self.groups.append(([j for j, _ in cols], mat))
        self.layout = tuple((tuple(js), m.dtype.str) for js, m in self.groups)
        self.nbytes = sum(m.nbytes for _, m in self.groups) + sum(
            a.nbytes for a in self.arrow.values()
        )


def _gather(
    schema: pa.Schema, segments: list[tuple[_Decoded, np.ndarray | None, np.ndarray]], n: int
) -> tuple[pa.Table, dict[str, np.ndarray] | None]:
    """Rows from decoded units into one table in the batch's order. ``segments`` are
    (unit, positions in the batch or None for all, row numbers in the unit), grouped by unit."""
    cols: list[Any] = [None] * len(schema)
    numeric: dict[str, np.ndarray] | None = None
    first = segments[0][0]
    inverse = None
    if len(segments) > 1:
        concat_pos = np.concatenate([s[1] for s in segments])
        inverse = np.empty(n, np.int64)
        inverse[concat_pos] = np.arange(n)
    if all(s[0].layout == first.layout for s in segments):
        for g, (js, mat) in enumerate(first.groups):
            if inverse is None:
                rows = mat[segments[0][2]]
            else:
                rows = np.concatenate([dec.groups[g][1][r] for dec, _, r in segments])[inverse]
            by_col = np.ascontiguousarray(rows.T)  # [columns, n]: each column contiguous
            numeric = {} if numeric is None else numeric
            for i, j in enumerate(js):
                typ = schema.field(j).type
                cols[j] = pa.Array.from_buffers(typ, n, [None, pa.py_buffer(by_col[i])])
                numeric[schema.field(j).name] = by_col[i]
        rest = list(first.arrow)
    else:  # NULLs in some row groups only: every column through Arrow
        rest = list(range(len(schema)))
    for j in rest:
        pieces = [_arrow_column(s[0], j, schema).take(pa.array(s[2])) for s in segments]
        if inverse is None:
            cols[j] = pieces[0]
        else:
            merged = pa.concat_arrays([p.cast(schema.field(j).type) for p in pieces])
            cols[j] = merged.take(pa.array(inverse))
    return pa.Table.from_arrays(cols, schema=schema), numeric


class _LakeBatch(ColumnBatch):
    """A ColumnBatch that also holds its fixed-width numeric columns as the numpy arrays they
    were gathered into, so ``collate`` turns them into tensors without a round trip through
    Arrow. The dtype rules are tensorfeed's (integers -> int64, floats -> ``float_dtype``);
    anything else (transforms, strings, lists, NULLs) takes the general ColumnBatch path."""

    __slots__ = ("_numeric",)

    def __init__(
        self,
        table: pa.Table,
        spec: Any,
        locator: RowLocator,
        numeric: dict[str, np.ndarray] | None,
    ) -> None:
        super().__init__(table, spec, locator)
        self._numeric = numeric

    def to_batch(self, opts: ConvertOptions = _CONVERT) -> Any:
        num, spec = self._numeric, self.spec
        if num is None or spec.transform is not None or spec.target_transform is not None:
            return super().to_batch(opts)
        float_np = np.float64 if opts.float_dtype == torch.float64 else np.float32
        if spec.supervised:
            feats = list(spec.features or ())
            need = feats + ([spec.target] if spec.target is not None else [])
            if any(c not in num for c in need):
                return super().to_batch(opts)
            x = None
            if feats:
                out = np.empty((self.table.num_rows, len(feats)), dtype=float_np)
                for j, c in enumerate(feats):
                    out[:, j] = num[c]
                x = _as_float(torch.from_numpy(out), opts)
            y = _tensor(num[spec.target], float_np, opts) if spec.target is not None else None
            return spec.pack(x, y)
        if len(num) != self.table.num_columns:
            return super().to_batch(opts)
        return {c: _tensor(num[c], float_np, opts) for c in self.table.column_names}


def _as_float(t: torch.Tensor, opts: ConvertOptions) -> torch.Tensor:
    return t if t.dtype == opts.float_dtype else t.to(opts.float_dtype)


def _tensor(values: np.ndarray, float_np: Any, opts: ConvertOptions) -> torch.Tensor:
    """A gathered column (a fresh array owned by this batch) -> tensor, tensorfeed's rules."""
    if values.dtype.kind in "iu":
        return torch.from_numpy(values if values.dtype == np.int64 else values.astype(np.int64))
    return _as_float(torch.from_numpy(values.astype(float_np, copy=False)), opts)


def _arrow_column(dec: _Decoded, j: int, schema: pa.Schema) -> pa.Array:
    if j in dec.arrow:
        return dec.arrow[j]
    for js, mat in dec.groups:
        if j in js:
            return pa.array(mat[:, js.index(j)], type=schema.field(j).type)
    raise KeyError(j)  # pragma: no cover
