"""Class-balanced sampling of iterable sources by per-class acceptance."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfeed as tfd
from tensorfeed.balanced_stream import balance_stream

from .conftest import roundtrip


def _labels_stream(counts: dict[int, int], seed: int = 0, **kw) -> tfd.MemoryStream:
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    labels = np.random.default_rng(seed).permutation(labels)
    return tfd.MemoryStream({"id": np.arange(len(labels)), "y": labels}, chunk_rows=256, **kw)


def _labels_out(stream, workers=0) -> np.ndarray:
    loader = tfd.DataLoader(stream, batch_size=128, num_workers=workers)
    return np.concatenate([b["y"].numpy() for b in loader])


@pytest.mark.parametrize(
    ("counts", "ratios"),
    [
        ({0: 9000, 1: 1000}, None),
        ({0: 6000, 1: 3000, 2: 1000}, None),
        ({0: 8000, 1: 2000}, {0: 1, 1: 3}),
    ],
)
def test_output_converges_to_the_requested_ratio(counts, ratios):
    out = _labels_out(balance_stream(_labels_stream(counts), "y", ratios=ratios, seed=1))
    want = ratios or {c: 1 for c in counts}
    total = sum(want.values())
    for c, r in want.items():
        assert np.mean(out == c) == pytest.approx(r / total, abs=0.03)
    # the class rarest relative to its target is kept whole (running estimate: nearly)
    scarce = min(want, key=lambda c: counts[c] / want[c])
    assert np.sum(out == scarce) >= 0.9 * counts[scarce]


def test_known_frequencies_give_the_documented_acceptance():
    bs = balance_stream(_labels_stream({0: 10, 1: 10}), "y", frequencies={0: 0.75, 1: 0.25})
    assert bs.acceptance({}) == {0: pytest.approx(1 / 3), 1: 1.0}
    weighted = balance_stream(
        _labels_stream({0: 10, 1: 10}), "y", ratios={0: 2, 1: 1}, frequencies={0: 0.5, 1: 0.5}
    )
    assert weighted.acceptance({}) == {0: 1.0, 1: 0.5}


def test_workers_see_every_kept_row_once_and_runs_repeat():
    def make():
        return balance_stream(_labels_stream({0: 3000, 1: 500}), "y", seed=5)

    loader_ids = [b["id"].tolist() for b in tfd.DataLoader(make(), batch_size=100, num_workers=2)]
    again = [b["id"].tolist() for b in tfd.DataLoader(make(), batch_size=100, num_workers=2)]
    flat = [i for b in loader_ids for i in b]
    assert loader_ids == again and len(flat) == len(set(flat))


@pytest.mark.parametrize("workers", [0, 2])
def test_balanced_stream_resumes_mid_epoch(workers):
    def make():
        inner = _labels_stream({0: 1500, 1: 300}, shuffle_buffer=200, seed=2)
        return tfd.DataLoader(
            balance_stream(inner, "y", seed=3), batch_size=50, num_workers=workers
        )

    full = [b["id"].tolist() for b in make()]
    first = make()
    it = iter(first)
    head = [next(it)["id"].tolist() for _ in range(3)]
    state = roundtrip(first.state_dict())
    del it
    second = make()
    second.load_state_dict(state)
    assert head + [b["id"].tolist() for b in second] == full


def test_bad_label_and_ratios():
    with pytest.raises(tfd.NotFoundError, match="'label'"):
        _labels_out(balance_stream(_labels_stream({0: 5, 1: 5}), "label"))
    with pytest.raises(tfd.ConfigError, match="ratios of class 1"):
        balance_stream(_labels_stream({0: 5, 1: 5}), "y", ratios={0: 1, 1: -1})
    with pytest.raises(tfd.ConfigError, match="stream"):
        balance_stream(tfd.MemoryDataset({"y": [0, 1]}), "y")
