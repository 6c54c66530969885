"""tfd.tune and num_workers="auto" (small, bounded measurements; no timing assertions)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import tensorfeed as tfd
from tensorfeed import tuning

from .conftest import make_data


@pytest.fixture
def small():
    return tfd.MemoryDataset(make_data(3000))


def test_tune_measures_prints_recommends_and_plots(small, tmp_path, capsys):
    png = tmp_path / "tune.png"
    result = tfd.tune(small, 64, candidates=[0, 1], max_batches=5, max_seconds=0.5, plot=png)
    out = capsys.readouterr().out
    assert "workers" in out and "rows/s" in out and "recommended" in out
    assert [r.num_workers for r in result.table] == [0, 1]
    assert all(r.ok and r.rows_per_s > 0 and r.batches >= 1 for r in result.table)
    assert int(result) == result.num_workers in (0, 1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(result.as_dict()))["num_workers"] == result.num_workers


def test_default_search_starts_at_half_the_cores(small, monkeypatch):
    monkeypatch.setattr(tuning, "_cpu_count", lambda: 4)
    calls = []

    def fake_measure(dataset, batch_size, w, *a, **k):  # throughput grows up to 3 workers
        calls.append(w)
        return tuning.TuneRow(w, 100.0 * min(w + 1, 4), 5, 0.01)

    monkeypatch.setattr(tuning, "measure", fake_measure)
    result = tfd.tune(small, 32, verbose=False)
    assert calls == [0, 2, 3, 4]  # baseline, cores // 2, then up while > 5% faster
    assert result.num_workers == 3  # fewest workers within 5% of the best


def test_tune_backs_off_on_errors_and_memory_pressure(small, monkeypatch):
    monkeypatch.setattr(tuning, "_cpu_count", lambda: 8)

    def failing(dataset, batch_size, w, *a, **k):
        if w >= 6:
            raise OSError("too many open connections")
        return tuning.TuneRow(w, 100.0 * (w + 1), 5, 0.01)

    monkeypatch.setattr(tuning, "measure", failing)
    result = tfd.tune(small, 32, verbose=False)
    assert result.num_workers == 4
    assert any(r.status.startswith("error: OSError") for r in result.table)

    monkeypatch.setattr(tuning, "_memory_low", lambda: True)
    result = tfd.tune(small, 32, candidates=[0, 2, 4], verbose=False)
    assert result.num_workers == 0 and result.table[1].status == "memory pressure"


def test_auto_num_workers_is_cached_per_fingerprint_in_memory_and_on_disk(
    small, monkeypatch, tmp_path
):
    calls = []
    real = tuning.tune

    def counting(*a, **k):
        calls.append(a[1])
        return real(*a, **{**k, "candidates": [0, 1], "max_batches": 3})

    monkeypatch.setattr(tuning, "tune", counting)
    monkeypatch.setattr(tuning, "_AUTO_CACHE", {})
    loader = tfd.DataLoader(small, batch_size=50, num_workers="auto")
    assert loader.num_workers in (0, 1) and calls == [50]
    tfd.DataLoader(small, batch_size=50, num_workers="auto")
    assert calls == [50]  # in-process cache
    saved = json.loads((tmp_path / "tfd-cache" / "num_workers.json").read_text())
    assert list(saved.values()) == [loader.num_workers]
    monkeypatch.setattr(tuning, "_AUTO_CACHE", {})
    assert tuning.auto_num_workers(small, 50) == loader.num_workers and calls == [50]  # disk
    tuning.auto_num_workers(tfd.MemoryDataset(make_data(3001)), 50)
    assert calls == [50, 50]  # another dataset, another measurement


def test_plot_without_matplotlib_names_the_extra(small, monkeypatch, tmp_path):
    result = tuning.TuneResult(0, (tuning.TuneRow(0, 10.0, 1, 0.0),), 8)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(tfd.MissingDependencyError, match=r"tensorfeed\[plot\]"):
        result.plot(tmp_path / "x.png")


def test_bad_arguments(small):
    with pytest.raises(tfd.ConfigError):
        tfd.tune(small, 0)
    with pytest.raises(tfd.ConfigError, match="candidates"):
        tfd.tune(small, 8, candidates=[-1])
    with pytest.raises(tfd.ConfigError):
        tfd.DataLoader(small, batch_size=8, num_workers="many")


def test_memory_reading_works():
    frac = tuning.available_memory_fraction()
    assert frac is None or 0 < frac <= 1
    assert np.isfinite(frac or 0.5)
