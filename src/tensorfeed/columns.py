"""Columns -> tensors: the conversion core every source shares.

A source fetches a whole batch as an Arrow table and wraps it in a :class:`ColumnBatch`. The batch
is a list of samples built on demand (NOTE [ A batch is a list ]), so torch's ``default_collate``
still works on it, but :func:`collate` recognises it and converts each column in one step instead
of row by row. A sample is a dict of columns, or with ``features=``/``target=`` ``(x, y)``, or
``x`` alone (features without a target), or ``y`` alone (a target without features).

Dtype rules (also used for lists of samples):

============================  ==========================================
Arrow / Python type           tensor
============================  ==========================================
integers                      ``int64``
floats, decimals              ``float32`` (``float_dtype`` to change)
booleans                      ``bool``
timestamps                    ``int64`` nanoseconds since the Unix epoch
dates                         ``int64`` days since the Unix epoch
durations / times             ``int64`` in the column's unit
lists of numbers              padded 2-D tensor + ``<name>_lengths``
strings, binary               left as a Python ``list`` of ``str``/``bytes``
============================  ==========================================

A NULL in a column that becomes a tensor is a :class:`~tensorfeed.errors.DataError` naming the
column and the row; nothing is silently filled.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .errors import ConfigError, DataError

Batch = dict[str, Any] | tuple[Any, ...] | Any

LENGTHS_SUFFIX = "_lengths"


# --------------------------------------------------------------------------- locating rows


@dataclass(frozen=True)
class RowLocator:
    """Names a row of a batch in error messages: by key value, or by file and row offset."""

    source: str
    key: str | None = None
    offsets: np.ndarray | None = None

    def describe(self, table: pa.Table, i: int) -> str:
        if self.key is not None and self.key in table.column_names:
            return f"the row with {self.key}={table.column(self.key)[i].as_py()!r} of {self.source}"
        if self.offsets is not None:
            return f"row {int(self.offsets[i])} of {self.source}"
        return f"row {i} of the batch from {self.source}"


# --------------------------------------------------------------------------- sample spec


@dataclass(frozen=True)
class SampleSpec:
    """How rows become samples: a dict of columns; with ``features`` and ``target``, ``(x, y)``;
    with only one of them, ``x`` (the feature tensor) or ``y`` alone (see :meth:`pack`)."""

    features: tuple[str, ...] | None = None
    target: str | None = None
    transform: Callable[[Any], Any] | None = None
    target_transform: Callable[[Any], Any] | None = None

    @property
    def supervised(self) -> bool:
        return self.features is not None or self.target is not None

    def pack(self, x: Any, y: Any) -> Any:
        """A sample (or batch) from its parts: ``(x, y)`` when both features and target are
        given, else the one there is. Never ``(x, None)``: ``len(sample)`` must be the number of
        features, ``len(batch)`` the number of rows."""
        if self.features and self.target is not None:
            return (x, y)
        return x if self.features else y

    def needed_columns(self) -> list[str]:
        cols = list(self.features or ())
        if self.target is not None and self.target not in cols:
            cols.append(self.target)
        return cols

    def check_columns(self, available: Sequence[str], source: str) -> None:
        """Raise a NotFoundError naming the first feature/target column that is not available."""
        from .errors import NotFoundError

        for col in self.needed_columns():
            if col not in available:
                raise NotFoundError(
                    f"column {col!r} (a feature or target) is not in {source}; "
                    f"available columns: {sorted(available)}"
                )


def make_spec(
    features: Sequence[str] | str | None,
    target: str | None,
    transform: Callable[[Any], Any] | None,
    target_transform: Callable[[Any], Any] | None,
) -> SampleSpec:
    if isinstance(features, str):
        features = [features]
    if features is not None and len(features) == 0:
        raise ConfigError("features must name at least one column (or be None)")
    return SampleSpec(
        tuple(features) if features is not None else None, target, transform, target_transform
    )


# --------------------------------------------------------------------------- arrow -> tensor


@dataclass(frozen=True)
class ConvertOptions:
    float_dtype: torch.dtype = torch.float32


def _first_null(arr: pa.ChunkedArray | pa.Array) -> int:
    mask = pc.is_null(arr)
    idx = pc.index(mask, True).as_py()
    return int(idx)


def _numpy(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr.to_numpy(zero_copy_only=False)


def _as_numeric_arrow(arr: pa.ChunkedArray, t: pa.DataType) -> tuple[pa.ChunkedArray, str] | None:
    """Cast temporal/decimal types to the integer or float form they become; None if not numeric."""
    if pa.types.is_integer(t):
        return arr, "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return arr, "float"
    if pa.types.is_boolean(t):
        return arr, "bool"
    if pa.types.is_timestamp(t):
        arr = arr.cast(pa.timestamp("ns", tz=t.tz))
        return arr.cast(pa.int64()), "int"
    if pa.types.is_date32(t):
        return arr.cast(pa.int32()), "int"
    if pa.types.is_date64(t):
        return arr.cast(pa.date32()).cast(pa.int32()), "int"
    if pa.types.is_duration(t) or pa.types.is_time(t):
        return arr.cast(pa.int64()), "int"
    return None


def _writable(values: np.ndarray, dtype: Any) -> np.ndarray:
    out = np.ascontiguousarray(values, dtype=dtype)
    # Arrow hands out read-only zero-copy views; torch wants to own writable memory.
    return out if out.flags.writeable else out.copy()


def _torch_from_numpy(values: np.ndarray, kind: str, opts: ConvertOptions) -> torch.Tensor:
    if kind == "int":
        return torch.from_numpy(_writable(values, np.int64))
    if kind == "bool":
        return torch.from_numpy(_writable(values, np.bool_))
    np_float = np.float64 if opts.float_dtype == torch.float64 else np.float32
    t = torch.from_numpy(_writable(values, np_float))
    return t if t.dtype == opts.float_dtype else t.to(opts.float_dtype)


def _list_column(
    arr: pa.ChunkedArray, name: str, opts: ConvertOptions, null_where: Callable[[int], str]
) -> dict[str, torch.Tensor]:
    flat = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if flat.null_count:
        raise DataError(f"column {name!r} has a NULL list at {null_where(_first_null(flat))}")
    if isinstance(flat, pa.ChunkedArray):  # pragma: no cover - combine_chunks returns Array
        flat = flat.chunk(0)
    if pa.types.is_fixed_size_list(flat.type):
        width = flat.type.list_size
        values = flat.flatten()
        conv = _as_numeric_arrow(pa.chunked_array([values]), values.type)
        if conv is not None and not values.null_count:
            # every row has the same width: a plain [n, width] tensor, no padding or lengths
            num = _torch_from_numpy(_numpy(conv[0]), conv[1], opts)
            return {name: num.reshape(len(flat), width)}
        flat = flat.cast(pa.list_(flat.type.value_type))
    lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(flat)
    conv = _as_numeric_arrow(pa.chunked_array([values]), values.type)
    if conv is None:
        raise DataError(f"column {name!r} is a list of {values.type}, which cannot become a tensor")
    if values.null_count:
        raise DataError(f"column {name!r} has a NULL inside a list at {null_where(0)}")
    num = _torch_from_numpy(_numpy(conv[0]), conv[1], opts)
    return {name: _pad_flat(num, lengths, 0), name + LENGTHS_SUFFIX: torch.from_numpy(lengths)}


def _pad_flat(values: torch.Tensor, lengths: np.ndarray, pad_value: float) -> torch.Tensor:
    n = len(lengths)
    width = int(lengths.max()) if n else 0
    out = torch.full((n, width), pad_value, dtype=values.dtype)
    if n and width:
        mask = torch.arange(width).unsqueeze(0) < torch.from_numpy(lengths).unsqueeze(1)
        out[mask] = values
    return out


def arrow_column_to_tensors(
    arr: pa.ChunkedArray | pa.Array,
    name: str,
    opts: ConvertOptions = ConvertOptions(),
    null_where: Callable[[int], str] | None = None,
) -> dict[str, Any]:
    """Convert one Arrow column to ``{name: tensor-or-list}`` (plus ``<name>_lengths`` for lists)."""
    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr])
    where = null_where or (lambda i: f"row {i}")
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _list_column(arr, name, opts, where)
    conv = _as_numeric_arrow(arr, t)
    if conv is None:
        return {name: arr.to_pylist()}
    num, kind = conv
    if num.null_count:
        raise DataError(
            f"column {name!r} has a NULL at {where(_first_null(num))}; "
            "fill or filter it in the source (a NULL cannot become a tensor)"
        )
    return {name: _torch_from_numpy(_numpy(num), kind, opts)}


def features_to_tensor(
    table: pa.Table, features: Sequence[str], locator: RowLocator, opts: ConvertOptions
) -> torch.Tensor:
    """Stack numeric feature columns into one ``[n, F]`` float tensor, naming any bad value."""
    n = table.num_rows
    out = np.empty(
        (n, len(features)), dtype=np.float64 if opts.float_dtype == torch.float64 else np.float32
    )
    for j, col in enumerate(features):
        arr = table.column(col)
        conv = _as_numeric_arrow(arr, arr.type)
        if conv is None:
            raise DataError(
                f"feature column {col!r} is {arr.type}, not numeric "
                f"(first value {arr[0].as_py() if n else None!r} at {locator.describe(table, 0) if n else locator.source})"
            )
        num = conv[0]
        if num.null_count:
            i = _first_null(num)
            raise DataError(f"feature column {col!r} is NULL at {locator.describe(table, i)}")
        out[:, j] = _numpy(num)
    x = torch.from_numpy(out)
    return x if x.dtype == opts.float_dtype else x.to(opts.float_dtype)


def table_to_batch(
    table: pa.Table, spec: SampleSpec, locator: RowLocator, opts: ConvertOptions = ConvertOptions()
) -> Batch:
    """Convert a whole Arrow table to a batch: ``dict[str, tensor]``, ``(X, Y)``, ``X`` or ``Y``."""
    if spec.supervised:
        x = features_to_tensor(table, spec.features or (), locator, opts) if spec.features else None
        y = None
        if spec.target is not None:
            y = arrow_column_to_tensors(
                table.column(spec.target), spec.target, opts, lambda i: locator.describe(table, i)
            )[spec.target]
        return spec.pack(x, y)
    out: dict[str, Any] = {}
    for name in table.column_names:
        out.update(
            arrow_column_to_tensors(
                table.column(name), name, opts, lambda i: locator.describe(table, i)
            )
        )
    return out


# --------------------------------------------------------------------------- batches of samples

# NOTE [ A batch is a list ]
# What a dataset's ``__getitems__`` returns goes to the collate function as it is. ``tfd.collate``
# converts it column by column and builds no sample. torch's ``default_collate`` indexes it, and
# for samples that are bare tensors (``features=`` without ``target=``, ``x`` from a transform)
# calls ``torch.stack(batch)``, which takes only a real list or tuple and reads its items at C
# level. So a batch is a ``list`` whose list storage stays empty until a sample that is a tensor
# is first indexed; then every sample is built and stored (``default_collate`` indexes
# ``batch[0]`` before it stacks). Length, indexing and iteration are the batch's own and do not
# depend on what is stored; pickling carries the batch's data, not stored samples.


def _empty_batch_of(cls: type[_Samples]) -> _Samples:
    return cls.__new__(cls)


class _Samples(list[Any]):
    """Base of the batches sources hand to a collate function: a read-only sequence of samples
    built on demand by ``_sample(i)`` (see NOTE [ A batch is a list ])."""

    __slots__ = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def _sample(self, i: int) -> Any:
        """Sample ``i`` (``0 <= i < len(self)``), built from the batch's data."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError(f"{type(self).__name__} does not support slicing")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} is out of range for a batch of {n}")
        i %= n
        if list.__len__(self):
            return list.__getitem__(self, i)
        sample = self._sample(i)
        if isinstance(sample, torch.Tensor):  # torch.stack will read the list's own items
            list.extend(self, [sample if j == i else self._sample(j) for j in range(n)])
        return sample

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    __reversed__ = Sequence.__reversed__  # type: ignore[assignment]
    __contains__ = Sequence.__contains__  # type: ignore[assignment]
    index = Sequence.index  # type: ignore[assignment]
    count = Sequence.count  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = object.__hash__  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)} samples>"

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(getattr(self, "__dict__", {}))
        for cls in type(self).__mro__:
            for name in cls.__dict__.get("__slots__", ()):
                if hasattr(self, name):
                    state[name] = getattr(self, name)
        return (_empty_batch_of, (type(self),), state)

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)


class ColumnBatch(_Samples):
    """A batch fetched as columns. Indexing gives samples (for torch's default collate and for
    per-sample transforms); :func:`collate` converts it column by column instead."""

    __slots__ = ("_rows", "locator", "spec", "table")

    def __init__(self, table: pa.Table, spec: SampleSpec, locator: RowLocator) -> None:
        super().__init__()
        self.table = table
        self.spec = spec
        self.locator = locator
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def _sample(self, i: int) -> Any:
        if self._rows is None:
            self._rows = self.table.to_pylist()
        return row_to_sample(self._rows[i], self.spec, lambda: self.locator.describe(self.table, i))

    def to_batch(self, opts: ConvertOptions = ConvertOptions()) -> Batch:
        if self.spec.transform is not None or self.spec.target_transform is not None:
            return collate_samples(list(self), opts)
        return table_to_batch(self.table, self.spec, self.locator, opts)


class TensorBatch(_Samples):
    """A batch that is already tensors (an in-memory source's ``index_select``): a dict of
    column tensors, a tuple ``(X, Y)`` or one tensor ``X`` / ``Y``. :func:`collate` passes it
    through; indexing still gives samples for torch's default collate."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, torch.Tensor] | tuple[torch.Tensor, ...] | torch.Tensor):
        super().__init__()
        self.data = data

    def _tensors(self) -> list[torch.Tensor]:
        if isinstance(self.data, torch.Tensor):
            return [self.data]
        return list(self.data.values()) if isinstance(self.data, dict) else list(self.data)

    def __len__(self) -> int:
        return int(self._tensors()[0].shape[0])

    def _sample(self, i: int) -> Any:
        if isinstance(self.data, torch.Tensor):
            return self.data[i]
        if isinstance(self.data, dict):
            return {k: v[i] for k, v in self.data.items()}
        return tuple(v[i] for v in self.data)

    def to_batch(self, opts: ConvertOptions = ConvertOptions()) -> Batch:
        if all(not t.is_floating_point() or t.dtype == opts.float_dtype for t in self._tensors()):
            return self.data  # already in the wanted dtypes (the in-memory fast path)

        def conv(t: torch.Tensor) -> torch.Tensor:
            return (
                t.to(opts.float_dtype)
                if t.is_floating_point() and t.dtype != opts.float_dtype
                else t
            )

        if isinstance(self.data, torch.Tensor):
            return conv(self.data)
        if isinstance(self.data, dict):
            return {k: conv(v) for k, v in self.data.items()}
        return tuple(conv(v) for v in self.data)


def row_to_sample(row: dict[str, Any], spec: SampleSpec, where: Callable[[], str]) -> Any:
    """One row (a dict) -> a sample: the dict itself, or ``(x, y)`` / ``x`` / ``y`` (see
    :meth:`SampleSpec.pack`) with x a float32 tensor."""
    if not spec.supervised:
        return spec.transform(row) if spec.transform is not None else row
    x = None
    if spec.features:
        vals = []
        for col in spec.features:
            v = row[col]
            if v is None:
                raise DataError(f"feature column {col!r} is NULL at {where()}")
            if isinstance(v, bool | int | float | np.number):
                vals.append(float(v))
            elif isinstance(v, _dt.datetime | _dt.date):
                raise DataError(
                    f"feature column {col!r} is a date/time at {where()}; cast it in the query"
                )
            else:
                raise DataError(f"feature column {col!r} has non-numeric value {v!r} at {where()}")
        x = torch.tensor(vals, dtype=torch.float32)
        if spec.transform is not None:
            x = spec.transform(x)
    y = None
    if spec.target is not None:
        y = row[spec.target]
        if y is None:
            raise DataError(f"target column {spec.target!r} is NULL at {where()}")
        if spec.target_transform is not None:
            y = spec.target_transform(y)
    return spec.pack(x, y)


# --------------------------------------------------------------------------- generic collate


def pad_collate(
    sequences: Sequence[Any],
    pad_value: float = 0,
    max_length: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length sequences (lists, numpy arrays or tensors; first dim varies) into one
    ``[batch, max_len, ...]`` tensor. Returns ``(padded, lengths)``; ``max_length`` truncates."""
    if max_length is not None and max_length < 0:
        raise ConfigError(f"max_length must be >= 0, got {max_length}")
    tensors = [
        s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s)) for s in sequences
    ]
    if dtype is not None:
        tensors = [t.to(dtype) for t in tensors]
    if max_length is not None:
        tensors = [t[:max_length] for t in tensors]
    lengths = torch.tensor([t.shape[0] if t.dim() else 1 for t in tensors], dtype=torch.int64)
    tensors = [t if t.dim() else t.reshape(1) for t in tensors]
    if not tensors:
        return torch.empty(0, 0), lengths
    trailing = tensors[0].shape[1:]
    for t in tensors:
        if t.shape[1:] != trailing:
            raise DataError(
                f"cannot pad sequences with different trailing shapes {tuple(trailing)} and {tuple(t.shape[1:])}"
            )
    width = int(lengths.max()) if len(lengths) else 0
    common = tensors[0].dtype
    for t in tensors[1:]:
        common = torch.promote_types(common, t.dtype)
    out = torch.full((len(tensors), width, *trailing), pad_value, dtype=common)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, lengths


def _collate_values(values: list[Any], name: str, opts: ConvertOptions) -> dict[str, Any]:
    first = values[0]
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"column {name!r} is None in sample {i} of the batch")
    if isinstance(first, (torch.Tensor | np.ndarray, list | tuple)):
        tensors = [
            v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in values
        ]
        if all(t.shape == tensors[0].shape for t in tensors):
            out = torch.stack(tensors)
            if (
                out.is_floating_point()
                and out.dtype == torch.float64
                and not isinstance(first, torch.Tensor)
            ):
                out = out.to(opts.float_dtype)
            return {name: out}
        padded, lengths = pad_collate(tensors)
        return {name: padded, name + LENGTHS_SUFFIX: lengths}
    if isinstance(first, bool | np.bool_):
        return {name: torch.tensor(values, dtype=torch.bool)}
    if isinstance(first, int | np.integer):
        if all(isinstance(v, int | np.integer) for v in values):
            return {name: torch.tensor(values, dtype=torch.int64)}
        return {name: torch.tensor([float(v) for v in values], dtype=opts.float_dtype)}
    if isinstance(first, float | np.floating):
        return {name: torch.tensor(values, dtype=opts.float_dtype)}
    if isinstance(first, _dt.datetime | _dt.date):
        arr = pa.array(values)
        return arrow_column_to_tensors(arr, name, opts)
    if isinstance(first, Mapping):
        nested = collate_samples(values, opts)
        return {name: nested}
    return {name: list(values)}


def collate_samples(samples: Sequence[Any], opts: ConvertOptions = ConvertOptions()) -> Batch:
    """Collate a list of samples (dicts, tuples, tensors, numbers) into tensors by column."""
    if len(samples) == 0:
        raise DataError("cannot collate an empty batch")
    first = samples[0]
    if isinstance(first, Mapping):
        out: dict[str, Any] = {}
        for key in first:
            out.update(_collate_values([s[key] for s in samples], str(key), opts))
        return out
    if isinstance(first, tuple):
        return tuple(
            _single(_collate_values([s[j] for s in samples], f"item {j}", opts))
            for j in range(len(first))
        )
    return _single(_collate_values(list(samples), "sample", opts))


def _single(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        return next(iter(d.values()))
    return tuple(d.values())  # (padded, lengths)
