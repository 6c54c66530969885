"""The collate functions: ``tfd.collate`` (for a plain torch DataLoader), ``Collate`` (picklable,
with ``float_dtype`` and a ``batch_transform``: what ``tfd.DataLoader`` uses) and
``batch_size_of``. A ColumnBatch is converted column by column (``columns.py``); any other
list of samples is collated by column with the same dtype rules.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .columns import ColumnBatch, ConvertOptions, TensorBatch, _Samples, collate_samples


@dataclass(frozen=True)
class Collate:
    """A picklable collate function: ColumnBatch -> column tensors, anything else -> generic.

    ``batch_transform`` runs on the finished batch (whole column tensors), inside the worker.
    """

    float_dtype: torch.dtype = torch.float32
    batch_transform: Callable[[Any], Any] | None = field(default=None)

    def __call__(self, batch: Any) -> Any:
        opts = ConvertOptions(self.float_dtype)
        if isinstance(batch, ColumnBatch | TensorBatch):
            out = batch.to_batch(opts)
        elif isinstance(batch, Sequence) and batch and isinstance(batch[0], ColumnBatch):
            out = (
                batch[0].to_batch(opts)
                if len(batch) == 1
                else _concat_batches([b.to_batch(opts) for b in batch])
            )
        else:
            out = collate_samples(batch, opts)
        if self.batch_transform is not None:
            out = self.batch_transform(out)
        return out


def _concat_batches(batches: list[Any]) -> Any:
    first = batches[0]
    if isinstance(first, dict):
        return {
            k: torch.cat([b[k] for b in batches])
            if isinstance(first[k], torch.Tensor)
            else functools.reduce(operator.iadd, (b[k] for b in batches), [])
            for k in first
        }
    if isinstance(first, tuple):
        return tuple(torch.cat([b[j] for b in batches]) for j in range(len(first)))
    return torch.cat(batches)


_DEFAULT_COLLATE = Collate()


def collate(batch: Any) -> Any:
    """The fast collate function, usable with a plain ``torch.utils.data.DataLoader``.

    A batch fetched by a tensorfeed dataset (``__getitems__``) is converted column by column; any
    other list of samples is collated by column with tensorfeed's dtype rules and padding.
    """
    return _DEFAULT_COLLATE(batch)


def batch_size_of(batch: Any) -> int:
    """Rows in a collated batch (first dimension of its first tensor)."""
    if isinstance(batch, _Samples):  # a batch of samples nothing collated
        return len(batch)
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = batch_size_of(v)
            if n:
                return n
        return 0
    if isinstance(batch, list | tuple):
        for v in batch:
            if isinstance(v, torch.Tensor | Mapping | tuple):
                return batch_size_of(v)
        return len(batch)
    return 0
