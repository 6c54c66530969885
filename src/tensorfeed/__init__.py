"""tensorfeed: tensor batches for PyTorch training from SQL, data lakes, Kafka, files and memory.

``import tensorfeed as tfd``. Names are imported on first use, so importing the package opens no
connection, imports no optional driver and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AnnotationsDataset": "sources.files",
    "BalancedSampler": "weighted_samplers",
    "Collate": "collate_fn",
    "ConfigError": "errors",
    "ConnectionFailedError": "errors",
    "ConnectionLostError": "errors",
    "DataError": "errors",
    "DataLoader": "loader",
    "DatasetFolder": "sources.files",
    "EpochSampler": "sampling",
    "FashionMNIST": "sources.files",
    "HardExampleSampler": "weighted_samplers",
    "ImageFolder": "sources.files",
    "KafkaStream": "sources.kafka",
    "LakeDataset": "sources.lake",
    "LakeStream": "sources.lake",
    "LoaderStats": "loader",
    "MNIST": "sources.files",
    "MapDataset": "dataset",
    "MemoryDataset": "sources.memory",
    "MemoryStream": "sources.memory",
    "MissingDependencyError": "errors",
    "NoDeviceError": "errors",
    "NotFoundError": "errors",
    "SQLDataset": "sources.sql",
    "SQLStream": "sources.sql",
    "SourceChangedError": "errors",
    "StateError": "errors",
    "StatementTimeoutError": "errors",
    "StreamDataset": "dataset",
    "Subset": "splitting",
    "TensorfeedError": "errors",
    "TransientError": "errors",
    "WeightedSampler": "weighted_samplers",
    "World": "sampling",
    "balance_stream": "balanced_stream",
    "collate": "collate_fn",
    "loaders": "loader",
    "open": "registry",
    "pad_collate": "columns",
    "random_split": "splitting",
    "seed_everything": "sampling",
    "split": "splitting",
    "tune": "tuning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tensorfeed' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # pragma: no cover - static view of the lazy names
    from .balanced_stream import balance_stream
    from .collate_fn import Collate, collate
    from .columns import pad_collate
    from .dataset import MapDataset, StreamDataset
    from .errors import (
        ConfigError,
        ConnectionFailedError,
        ConnectionLostError,
        DataError,
        MissingDependencyError,
        NoDeviceError,
        NotFoundError,
        SourceChangedError,
        StateError,
        StatementTimeoutError,
        TensorfeedError,
        TransientError,
    )
    from .loader import DataLoader, LoaderStats, loaders
    from .registry import open
    from .sampling import EpochSampler, World, seed_everything
    from .sources.files import MNIST, AnnotationsDataset, DatasetFolder, FashionMNIST, ImageFolder
    from .sources.kafka import KafkaStream
    from .sources.lake import LakeDataset, LakeStream
    from .sources.memory import MemoryDataset, MemoryStream
    from .sources.sql import SQLDataset, SQLStream
    from .splitting import Subset, random_split, split
    from .tuning import tune
    from .weighted_samplers import BalancedSampler, HardExampleSampler, WeightedSampler
