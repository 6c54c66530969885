"""tfd.DataLoader on in-memory sources: batches, epochs, seeds, resume, stats, devices."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import tensorfeed as tfd

N = 103


def _data():
    rng = np.random.default_rng(0)
    return {"id": np.arange(N), "x": rng.random(N), "y": np.arange(N) % 3}


def ids_of(loader):
    return [b["id"].tolist() for b in loader]


def test_map_dataset_behaves_like_a_list():
    ds = tfd.MemoryDataset(_data())
    assert len(ds) == N and ds[-1]["id"] == N - 1 and ds[0]["id"] == 0
    with pytest.raises(IndexError, match=str(N)):
        ds[N]
    with pytest.raises(IndexError):
        ds[-N - 1]
    assert [s["id"] for s in ds.__getitems__([5, -1, 0])] == [5, N - 1, 0]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_once_per_epoch(workers):
    loader = tfd.DataLoader(
        tfd.MemoryDataset(_data()), batch_size=10, shuffle=True, num_workers=workers
    )
    for _ in range(2):
        seen = sum(ids_of(loader), [])
        assert sorted(seen) == list(range(N))


def test_same_batches_whatever_num_workers_and_new_order_each_epoch():
    ds = tfd.MemoryDataset(_data())
    runs = {
        w: ids_of(tfd.DataLoader(ds, batch_size=8, shuffle=True, seed=7, num_workers=w))
        for w in (0, 1, 2)
    }
    assert runs[0] == runs[1] == runs[2]
    loader = tfd.DataLoader(ds, batch_size=8, shuffle=True, seed=7)
    e0, e1 = ids_of(loader), ids_of(loader)
    assert e0 == runs[0] and e0 != e1
    loader.set_epoch(0)
    assert ids_of(loader) == e0
    assert ids_of(tfd.DataLoader(ds, batch_size=8, shuffle=True, seed=8)) != e0


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_map_resume_equals_uninterrupted(workers, shuffle):
    ds = tfd.MemoryDataset(_data())
    make = lambda: tfd.DataLoader(ds, batch_size=8, shuffle=shuffle, seed=3, num_workers=workers)
    full = make()
    ids_of(full)  # epoch 0
    uninterrupted = ids_of(full)  # epoch 1: resume inside a later epoch
    loader = make()
    ids_of(loader)
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(4)]
    state = json.loads(json.dumps(loader.state_dict()))  # JSON-serialisable
    resumed = make()
    resumed.load_state_dict(state)
    tail = ids_of(resumed)
    assert head + tail == uninterrupted


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_exactly_once_and_resume_with_shuffle_buffer(workers):
    st = tfd.MemoryStream(_data(), chunk_rows=9, shuffle_buffer=20, seed=1)
    make = lambda: tfd.DataLoader(st, batch_size=8, num_workers=workers)
    full = ids_of(make())
    assert sorted(sum(full, [])) == list(range(N))
    loader = make()
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(5)]
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert head + ids_of(resumed) == full


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_rows_through_plain_torch_loader(workers):
    st = tfd.MemoryStream(_data(), chunk_rows=7)
    loader = torch.utils.data.DataLoader(st, batch_size=5, num_workers=workers)
    seen = sum((b["id"].tolist() for b in loader), [])
    assert sorted(seen) == list(range(N))


def test_state_dict_from_another_dataset_is_refused():
    a = tfd.DataLoader(tfd.MemoryDataset(_data()), batch_size=4, shuffle=True)
    next(iter(a))
    other = tfd.MemoryDataset({"id": np.arange(10)})
    b = tfd.DataLoader(other, batch_size=4, shuffle=True)
    with pytest.raises(tfd.StateError, match="dataset"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(tfd.StateError):
        b.load_state_dict({"foo": 1})


def test_supervised_batches_and_stats():
    ds = tfd.MemoryDataset(_data(), features=["x", "id"], target="y")
    x, y = ds[4]
    assert x.dtype == torch.float32 and x.shape == (2,) and y == 1
    loader = tfd.DataLoader(ds, batch_size=16)
    batches = list(loader)
    assert batches[0][0].shape == (16, 2) and batches[0][1].dtype == torch.int64
    st = loader.stats
    assert st.batches == len(batches) and st.rows == N
    assert 0.0 <= st.wait_fraction <= 1.0 and st.rows_per_s > 0


def test_memory_batches_match_samples_for_mixed_and_2d_columns():
    rng = np.random.default_rng(1)
    data = {
        "id": np.arange(N),
        "emb": rng.random((N, 4)).astype(np.float32),
        "flag": np.arange(N) % 2 == 0,
        "w": rng.random(N),
    }
    ds = tfd.MemoryDataset(data)
    batch = next(iter(tfd.DataLoader(ds, batch_size=7, shuffle=True, seed=2)))
    assert set(batch) == {"id", "emb", "flag", "w"}  # a [n, 4] array is not padded
    assert batch["emb"].shape == (7, 4) and batch["flag"].dtype == torch.bool
    for j, i in enumerate(batch["id"].tolist()):
        sample = ds[i]
        assert np.allclose(batch["emb"][j].numpy(), sample["emb"])
        assert (
            batch["flag"][j].item() == sample["flag"]
            and abs(batch["w"][j].item() - sample["w"]) < 1e-6
        )


def test_in_memory_fast_path_honours_float_dtype_and_every_column_dtype():
    data = {
        "id": np.arange(N),
        "w": np.linspace(0, 1, N),  # float64 in, float32 out by default
        "h": torch.arange(N, dtype=torch.float16),
        "b": torch.arange(N, dtype=torch.bfloat16),  # widened to float32 on the way in (exact)
    }
    ds = tfd.MemoryDataset(data)
    batch = next(iter(tfd.DataLoader(ds, batch_size=9, shuffle=True, seed=1)))
    assert {k: v.dtype for k, v in batch.items()} == {
        "id": torch.int64,
        "w": torch.float32,
        "h": torch.float32,
        "b": torch.float32,
    }
    wide = next(
        iter(tfd.DataLoader(ds, batch_size=9, shuffle=True, seed=1, float_dtype=torch.float64))
    )
    assert wide["w"].dtype == torch.float64 and wide["id"].tolist() == batch["id"].tolist()
    assert np.allclose(wide["w"].numpy(), np.linspace(0, 1, N)[batch["id"].numpy()])
    assert wide["b"].tolist() == batch["id"].double().tolist()


def test_batches_show_up_under_the_torch_profiler():
    loader = tfd.DataLoader(tfd.MemoryDataset(_data()), batch_size=10)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        n = sum(1 for _ in loader)
    spans = [e.key for e in prof.key_averages() if e.key.startswith("enumerate(DataLoader)")]
    assert n == 11 and spans, "the per-batch DataLoader span is missing under a profiler"


def test_missing_feature_column_is_named():
    with pytest.raises(tfd.NotFoundError, match="'nope'"):
        tfd.MemoryDataset(_data(), features=["x", "nope"], target="y")


def test_transforms_per_sample_and_per_batch():
    ds = tfd.MemoryDataset(
        _data(),
        features=["x"],
        target="y",
        transform=lambda x: x * 0,
        target_transform=lambda y: y + 100,
    )
    x, y = next(iter(tfd.DataLoader(ds, batch_size=4)))
    assert x.abs().sum() == 0 and y.tolist() == [100, 101, 102, 100]
    loader = tfd.DataLoader(
        tfd.MemoryDataset(_data()), batch_size=4, batch_transform=lambda b: {"double": b["id"] * 2}
    )
    assert next(iter(loader))["double"].tolist() == [0, 2, 4, 6]


def test_loaders_shuffle_only_where_asked():
    parts = {"train": tfd.MemoryDataset(_data()), "val": tfd.MemoryDataset(_data())}
    ls = tfd.loaders(parts, batch_size=N, seed=0)
    assert set(ls) == {"train", "val"}
    assert next(iter(ls["val"]))["id"].tolist() == list(range(N))
    assert next(iter(ls["train"]))["id"].tolist() != list(range(N))
    with pytest.raises(tfd.ConfigError, match="test"):
        tfd.loaders(parts, shuffle="test")


def test_device_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(tfd.NoDeviceError, match="cuda"):
        tfd.DataLoader(tfd.MemoryDataset(_data()), device="cuda", prefetch_to_device=2)


def test_pin_memory_and_cpu_device_prefetch_work_without_gpu():
    loader = tfd.DataLoader(
        tfd.MemoryDataset(_data()),
        batch_size=10,
        pin_memory=True,
        device="cpu",
        prefetch_to_device=2,
    )
    assert sorted(sum(ids_of(loader), [])) == list(range(N))


def test_datasets_pickle_from_configuration():
    ds = tfd.MemoryDataset(_data(), features=["x"], target="y")
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5][0], ds[5][0])


def test_spawned_workers():
    loader = tfd.DataLoader(
        tfd.MemoryDataset(_data()), batch_size=25, num_workers=2, multiprocessing_context="spawn"
    )
    assert sorted(sum(ids_of(loader), [])) == list(range(N))


def test_public_api_is_exactly_all():
    assert tfd.__all__ == sorted(tfd.__all__)
    for name in tfd.__all__:
        assert getattr(tfd, name) is not None, name
    with pytest.raises(AttributeError):
        tfd.not_a_name  # noqa: B018
    for cls in (
        tfd.ConfigError,
        tfd.NotFoundError,
        tfd.DataError,
        tfd.StateError,
        tfd.MissingDependencyError,
        tfd.SourceChangedError,
        tfd.NoDeviceError,
    ):
        assert issubclass(cls, tfd.TensorfeedError)


def test_timeout_without_workers_is_a_config_error_for_map_style_not_an_assertion():
    # torch and torchdata assert timeout == 0 without workers; a stream applies it in-process
    with pytest.raises(tfd.ConfigError, match=r"timeout=3 needs num_workers >= 1"):
        tfd.DataLoader(tfd.MemoryDataset(_data()), batch_size=4, timeout=3)
    stream = tfd.MemoryStream(_data(), chunk_rows=10)
    assert len(list(tfd.DataLoader(stream, batch_size=10, timeout=3))) == 11
