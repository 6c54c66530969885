"""In-memory data as a source like any other: a dict of arrays/tensors, a DataFrame, an Arrow table.

The data is held as one Arrow table (numpy-backed buffers), so worker processes share it through
fork without copy-on-read growth: there are no per-row Python objects to touch refcounts on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .. import stream_splits
from ..columns import LENGTHS_SUFFIX, ColumnBatch, TensorBatch, make_spec
from ..dataset import MapDataset, StreamDataset, _digest, normalize_indices
from ..errors import ConfigError, TensorfeedError
from ..sampling import World


def to_arrow_table(data: Any) -> pa.Table:
    """A dict of numpy arrays / tensors / lists, a pandas DataFrame or an Arrow table -> Table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_dict") and hasattr(data, "columns") and hasattr(data, "iloc"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        cols: dict[str, pa.Array] = {}
        n = None
        for name, values in data.items():
            arr = _to_arrow_array(str(name), values)
            if n is not None and len(arr) != n:
                raise ConfigError(
                    f"column {name!r} has {len(arr)} rows but the columns before it have {n}"
                )
            n = len(arr)
            cols[str(name)] = arr
        if not cols:
            raise ConfigError("MemoryDataset needs at least one column")
        return pa.table(cols)
    raise ConfigError(
        f"MemoryDataset takes a dict of arrays, a pandas DataFrame or an Arrow table, "
        f"not {type(data).__name__}"
    )


def _to_arrow_array(name: str, values: Any) -> pa.Array:
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bfloat16:  # neither Arrow nor numpy has it: widen, exactly
            values = values.float()
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.ndim > 1:
        # a [n, ...] array becomes a fixed-size list column (one row = one sub-array)
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        width = int(np.prod(values.shape[1:]))
        return pa.FixedSizeListArray.from_arrays(flat, width)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError(f"column {name!r} cannot be stored as a column: {exc}") from exc


class MemoryDataset(MapDataset):
    """A map-style dataset over data already in memory.

    ``MemoryDataset({"x": np_array, "label": np_array}, features=["x"], target="label")``.
    Samples are dicts, batches dicts of tensors; with ``features`` and ``target`` they are
    ``(x, y)`` / ``(X, Y)``, with only ``features`` the tensor ``x`` / ``X``, with only ``target``
    ``y`` / ``Y``.
    """

    def __init__(
        self,
        data: Any,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        name: str = "memory",
    ) -> None:
        self.table = to_arrow_table(data).combine_chunks()
        self.name = name
        self.spec = make_spec(features, target, transform, target_transform)
        self.spec.check_columns(self.table.column_names, self.describe())
        self._tensor_view()  # built before workers fork, so they share it instead of copying

    def _num_rows(self) -> int:
        return self.table.num_rows

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_tensor_cache", None)  # rebuilt lazily in the receiving process
        return state

    def _tensor_view(self) -> _TensorView | None:
        """The data as whole tensors when every needed column becomes a plain tensor and there
        are no per-sample transforms; None means: use the Arrow path."""
        if "_tensor_cache" not in self.__dict__:
            self.__dict__["_tensor_cache"] = _TensorView.build(self)
        return self.__dict__["_tensor_cache"]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        view = self._tensor_view()
        if view is None:
            return super().__getitems__(indices)
        return TensorBatch(view.gather(normalize_indices(indices, len(self))))

    def _fetch(self, indices: np.ndarray) -> pa.Table:
        return self.table.take(pa.array(indices))

    def describe(self) -> str:
        return f"{self.name} table ({', '.join(self.table.column_names[:8])})"

    def column(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def fingerprint(self) -> str:
        """Schema, row count and a digest of the data itself (a cache of changed data with the
        same shape must not be reused)."""
        if "_content_digest" not in self.__dict__:
            h = hashlib.blake2b(digest_size=16)
            for column in self.table.columns:
                for chunk in column.chunks:
                    for buf in chunk.buffers():
                        if buf is not None:
                            h.update(memoryview(buf))
            self.__dict__["_content_digest"] = h.hexdigest()
        return _digest(
            [
                "MemoryDataset",
                self.name,
                self.table.schema.to_string(),
                self.table.num_rows,
                self.__dict__["_content_digest"],
            ]
        )


@dataclass(frozen=True)
class _TensorView:
    """Row-major blocks of same-dtype scalar columns (one gather takes a whole batch of them: a
    row of 12 float32 is one cache line, 12 column gathers are 12 scattered passes), plus any
    other tensor column; or pre-stacked ``(X, Y)``, ``X`` or ``Y`` (``packed``).

    Blocks are gathered with numpy (``np.take`` and a ``.T.copy()``): measured on [1024, 12]
    float32, torch's ``index_select`` + ``.t().contiguous()`` costs 131 us, numpy's 68 us (torch's
    transpose copy of a small matrix alone is ~68 us). The result is still one tensor storage,
    shared by the column tensors of the batch."""

    order: tuple[str, ...]
    blocks: tuple[tuple[tuple[str, ...], np.ndarray], ...] = ()
    others: tuple[tuple[str, torch.Tensor], ...] = ()
    packed: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None

    @classmethod
    def build(cls, ds: MemoryDataset) -> _TensorView | None:
        spec = ds.spec
        if spec.transform is not None or spec.target_transform is not None:
            return None
        if spec.target is not None and _ragged(ds.table.schema.field(spec.target).type):
            return None  # a variable-length target is padded per batch, on the Arrow path
        try:
            out: Any = ColumnBatch(ds.table, spec, ds._locator(np.arange(0))).to_batch()
        except TensorfeedError:  # a NULL or a non-numeric column: the Arrow path names it
            return None
        if spec.supervised:
            parts = out if isinstance(out, tuple) else (out,)
            if not all(isinstance(t, torch.Tensor) for t in parts):
                return None  # a string target stays a list
            return cls(order=(), packed=out)
        if not all(isinstance(t, torch.Tensor) for t in out.values()):
            return None  # strings/bytes columns stay lists
        if any(k.endswith(LENGTHS_SUFFIX) for k in out):
            return None  # ragged list columns: padding widths are per batch
        by_dtype: dict[torch.dtype, list[str]] = {}
        others = []
        for name, t in out.items():
            if t.dim() == 1:
                by_dtype.setdefault(t.dtype, []).append(name)
            else:
                others.append((name, t))
        blocks = tuple(
            (tuple(names), np.ascontiguousarray(torch.stack([out[n] for n in names], 1).numpy()))
            for names in by_dtype.values()
        )
        return cls(order=tuple(out), blocks=blocks, others=tuple(others))

    def gather(
        self, idx: np.ndarray
    ) -> dict[str, torch.Tensor] | tuple[torch.Tensor, ...] | torch.Tensor:
        if self.packed is not None:
            t = torch.from_numpy(idx)
            if isinstance(self.packed, torch.Tensor):
                return self.packed.index_select(0, t)
            return (self.packed[0].index_select(0, t), self.packed[1].index_select(0, t))
        got: dict[str, torch.Tensor] = {}
        for names, block in self.blocks:
            # one gather, then one transpose copy: the columns are views of a single storage
            got.update(zip(names, torch.from_numpy(np.take(block, idx, 0).T.copy()).unbind(0)))
        if self.others:
            t = torch.from_numpy(idx)
            for name, col in self.others:
                got[name] = col.index_select(0, t)
        return {name: got[name] for name in self.order}


def _ragged(t: pa.DataType) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t))


class MemoryStream(StreamDataset):
    """The same data as an iterable dataset (rows split across workers and ranks in blocks)."""

    def __init__(
        self,
        data: Any,
        features: Sequence[str] | str | None = None,
        target: str | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        chunk_rows: int = 8192,
        name: str = "memory",
    ) -> None:
        self.table = to_arrow_table(data).combine_chunks()
        self.spec = make_spec(features, target, None, None)
        self.spec.check_columns(self.table.column_names, name)
        self.shuffle_buffer, self.seed, self.chunk_rows, self.name = (
            shuffle_buffer,
            seed,
            chunk_rows,
            name,
        )

    def describe(self) -> str:
        return f"{self.name} stream ({', '.join(self.table.column_names[:8])})"

    # -- fixed splits: chunks of chunk_rows, chunk i read by shard i % num_shards --------------
    def _splits_of(self, epoch: int, shard: int, num_shards: int) -> list[int]:
        return list(range(shard, self._num_chunks(), num_shards))

    def _num_chunks(self) -> int:
        return -(-self.table.num_rows // self.chunk_rows)

    def _split_rows(self, epoch: int, split: int) -> int:
        return min(self.chunk_rows, self.table.num_rows - split * self.chunk_rows)

    def _read_splits(self, epoch: int, splits: list[int]) -> Iterator[pa.Table]:
        for chunk in splits:
            yield self.table.slice(chunk * self.chunk_rows, self._split_rows(epoch, chunk))

    def _advance(self, position: Any, table: pa.Table) -> Any:
        return stream_splits.advance(position, table.num_rows)

    def _regroup(self, epoch: int, positions: list[Any], num_shards: int) -> list[Any]:
        return self._regroup_splits(epoch, positions, num_shards)

    def _iter_tables(self, world: World, epoch: int, position: Any) -> Iterator[pa.Table]:
        skip, done = stream_splits.parse(position, f"a checkpoint position of {self.describe()}")
        mine = self._splits_of(epoch, world.shard, world.num_shards)
        rows = functools.partial(self._split_rows, epoch)
        for chunk, first in stream_splits.starts(mine, done, rows):
            start = chunk * self.chunk_rows + first
            t = self.table.slice(start, rows(chunk) - first)
            if skip >= t.num_rows:
                skip -= t.num_rows
                continue
            yield t.slice(skip)
            skip = 0
