"""Dicts of loaders, padding, transforms, stats, pinned memory, devices, resume and bad state."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfeed as tfd

from .conftest import ids, make_data, roundtrip


def test_loaders_shuffle_only_where_asked():
    ds = tfd.MemoryDataset(make_data(60))
    parts = tfd.split(ds, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    dls = tfd.loaders(parts, batch_size=8, num_workers=0, seed=1)
    assert list(dls) == ["train", "val", "test"]
    for name in ("val", "test"):
        got = [i for b in ids(dls[name]) for i in b]
        assert got == parts[name].column("id").tolist()  # in order
    train = [i for b in ids(dls["train"]) for i in b]
    assert sorted(train) == sorted(parts["train"].column("id").tolist())
    assert train != parts["train"].column("id").tolist()
    both = tfd.loaders(parts, batch_size=8, shuffle=("train", "val"))
    assert [i for b in ids(both["val"]) for i in b] != parts["val"].column("id").tolist()
    with pytest.raises(tfd.ConfigError, match="valid"):
        tfd.loaders(parts, batch_size=8, shuffle="valid")


seqs = st.lists(
    st.lists(st.integers(-1000, 1000), min_size=0, max_size=12), min_size=1, max_size=10
)


@settings(max_examples=60, deadline=None, database=None)
@given(seqs=seqs, pad=st.integers(-5, 5), max_length=st.none() | st.integers(0, 15))
def test_pad_collate_round_trips(seqs, pad, max_length):
    padded, lengths = tfd.pad_collate(seqs, pad_value=pad, max_length=max_length)
    cut = [s[:max_length] if max_length is not None else s for s in seqs]
    assert lengths.tolist() == [len(s) for s in cut]
    assert padded.shape == (len(seqs), max((len(s) for s in cut), default=0))
    for row, length, want in zip(padded.tolist(), lengths.tolist(), cut):
        assert row[:length] == want
        assert all(v == pad for v in row[length:])


def test_list_columns_are_padded_with_lengths_in_loader_batches():
    tokens = [[1, 2, 3], [4], [], [5, 6]]
    ds = tfd.MemoryDataset({"tokens": tokens, "id": np.arange(4)})
    batch = next(iter(tfd.DataLoader(ds, batch_size=4)))
    assert batch["tokens"].tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0], [5, 6, 0]]
    assert batch["tokens_lengths"].tolist() == [3, 1, 0, 2]


def _double(x):
    return x * 2


def _plus_ten(y):
    return y + 10


def _scale_batch(batch):
    x, y = batch
    return x * 100, y


@pytest.mark.parametrize("workers", [0, 2])
def test_transforms_per_sample_and_per_batch(workers):
    data = {"a": np.arange(6.0), "b": np.arange(6.0) * 2, "y": np.arange(6)}
    ds = tfd.MemoryDataset(
        data, features=["a", "b"], target="y", transform=_double, target_transform=_plus_ten
    )
    x, y = ds[1]
    assert x.tolist() == [2.0, 4.0] and y == 11
    loader = tfd.DataLoader(ds, batch_size=3, num_workers=workers, batch_transform=_scale_batch)
    xs, ys = zip(*loader)
    assert torch.cat(xs)[:, 0].tolist() == [a * 200 for a in range(6)]
    assert torch.cat(ys).tolist() == [v + 10 for v in range(6)]


def test_stats_count_batches_rows_and_waiting():
    ds = tfd.MemoryDataset(make_data(50))
    loader = tfd.DataLoader(ds, batch_size=8)
    for _ in loader:
        pass
    s = loader.stats
    assert (s.batches, s.rows) == (7, 50)
    assert s.wall_s > 0 and 0 <= s.wait_s <= s.wall_s and 0 <= s.wait_fraction <= 1
    assert s.rows_per_s == pytest.approx(50 / s.wall_s)
    d = s.as_dict()
    assert {"batches", "rows", "rows_per_s", "wait_s", "wall_s", "wait_fraction"} <= set(d)


def test_pin_memory_works_without_a_gpu():
    ds = tfd.MemoryDataset(make_data(20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch may warn that pinning needs an accelerator
        batches = ids(tfd.DataLoader(ds, batch_size=8, pin_memory=True))
    assert sum(len(b) for b in batches) == 20


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without GPU")
def test_cuda_device_without_gpu_is_a_clear_error():
    ds = tfd.MemoryDataset(make_data(4))
    with pytest.raises(tfd.NoDeviceError, match="cuda"):
        tfd.DataLoader(ds, batch_size=2, device="cuda", prefetch_to_device=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_map_and_stream(workers):
    data = make_data(90)
    for make in (
        lambda: tfd.DataLoader(
            tfd.MemoryDataset(data), batch_size=8, shuffle=True, seed=2, num_workers=workers
        ),
        lambda: tfd.DataLoader(
            tfd.MemoryStream(data, shuffle_buffer=16, seed=2, chunk_rows=8),
            batch_size=8,
            num_workers=workers,
        ),
    ):
        full = ids(make())
        first = make()
        it = iter(first)
        head = [next(it)["id"].tolist() for _ in range(5)]
        state = roundtrip(first.state_dict())
        del it
        second = make()
        second.load_state_dict(state)
        assert head + ids(second) == full


def test_state_dict_from_a_different_dataset_is_refused(tmp_path):
    a = tfd.DataLoader(tfd.MemoryDataset(make_data(40)), batch_size=8, shuffle=True)
    it = iter(a)
    next(it)
    state = a.state_dict()
    torch.save(state, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # loadable without pickle
    other = tfd.DataLoader(tfd.MemoryDataset(make_data(41)), batch_size=8, shuffle=True)
    with pytest.raises(tfd.StateError, match="dataset"):
        other.load_state_dict(state)
    parts = tfd.split(tfd.MemoryDataset(make_data(40)), {"a": 0.5, "b": 0.5})
    dl_a = tfd.DataLoader(parts["a"], batch_size=4)
    dl_b = tfd.DataLoader(parts["b"], batch_size=4)
    with pytest.raises(tfd.StateError):
        dl_b.load_state_dict(dl_a.state_dict())  # two splits of one dataset are not the same
    with pytest.raises(tfd.StateError):
        tfd.DataLoader(
            tfd.MemoryDataset(make_data(40)),
            batch_size=8,
            sampler=tfd.WeightedSampler(np.ones(40)),
        ).load_state_dict({"not": "ours"})
