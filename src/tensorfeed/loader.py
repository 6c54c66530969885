"""``tfd.DataLoader`` and ``tfd.loaders``: torchdata's StatefulDataLoader with column batches,
seeds, epochs, checkpoints and stats (all in ``loader_base.py``, NOTE [ Worker lifecycle ]), plus
``num_workers="auto"``, the worker count ``tfd.tune`` recommends for the dataset (``tuning.py``).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset

from .dataset import MapDataset, StreamDataset
from .errors import ConfigError
from .loader_base import BaseDataLoader
from .loader_stats import LoaderStats
from .tuning import auto_num_workers

__all__ = ["DataLoader", "LoaderStats", "loaders"]


class DataLoader(BaseDataLoader):
    """A ``torch.utils.data.DataLoader`` (every argument of it is accepted) that yields column
    tensors, is reproducible for a ``seed`` whatever ``num_workers``, resumes mid-epoch via
    ``state_dict()``/``load_state_dict()``, and keeps :attr:`stats`.

    Extra arguments: ``seed`` (default 0), ``num_workers="auto"``, ``batch_transform`` (a function
    on whole collated batches, run in the worker), ``float_dtype``, ``ddp`` ("pad" or "drop": how
    ranks are evened out), ``device``/``prefetch_to_device`` (copy the next N batches to an
    accelerator on a side stream), ``max_worker_restarts``, ``on_change`` ("raise" or
    "continue": a resume over changed data, NOTE [ Continuing over changed data ]).
    """

    @staticmethod
    def _resolve_workers(num_workers: int | str, dataset: Any, batch_size: int | None) -> int:
        if num_workers == "auto":
            return auto_num_workers(dataset, batch_size or 1)
        return BaseDataLoader._resolve_workers(num_workers, dataset, batch_size)


def loaders(
    datasets: dict[str, Any],
    batch_size: int = 1,
    shuffle: str | bool | tuple[str, ...] | list[str] = "train",
    **loader_kwargs: Any,
) -> dict[str, DataLoader]:
    """One :class:`DataLoader` per named dataset; only the names in ``shuffle`` are shuffled
    (``"train"`` by default; ``True``/``False`` for all or none)."""
    if isinstance(shuffle, bool):
        wanted = set(datasets) if shuffle else set()
    elif isinstance(shuffle, str):
        wanted = {shuffle}
    else:
        wanted = set(shuffle)
    unknown = wanted - set(datasets)
    if unknown:
        raise ConfigError(
            f"shuffle names {sorted(unknown)}, which are not among {sorted(datasets)}"
        )
    out = {}
    for name, ds in datasets.items():
        do_shuffle: bool | None = name in wanted
        if isinstance(ds, StreamDataset | IterableDataset) and not isinstance(ds, MapDataset):
            do_shuffle = None  # streams shuffle through their own buffer
        out[name] = DataLoader(ds, batch_size=batch_size, shuffle=do_shuffle, **loader_kwargs)
    return out
