"""Small in-memory data for the essentials tests (samplers, splits, reproducibility, tuning)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import tensorfeed as tfd


def make_data(n: int = 120, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "id": np.arange(n, dtype=np.int64) * 7 + 11,
        "x": rng.random(n).astype(np.float32),
        "y": (rng.random(n) < 0.25).astype(np.int64),
        "user": rng.integers(0, max(1, n // 6), n),
    }


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture
def ds(data: dict[str, np.ndarray]) -> tfd.MemoryDataset:
    return tfd.MemoryDataset(data)


def ids(loader: Any, column: str = "id") -> list[list[int]]:
    """The id column of every batch of one epoch."""
    return [b[column].tolist() for b in loader]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict through JSON, as a checkpoint file would carry it."""
    return json.loads(json.dumps(state))


@pytest.fixture(autouse=True)
def _private_tune_cache(tmp_path, monkeypatch):
    """num_workers="auto" writes its cache under TENSORFEED_CACHE: keep it inside the test."""
    monkeypatch.setenv("TENSORFEED_CACHE", str(tmp_path / "tfd-cache"))
